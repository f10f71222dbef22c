"""The functional core: a Posterior is a pytree, compiled programs are shared by structure,
standardisation statistics are frozen, and old files still load (issue 13)."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import ilijax
from ilijax import data as _data
from ilijax.estimators import Frozen
from ilijax.estimators._base import zscore_stats
from ilijax.estimators._support import to_unconstrained
from ilijax.posterior import trace_counts
from ilijax.priors import support_bijector
from ilijax.simulate import run_simulator

TASK = ilijax.tasks.two_moons()
DATA = ilijax.simulate(jax.random.key(0), TASK.prior, TASK.simulator, 600, progress=False)
FIT = dict(max_epochs=3, batch_size=50, progress=False)
LEGACY = Path(__file__).parent / "data" / "legacy_v1"


def small_maf():
    return ilijax.estimators.maf(hidden=8, transforms=2)


@pytest.fixture(scope="module")
def npe_pair():
    """Two NPE posteriors of the same structure from separate calls (new bundle objects)."""
    a, _ = ilijax.npe(jax.random.key(1), DATA.theta, DATA.x, prior=TASK.prior,
                      estimator=small_maf(), **FIT)
    b, _ = ilijax.npe(jax.random.key(2), DATA.theta, DATA.x, prior=TASK.prior,
                      estimator=small_maf(), **FIT)
    return a, b


@pytest.fixture(scope="module")
def ensemble():
    post, _ = ilijax.npe(jax.random.key(3), DATA.theta, DATA.x, prior=TASK.prior,
                         estimator=small_maf(), ensemble=3, **FIT)
    return post


def test_jit_device_put_and_tree_map_give_the_direct_numbers(ensemble):
    post = ensemble
    theta, x = DATA.theta[:6], DATA.x[:6]
    want = post.log_prob(theta, x)
    got = jax.jit(lambda p, t, xx: p.log_prob(t, xx))(post, theta, x)
    np.testing.assert_array_equal(got, want)
    # tree_map and flatten/unflatten round-trip to an equal posterior.
    same = jax.tree.map(lambda a: a, post)
    assert isinstance(same, ilijax.Posterior) and same.labels == post.labels
    leaves, treedef = jax.tree.flatten(post)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    np.testing.assert_array_equal(same.log_prob(theta, x), want)
    np.testing.assert_array_equal(rebuilt.log_prob(theta, x), want)
    assert jax.tree.structure(rebuilt) == treedef
    # Weights and every member's params are the leaves (nothing else).
    assert len(leaves) == len(jax.tree.leaves(post.groups[0].params)) + 1
    # device_put: onto one device, and replicated over a 4-device mesh.
    key = jax.random.key(9)
    draws = post.sample(key, x, 40)
    on_one = jax.device_put(post, jax.devices()[1])
    np.testing.assert_allclose(on_one.log_prob(theta, x), want, rtol=1e-6)
    np.testing.assert_allclose(on_one.sample(key, x, 40), draws, rtol=1e-6, atol=1e-6)
    mesh = Mesh(np.asarray(jax.devices()[:4]), ("d",))
    replicated = jax.device_put(post, NamedSharding(mesh, PartitionSpec()))
    assert len(jax.tree.leaves(replicated)[0].sharding.device_set) == 4
    np.testing.assert_allclose(replicated.log_prob(theta, x), want, rtol=1e-6)
    np.testing.assert_allclose(replicated.sample(key, x, 40), draws, rtol=1e-6, atol=1e-6)


def test_sample_inside_jit_equals_eager_for_one_member(npe_pair):
    # One member: the traced weights change nothing (every member draws n either way), so the
    # draws are those of the eager call, key for key.
    post, _ = npe_pair
    key, x = jax.random.key(4), DATA.x[:5]
    eager = post.sample(key, x, 30)
    inside = jax.jit(lambda p, k, xx: p.sample(k, xx, 30))(post, key, x)
    np.testing.assert_allclose(inside, eager, rtol=1e-6, atol=1e-6)


def test_sample_inside_jit_is_the_mixture(ensemble):
    """Traced weights: every member draws n and the mixture keeps n of them by the same
    stratified counts; the draws are those of the same mixture as the eager call's."""
    post = ensemble
    x = DATA.x[0]
    draws = jax.jit(lambda p, k: p.sample(k, x, 300))(post, jax.random.key(5))
    assert draws.shape == (300, 2) and np.all(np.isfinite(draws))
    eager = post.sample(jax.random.key(5), x, 300)
    # Both are draws of the same mixture: their means agree within a z-bound.
    se = np.sqrt(np.var(eager, 0) / 300 * 2)
    assert np.all(np.abs(np.mean(draws, 0) - np.mean(eager, 0)) < 4.5 * se)


