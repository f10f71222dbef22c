"""One table of bad inputs: a row per public entry point and bad input, each asserting the error
type and that the message names the field (issue 13). Behaviour inside a user's ``jit`` (where
nothing can raise) is checked after the table."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ilijax
from ilijax.diagnostics import c2st, mmd, tarp
from ilijax.pipeline import ConfigError, load_config

TASK = ilijax.tasks.two_moons()
DATA = ilijax.simulate(jax.random.key(0), TASK.prior, TASK.simulator, 300, progress=False)
THETA, X = DATA.theta, DATA.x
TINY = dict(max_epochs=1, progress=False)
KEY = jax.random.key(1)


def maf():
    return ilijax.estimators.maf(hidden=4, transforms=1)


@pytest.fixture(scope="module")
def posts():
    npe, _ = ilijax.npe(KEY, THETA, X, prior=TASK.prior, estimator=maf(), **TINY)
    nle, _ = ilijax.nle(KEY, THETA, X, prior=TASK.prior, estimator=maf(), **TINY)
    return {"npe": npe, "nle": nle}


def x_with_nan():
    x = np.array(X[:5])
    x[1, 0] = np.nan
    x[3, 1] = np.inf
    return x


def theta_with_nan():
    t = np.array(THETA[:4])
    t[2, 1] = np.nan
    return t


def write(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def newer_file(tmp_path):
    spec = {"format": "ilijax.posterior", "version": 99, "ilijax_version": "99.0"}
    return write(tmp_path, "newer.npz",
                 __spec__=np.frombuffer(json.dumps(spec).encode(), np.uint8))


def yaml_file(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return str(path)


KEY_HINT = r"Expected key to be a JAX PRNG key; got .* Pass jax\.random\.key\(seed\)"

# (id, call(posts, tmp_path), error type, regex the message must match: it names the field)
ROWS = [
    # -- npe / nle / nre: keys, options, data
    ("npe int key", lambda p, t: ilijax.npe(0, THETA, X, prior=TASK.prior, **TINY),
     TypeError, KEY_HINT),
    ("npe float key", lambda p, t: ilijax.npe(np.zeros(2), THETA, X, prior=TASK.prior, **TINY),
     TypeError, r"key .*float64"),
    ("npe batch of keys", lambda p, t: ilijax.npe(jax.random.split(KEY, 2), THETA, X,
                                                   prior=TASK.prior, **TINY),
     TypeError, r"one JAX PRNG key \(shape \(\)\); got a batch"),
    ("npe nan learning_rate", lambda p, t: ilijax.npe(KEY, THETA, X, prior=TASK.prior,
                                                       learning_rate=float("nan"), **TINY),
     ValueError, r"learning_rate to be a finite float > 0; got nan"),
    ("npe negative learning_rate", lambda p, t: ilijax.npe(KEY, THETA, X, prior=TASK.prior,
                                                            learning_rate=-1e-3, **TINY),
     ValueError, r"learning_rate to be a finite float > 0; got -0\.001"),
    ("npe negative clip_norm", lambda p, t: ilijax.npe(KEY, THETA, X, prior=TASK.prior,
                                                        clip_norm=-1.0, **TINY),
     ValueError, "clip_norm"),
    ("npe float batch_size", lambda p, t: ilijax.npe(KEY, THETA, X, prior=TASK.prior,
                                                      batch_size=50.5, **TINY),
     ValueError, r"batch_size to be an int >= 1; got 50\.5"),
    ("npe theta columns", lambda p, t: ilijax.npe(KEY, THETA[:, :1], X, prior=TASK.prior,
                                                   **TINY),
     ValueError, r"theta with 2 columns"),
    ("npe ensemble 0", lambda p, t: ilijax.npe(KEY, THETA, X, prior=TASK.prior, ensemble=0,
                                                **TINY),
     ValueError, "ensemble"),
    ("npe weighting", lambda p, t: ilijax.npe(KEY, THETA, X, prior=TASK.prior, weighting="max",
                                               **TINY),
     ValueError, "weighting"),
    ("npe space", lambda p, t: ilijax.npe(KEY, THETA, X, prior=TASK.prior, space="x", **TINY),
     ValueError, r"Expected space in \('auto', 'unconstrained', 'theta'\); got 'x'"),
    ("nle int key", lambda p, t: ilijax.nle(3, THETA, X, prior=TASK.prior, **TINY),
     TypeError, KEY_HINT),
    ("nre int key", lambda p, t: ilijax.nre(3, THETA, X, prior=TASK.prior, **TINY),
     TypeError, KEY_HINT),
    ("nre variant", lambda p, t: ilijax.nre(KEY, THETA, X, prior=TASK.prior, variant="z",
                                             **TINY),
     ValueError, "variant"),
    # -- sequential
    ("sequential int key", lambda p, t: ilijax.sequential(0, TASK.simulator, TASK.prior, X[0]),
     TypeError, KEY_HINT),
    ("sequential rounds", lambda p, t: ilijax.sequential(KEY, TASK.simulator, TASK.prior, X[0],
                                                         rounds=0),
     ValueError, "rounds"),
    ("sequential resume", lambda p, t: ilijax.sequential(KEY, TASK.simulator, TASK.prior, X[0],
                                                         resume={"a": np.zeros(1)}),
     ValueError, "state_to_arrays"),
    # -- fit
    ("fit int key", lambda p, t: ilijax.fit(7, {"w": jnp.zeros((1, 2))},
                                            lambda q, b, k: 0.0, {"r": jnp.zeros((10, 1))}),
     TypeError, KEY_HINT),
    ("fit max_epochs", lambda p, t: ilijax.fit(KEY, {"w": jnp.zeros((1, 2))},
                                               lambda q, b, k: 0.0, {"r": jnp.zeros((10, 1))},
                                               max_epochs=0),
     ValueError, r"max_epochs to be an int >= 1"),
    ("fit patience float", lambda p, t: ilijax.fit(KEY, {"w": jnp.zeros((1, 2))},
                                                   lambda q, b, k: 0.0,
                                                   {"r": jnp.zeros((10, 1))}, patience=2.5),
     ValueError, "patience"),
    ("fit optimizer", lambda p, t: ilijax.fit(KEY, {"w": jnp.zeros((1, 2))}, lambda q, b, k: 0.0,
                                              {"r": jnp.zeros((10, 1))}, optimizer="adam"),
     ValueError, r"optimizer to be an optax GradientTransformation .* or a function of the "
                 r"learning rate .*; got str"),
    ("fit optimizer factory", lambda p, t: ilijax.fit(
        KEY, {"w": jnp.zeros((1, 2))}, lambda q, b, k: 0.0, {"r": jnp.zeros((10, 1))},
        optimizer=lambda lr: 1.0),
     ValueError, r"optimizer\(learning_rate\) to return an optax GradientTransformation; "
                 r"got float"),
    ("fit schedule", lambda p, t: ilijax.fit(KEY, {"w": jnp.zeros((1, 2))}, lambda q, b, k: 0.0,
                                             {"r": jnp.zeros((10, 1))}, schedule="linear"),
     ValueError, r"schedule in \('cosine', 'constant'\); got 'linear'"),
    ("fit patience string", lambda p, t: ilijax.fit(
        KEY, {"w": jnp.zeros((1, 2))}, lambda q, b, k: 0.0, {"r": jnp.zeros((10, 1))},
        patience="never"),
     ValueError, r"patience to be an int >= 1, None or 'auto'; got 'never'"),
    # -- simulate
    ("simulate int key", lambda p, t: ilijax.simulate(1, TASK.prior, TASK.simulator, 10),
     TypeError, KEY_HINT),
    # -- Posterior.sample
    ("sample int key", lambda p, t: p["npe"].sample(5, X[:2], 10), TypeError, KEY_HINT),
    ("sample float num_samples", lambda p, t: p["npe"].sample(KEY, X[:2], 10.5),
     ValueError, r"num_samples to be an int >= 1; got 10\.5"),
    ("sample bool num_samples", lambda p, t: p["npe"].sample(KEY, X[:2], True),
     ValueError, r"num_samples to be an int >= 1; got True"),
    ("sample nan x", lambda p, t: p["npe"].sample(KEY, x_with_nan(), 10),
     ValueError, r"finite values in x; got NaN or inf in 2 of 5 observations \(indices 1, 3\)"),
    ("sample nan x one", lambda p, t: p["npe"].sample(KEY, x_with_nan()[1], 10),
     ValueError, r"finite values in x; got NaN or inf in 1 of its 2 values"),
    ("sample x shape", lambda p, t: p["npe"].sample(KEY, X[:2, :1], 10),
     ValueError, r"x of shape \(2,\) or \(batch, 2\); got \(2, 1\)"),
    ("sample chunk_size", lambda p, t: p["npe"].sample(KEY, X[:2], 10, chunk_size=0),
     ValueError, "chunk_size"),
    ("sample method", lambda p, t: p["npe"].sample(KEY, X[:2], 10, method="gibbs"),
     ValueError, "method"),
    ("sample direct for nle", lambda p, t: p["nle"].sample(KEY, X[:2], 10, method="direct"),
     ValueError, "method='direct'"),
    ("sample nan x mcmc", lambda p, t: p["nle"].sample(KEY, x_with_nan(), 10),
     ValueError, r"indices 1, 3"),
    ("sample target_acceptance", lambda p, t: p["nle"].sample(KEY, X[:1], 10,
                                                              target_acceptance=1.5),
     ValueError, "target_acceptance"),
    ("sample max_num_doublings", lambda p, t: p["nle"].sample(KEY, X[:1], 10,
                                                              max_num_doublings=0),
     ValueError, "max_num_doublings"),
    ("sample num_chains", lambda p, t: p["nle"].sample(KEY, X[:1], 10, num_chains=1.5),
     ValueError, "num_chains"),
    ("sample unhashable option", lambda p, t: p["nle"].sample(KEY, X[:1], 10,
                                                              num_warmup=[1, 2]),
     ValueError, "num_warmup"),
    ("sample return_info in jit", lambda p, t: jax.jit(
        lambda q, xx: q.sample(KEY, xx, 10, return_info=True))(p["npe"], X[:2]),
     ValueError, "return_info=False inside a jit"),
    # -- Posterior.log_prob
    ("log_prob nan theta", lambda p, t: p["npe"].log_prob(theta_with_nan(), X[:4]),
     ValueError, r"theta without NaN; got NaN in 1 of 4 parameter vectors \(flat indices 2\)"),
    ("log_prob nan theta nle", lambda p, t: p["nle"].log_prob(theta_with_nan(), X[:4]),
     ValueError, "theta without NaN"),
    ("log_prob nan x", lambda p, t: p["npe"].log_prob(THETA[:5], x_with_nan()),
     ValueError, r"finite values in x.*indices 1, 3"),
    ("log_prob theta dim", lambda p, t: p["npe"].log_prob(THETA[:5, :1], X[:5]),
     ValueError, r"theta with last axis 2"),
    # -- validate / sample_test_set
    ("validate nan x", lambda p, t: ilijax.validate(KEY, p["npe"], THETA[:5], x_with_nan(),
                                                    num_samples=10, progress=False),
     ValueError, r"finite values in x_test.*indices 1, 3"),
    ("validate int key", lambda p, t: ilijax.validate(2, p["npe"], THETA[:5], X[:5],
                                                      num_samples=10, progress=False),
     TypeError, KEY_HINT),
    ("sample_test_set num_samples", lambda p, t: ilijax.diagnostics.sample_test_set(
        KEY, p["npe"], X[:5], 2.5),
     ValueError, r"num_samples to be an int"),
    # -- save / load
    ("save not a posterior", lambda p, t: ilijax.save({"a": 1}, t / "x"),
     TypeError, r"posterior to be an ilijax Posterior; got dict"),
    ("load missing", lambda p, t: ilijax.load(t / "nothere"),
     FileNotFoundError, r"nothere or .*nothere\.npz"),
    ("load foreign npz", lambda p, t: ilijax.load(write(t, "other.npz", a=np.zeros(2))),
     ValueError, r"other\.npz is not one: it has no '__spec__' entry \(entries: a\)"),
    ("load newer version", lambda p, t: ilijax.load(newer_file(t)),
     ValueError, r"format version <= 1; got 99 in .*newer\.npz .*upgrade ilijax"),
    ("load text file", lambda p, t: ilijax.load(yaml_file(t, "a: 1")),
     ValueError, r"cfg\.yaml is not one: it is not an \.npz archive"),
    # -- loaders
    ("load_numpy in_dir", lambda p, t: ilijax.loaders.load_numpy(t / "none", "x.npy",
                                                                 "theta.npy"),
     FileNotFoundError, "in_dir"),
    ("load_npz key", lambda p, t: ilijax.loaders.load_npz(
        write(t, "d.npz", theta=np.zeros((3, 2)), x=np.zeros((3, 2))), x_key="data"),
     ValueError, "data"),
    # -- config
    ("config unknown key", lambda p, t: load_config(
        yaml_file(t, "inference:\n  lerning_rate: 1e-3\n")),
     ConfigError, r"inference\.lerning_rate: unknown key; did you mean"),
    ("config negative learning_rate", lambda p, t: load_config(
        yaml_file(t, "inference:\n  train:\n    learning_rate: -1\n")),
     ConfigError, r"inference\.train\.learning_rate"),
    # -- diagnostics
    ("c2st learning_rate", lambda p, t: c2st(KEY, THETA[:40], THETA[40:80], learning_rate=0.0),
     ValueError, "learning_rate"),
    ("c2st folds float", lambda p, t: c2st(KEY, THETA[:40], THETA[40:80], folds=2.5),
     ValueError, "folds"),
    ("mmd bandwidth inf", lambda p, t: mmd(THETA[:20], THETA[20:40], bandwidth=float("inf")),
     ValueError, "bandwidth"),
    ("c2st int key", lambda p, t: c2st(0, THETA[:40], THETA[40:80]), TypeError, KEY_HINT),
    ("samplers nuts int key", lambda p, t: ilijax.samplers.get("nuts")(
        0, lambda u: -jnp.sum(u ** 2), jnp.zeros((2, 2)), 4), TypeError, KEY_HINT),
    ("tarp one level", lambda p, t: tarp(KEY, jnp.zeros((4, 10, 2)), THETA[:4], levels=[0.5]),
     ValueError, "at least 2 levels"),
]


@pytest.mark.parametrize("call, error, match", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input(call, error, match, posts, tmp_path):
    with pytest.raises(error, match=match):
        call(posts, tmp_path)


def test_the_table_covers_every_entry_point():
    names = " ".join(r[0] for r in ROWS)
    for entry in ("npe", "nle", "nre", "sequential", "fit", "simulate", "sample", "log_prob",
                  "validate", "save", "load", "load_numpy", "load_npz", "config"):
        assert entry in names, entry


def test_legacy_prngkey_still_works(posts):
    legacy = jax.random.PRNGKey(3)
    typed = jax.random.wrap_key_data(legacy)
    np.testing.assert_array_equal(posts["npe"].sample(legacy, X[:2], 5),
                                  posts["npe"].sample(typed, X[:2], 5))


@pytest.mark.parametrize("method", ["npe", "nle"])
def test_inside_jit_nan_gives_nan_for_every_method(method, posts):
    """Inside a trace nothing can raise: a NaN in theta or x gives NaN, the same for every
    method (before, NLE said -inf, "outside the support", and NPE NaN)."""
    post = posts[method]
    lp = jax.jit(lambda p, t, xx: p.log_prob(t, xx))
    theta, x = jnp.asarray(theta_with_nan()), jnp.asarray(X[:4])
    out = np.asarray(lp(post, theta, x))
    assert np.isnan(out[2]) and np.all(np.isfinite(np.delete(out, 2)))
    bad_x = jnp.asarray(x_with_nan()[:4])
    out = np.asarray(lp(post, jnp.asarray(THETA[:4]), bad_x))
    np.testing.assert_array_equal(np.isnan(out), [False, True, False, True])
    # A point outside the support is still -inf (not NaN).
    outside = jnp.asarray([[5.0, 0.0]])
    assert np.asarray(lp(post, outside, x[:1]))[0] == -np.inf


def test_inside_jit_direct_draws_of_a_nan_observation_are_nan(posts):
    draws = jax.jit(lambda p, xx: p.sample(KEY, xx, 8))(posts["npe"], jnp.asarray(x_with_nan()))
    draws = np.asarray(draws)
    assert np.all(np.isnan(draws[[1, 3]])) and np.all(np.isfinite(draws[[0, 2, 4]]))