def test_one_compiled_program_serves_every_posterior_of_the_same_structure(npe_pair, tmp_path):
    a, b = npe_pair
    x = DATA.x[:7]
    a.log_prob(DATA.theta[:7], x)
    a.sample(jax.random.key(0), x, 50)
    before = trace_counts()
    # A second, separately trained posterior (new bundles, new params) ...
    b.sample(jax.random.key(1), x, 50)
    b.log_prob(DATA.theta[:7], x)
    # ... and one reloaded from a file trace nothing new.
    ilijax.save(a, tmp_path / "a")
    loaded = ilijax.load(tmp_path / "a")
    np.testing.assert_array_equal(loaded.sample(jax.random.key(0), x, 50),
                                  a.sample(jax.random.key(0), x, 50))
    assert trace_counts() == before
    # A new static shape does trace (the counter can fail).
    a.sample(jax.random.key(0), x, 51)
    assert trace_counts()["direct"] == before["direct"] + 1


def test_mcmc_program_is_shared_by_posteriors_of_the_same_structure():
    opts = dict(method="mala", num_warmup=5, num_chains=2)
    posts = [ilijax.nle(jax.random.key(k), DATA.theta, DATA.x, prior=TASK.prior,
                        estimator=small_maf(), **FIT)[0] for k in (6, 7)]
    x = DATA.x[:2]
    with pytest.warns(RuntimeWarning, match="R-hat"):
        first = posts[0].sample(jax.random.key(0), x, 8, **opts)
    before = trace_counts()
    with pytest.warns(RuntimeWarning, match="R-hat"):
        second = posts[1].sample(jax.random.key(0), x, 8, **opts)
    assert trace_counts() == before
    assert not np.allclose(first, second)  # different params, one program


def test_grad_of_log_prob_in_theta_and_x_matches_finite_differences(ensemble):
    post = ensemble
    theta, x = jnp.asarray([0.12, -0.07]), DATA.x[3]
    g_theta = jax.grad(lambda t: post.log_prob(t, x))(theta)
    g_x = jax.grad(lambda xx: post.log_prob(theta, xx))(x)
    assert g_theta.shape == (2,) and g_x.shape == (2,)

    def central(f, v, i, eps=1e-2):
        e = jnp.zeros_like(v).at[i].set(eps)
        return (float(f(v + e)) - float(f(v - e))) / (2 * eps)

    for g, f, v in ((g_theta, lambda t: post.log_prob(t, x), theta),
                    (g_x, lambda xx: post.log_prob(theta, xx), x)):
        fd = np.array([central(f, v, i) for i in range(2)])
        # float32 central differences at eps 1e-2: rounding ~1e-6 |f| / eps ~ 1e-3 and
        # curvature error eps^2 |f'''| / 6; 2e-2 absolute plus 2% covers both with room.
        np.testing.assert_allclose(np.asarray(g), fd, rtol=2e-2, atol=2e-2)
    # The gradient also composes with jit and vmap, the posterior as an argument.
    batch = jax.jit(jax.vmap(jax.grad(lambda t, xx, p: p.log_prob(t, xx)), (0, 0, None)))(
        DATA.theta[:4], DATA.x[:4], post)
    np.testing.assert_allclose(batch[0], jax.grad(lambda t: post.log_prob(t, DATA.x[0]))(
        DATA.theta[0]), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------- frozen statistics

def _split(key, theta, x):
    dataset = _data.check_data(theta, x)
    k_split = jax.random.split(key, 3)[0]
    return _data.split(k_split, dataset, 0.1)[0]


def _frozen(tree):
    return [n.value for n in jax.tree.leaves(tree, is_leaf=lambda n: isinstance(n, Frozen))
            if isinstance(n, Frozen)]


HARSH = dict(optimizer=optax.adamw(0.05, weight_decay=0.5), max_epochs=4, batch_size=50,
             progress=False, clip_norm=None)


@pytest.mark.parametrize("method", ["npe", "nle", "nre", "embedded"])
def test_statistics_equal_the_training_split_after_harsh_training(method):
    """A large learning rate and strong weight decay move every trainable leaf; the z-score
    statistics must still be exactly those of the training split (per member)."""
    key = jax.random.key(11)
    train = _split(key, DATA.theta, DATA.x)
    u = to_unconstrained(support_bijector(TASK.prior), train.theta)
    est = ilijax.estimators
    if method == "npe":
        post, _ = ilijax.npe(key, DATA.theta, DATA.x, prior=TASK.prior, estimator=small_maf(),
                             ensemble=2, **HARSH)
        p = post.groups[0].params
        # The flow's y is theta itself in theta space (the default for this box prior).
        y = train.theta if post.space == "theta" else u
        expected = [(p, "y", y), (p, "c", train.x)]
    elif method == "nle":
        post, _ = ilijax.nle(key, DATA.theta, DATA.x, prior=TASK.prior, estimator=small_maf(),
                             ensemble=2, **HARSH)
        p = post.groups[0].params
        expected = [(p, "y", train.x), (p, "c", train.theta)]
    elif method == "nre":
        post, _ = ilijax.nre(key, DATA.theta, DATA.x, prior=TASK.prior,
                             classifier=est.classifier(hidden=8), ensemble=2, **HARSH)
        p = post.groups[0].params
        expected = [(p, "theta", train.theta), (p, "x", train.x)]
    else:
        bundle = est.embedded(est.mdn(hidden=8, components=2), ilijax.nn.FCN(n_hidden=(8, 3)))
        post, _ = ilijax.npe(key, DATA.theta, DATA.x, prior=TASK.prior, estimator=bundle,
                             ensemble=2, **HARSH)
        p = post.groups[0].params
        # The summaries' statistics stay the identity (see estimators.embedded).
        y = train.theta if post.space == "theta" else u
        expected = [(p, "x", train.x), (p["estimator"], "y", y),
                    (p["estimator"], "c", jnp.zeros((2, 3)))]
    for node, prefix, rows in expected:
        stats = zscore_stats(jnp.asarray(rows))
        for member in range(2):
            shift = node[f"{prefix}_shift"].value[member]
            scale = node[f"{prefix}_scale"].value[member]
            np.testing.assert_allclose(shift, stats["mean"], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(scale, stats["std"], rtol=1e-6, atol=1e-6)
    # The same training moved the trainable weights: the two members differ.
    kernel = jax.tree.leaves(p["net"] if "net" in p else p["embedding"])[0]
    assert not np.allclose(kernel[0], kernel[1])


def test_snpe_statistics_stay_those_of_round_one_through_harsh_apt_rounds():
    """SNPE z-scores by round 1's training split (as sbi builds its net once) and the APT
    rounds, trained with a large rate and strong weight decay, must not move them."""
    from ilijax.inference.sequential import _round_keys

    key = jax.random.key(12)
    states = []
    ilijax.sequential(key, TASK.simulator, TASK.prior, jnp.array([0.1, -0.2]), method="npe",
                      rounds=2, simulations_per_round=300, estimator=small_maf(), ensemble=2,
                      on_round=states.append, **HARSH)
    first = _data.check_data(states[0].theta[0], states[0].x[0])
    k_split = jax.random.split(_round_keys(key, 0)[2], 3)[0]
    train = _data.split(k_split, first, 0.1)[0]
    u = to_unconstrained(support_bijector(TASK.prior), train.theta)
    y = train.theta if states[0].posterior.space == "theta" else u
    want = {"y": zscore_stats(y), "c": zscore_stats(train.x)}
    for state in states:
        p = state.posterior.groups[0].params
        for prefix, stats in want.items():
            for member in range(2):
                np.testing.assert_allclose(p[f"{prefix}_shift"].value[member], stats["mean"],
                                           rtol=1e-6, atol=1e-6)
                np.testing.assert_allclose(p[f"{prefix}_scale"].value[member], stats["std"],
                                           rtol=1e-6, atol=1e-6)
    # The APT round did train: the weights moved between the rounds.
    before, after = (jax.tree.leaves(s.posterior.groups[0].params["net"]) for s in states)
    assert not all(np.allclose(a, b) for a, b in zip(before, after, strict=True))


def test_frozen_leaves_get_no_gradient_and_no_update():
    est = ilijax.estimators.mdn(hidden=8, components=2)  # standardized(core)
    theta = DATA.theta[:100]
    params = est.init(jax.random.key(0), theta, DATA.x[:100])
    grads = jax.grad(lambda p: est.log_prob(p, theta[0], DATA.x[0]))(params)
    for g in _frozen(grads):
        np.testing.assert_array_equal(g, 0.0)
    # Through fit with weight decay only (a zero loss): trainable leaves shrink, frozen stay.
    stacked = jax.tree.map(lambda a: a[None], params)

    def loss(p, batch, key):
        del batch, key
        return jnp.sum(jnp.zeros(()) * jax.tree.leaves(p)[0].sum())

    out, _ = ilijax.fit(jax.random.key(1), stacked, loss, {"r": jnp.zeros((40, 1))},
                        optimizer=optax.adamw(0.1, weight_decay=1.0), max_epochs=2,
                        patience=None, progress=False, validation={"r": jnp.zeros((10, 1))})
    for a, b in zip(_frozen(out), _frozen(stacked), strict=True):
        np.testing.assert_array_equal(a, b)
    # best_params is the epoch-1 state (the zero loss never improves after it): one step
    # (all 40 rows in one batch) of pure decoupled weight decay, w <- w - 0.1 * 1.0 * w.
    kernel = lambda t: jax.tree.leaves(t["net"])[0]  # noqa: E731
    np.testing.assert_allclose(kernel(out), 0.9 * kernel(stacked), rtol=1e-6, atol=1e-8)


def test_snpe_statistics_stay_those_of_round_one():
    prior = TASK.prior
    x_obs = DATA.x[0]
    post, infos = ilijax.sequential(jax.random.key(12), TASK.simulator, prior, x_obs,
                                    rounds=2, simulations_per_round=300, estimator=small_maf(),
                                    **HARSH)
    # Round 1 split its 300 simulations as npe does.
    k_theta, k_sim, k_train = jax.random.split(jax.random.fold_in(jax.random.key(12), 0), 3)
    theta = prior.sample(k_theta, (300,))
    x = run_simulator(k_sim, TASK.simulator, np.asarray(theta, np.float32))
    train = _data.split(jax.random.split(k_train, 3)[0], _data.check_data(theta, x), 0.1)[0]
    u = to_unconstrained(support_bijector(prior), train.theta)
    p = post.groups[0].params
    y = train.theta if post.space == "theta" else u
    np.testing.assert_allclose(p["y_shift"].value[0], zscore_stats(y)["mean"], rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(p["c_scale"].value[0], zscore_stats(train.x)["std"], rtol=1e-6)
    assert [i.proposal for i in infos] == ["prior", "posterior"]


def test_format_1_files_load_with_identical_log_prob():
    """Files written by 20bda3f, whose statistics the optimizer had moved (tests/data).

    The stored values were computed with XLA's default optimisation, and the comparison is
    bitwise, so this test runs in a child pytest with XLA's defaults (the rest of the suite
    compiles with cheap LLVM passes, see conftest.py, which moves float32 results by ulps)."""
    if os.environ.get("ILIJAX_TEST_XLA_DEFAULTS") != "1":
        env = {**os.environ, "ILIJAX_TEST_XLA_DEFAULTS": "1",
               "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
        node = f"{__file__}::test_format_1_files_load_with_identical_log_prob"
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist",
                               "-p", "no:cacheprovider", node], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        return
    expected = json.loads((LEGACY / "expected.json").read_text())
    theta, x = jnp.asarray(expected["theta"]), jnp.asarray(expected["x"])
    assert set(expected["cases"]) == {"npe_nsf", "npe_mdn_maf", "nle_maf", "nre_resnet",
                                      "npe_embedded"}
    for name, case in expected["cases"].items():
        post = ilijax.load(LEGACY / name)
        assert post.method == case["method"]
        np.testing.assert_array_equal(np.asarray(post.log_prob(theta, x)), case["log_prob"])
        np.testing.assert_allclose(post.weights, case["weights"], rtol=1e-12)
        # The statistics load into Frozen nodes (so a further fit would hold them).
        assert _frozen(post.groups[0].params)


# ----------------------------------------------------------------------- progress in logs

def test_progress_in_a_log_file_is_whole_lines(monkeypatch):
    from ilijax import _progress

    monkeypatch.setenv("ILIJAX_PROGRESS_SECONDS", "0")
    stream = io.StringIO()  # not a terminal
    bar = _progress.progress_bar(total=5, desc="fit", unit="epoch", file=stream)
    assert isinstance(bar, _progress.LogProgress)
    for _ in range(5):
        bar.set_postfix(best_val="1.0")
        bar.update(1)
    bar.close()
    bar.close()  # idempotent
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("fit: 0/5 epoch") and lines[-1].startswith("fit: 5/5 epoch")
    assert lines[-1].endswith("done]") and "best_val=1.0" in lines[-1]
    assert len(lines) == 7  # started, 5 updates (interval 0), done
    # At the default interval, five quick updates print only the first and the last line.
    monkeypatch.delenv("ILIJAX_PROGRESS_SECONDS")
    stream = io.StringIO()
    for _ in _progress.progress_bar(range(5), desc="simulate", file=stream):
        pass
    assert len(stream.getvalue().splitlines()) == 2


def test_fit_writes_readable_lines_when_stderr_is_a_file(capfd):
    ilijax.npe(jax.random.key(1), DATA.theta, DATA.x, prior=TASK.prior, estimator=small_maf(),
               max_epochs=2, progress=True)
    err = capfd.readouterr().err  # pytest's captured stderr is a file, not a terminal
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("fit:")]
    assert len(lines) == 2 and lines[-1].startswith("fit: 2/2 epoch")
