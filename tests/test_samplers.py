"""The MCMC samplers: invariance of a known target, a negative control, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilijax import samplers
from ilijax.samplers import mcmc

MU = jnp.array([1.0, -2.0])
COV = jnp.array([[1.0, 0.8], [0.8, 1.0]])
PREC = jnp.linalg.inv(COV)
Z = 4.5  # two-sided bound per statistic; 5 statistics per sampler: false alarm < 4e-5


def gaussian(u, prec=PREC):
    d = u - MU
    return -0.5 * d @ prec @ d


def exact_draws(key, n):
    return MU + jax.random.normal(key, (n, 2)) @ jnp.linalg.cholesky(COV).T


def moment_z(draws):
    """z-scores of the sample mean (2) and covariance entries (3) of iid draws of N(MU, COV)."""
    n = draws.shape[0]
    mean = draws.mean(0)
    c = np.cov(draws.T)
    cov = np.asarray(COV)
    z_mean = (mean - np.asarray(MU)) / np.sqrt(np.diag(cov) / n)
    # Var of a sample covariance entry of a Gaussian: (S_ii S_jj + S_ij^2) / n.
    z_cov = [(c[i, j] - cov[i, j]) / np.sqrt((cov[i, i] * cov[j, j] + cov[i, j] ** 2) / n)
             for i, j in ((0, 0), (0, 1), (1, 1))]
    return np.concatenate([z_mean, z_cov])


def final_states(method, logdensity, n_chains, steps, key, **options):
    """Independent single chains, each started at an exact draw, run ``steps`` steps; the last
    state of each chain is an exact draw if the kernel leaves the target invariant."""
    init = exact_draws(jax.random.fold_in(key, 1), n_chains)
    run = samplers.get(method)

    @jax.jit
    def go(keys, init):
        return jax.vmap(lambda k, u: run(k, logdensity, u[None], steps, num_warmup=0,
                                         **options)[0])(keys, init)

    out = go(jax.random.split(key, n_chains), init)  # (n, 1, steps, 2)
    return np.asarray(out[:, 0, -1])


@pytest.mark.parametrize("method", ["nuts", "hmc", "mala", "slice"])
def test_single_chain_samplers_leave_the_target_invariant(method):
    draws = final_states(method, gaussian, 2000, 10, jax.random.key(0))
    z = moment_z(draws)
    assert np.all(np.abs(z) < Z), z


@pytest.mark.parametrize("method", ["aies", "ess"])
def test_ensemble_samplers_leave_the_target_invariant(method):
    # 1000 independent ensembles of 8 walkers started at exact draws; walker 0 of each after
    # 10 moves is an exact draw (walkers of one ensemble are correlated, ensembles are not).
    n, walkers = 1000, 8
    key = jax.random.key(1)
    init = exact_draws(jax.random.fold_in(key, 1), n * walkers).reshape(n, walkers, 2)
    run = samplers.get(method)
    go = jax.jit(jax.vmap(lambda k, u: run(k, gaussian, u, 10 * walkers, num_warmup=0,
                                           thin=1)[0]))
    out = go(jax.random.split(key, n), init)  # (n, walkers, 10, 2)
    assert out.shape == (n, walkers, 10, 2)
    z = moment_z(np.asarray(out[:, 0, -1]))
    assert np.all(np.abs(z) < Z), z


def test_negative_control_a_wrong_target_is_detected():
    # NUTS on a target with half the covariance, started at draws of the true one: the chains
    # contract, and the same check must fail.
    draws = final_states("nuts", lambda u: gaussian(u, 2.0 * PREC), 2000, 10, jax.random.key(2))
    z = moment_z(draws)
    assert np.max(np.abs(z)) > Z, z


@pytest.mark.parametrize("method", ["nuts", "mala"])
def test_adapted_chains_from_a_far_start_reach_the_target(method):
    # With window adaptation, 4 chains started far away; the pooled draws match the target
    # within bounds that use the effective sample size (Monte Carlo standard error).
    init = jnp.array([[8.0, 8.0], [-8.0, 5.0], [6.0, -9.0], [-5.0, -5.0]])
    run = jax.jit(lambda k: samplers.get(method)(k, gaussian, init, 4000, num_warmup=300))
    draws, stats = run(jax.random.key(3))
    assert draws.shape == (4, 1000, 2)
    import arviz as az

    ess = np.asarray(az.ess(np.asarray(draws)[..., 0], method="mean"))
    x = np.asarray(draws).reshape(-1, 2)
    se = np.sqrt(np.diag(np.asarray(COV)) / ess)
    assert np.all(np.abs(x.mean(0) - np.asarray(MU)) < Z * se)
    assert float(np.asarray(az.rhat(np.asarray(draws)[..., 0]))) < 1.05
    assert np.all(np.asarray(stats["acceptance"]) > 0.3)


def _reference_chain(kernel, state, k_run, num_kept, thin):
    """The chain of ``kernel`` driven by the keys the samplers built on blackjax use: one key
    per kept draw, ``split(k_run, num_kept)``, each split into ``thin`` step keys."""
    keys = jax.vmap(lambda k: jax.random.split(k, thin))(jax.random.split(k_run, num_kept))

    def step(state, k):
        state, _ = kernel.step(k, state)
        return state, state.position

    return jax.lax.scan(step, state, keys.reshape(-1))[1]  # every state


@pytest.mark.parametrize("method", ["slice", "hmc"])
def test_thinning_keeps_every_kth_state(method):
    # The blackjax-based samplers (nuts, hmc, mala, slice) draw a fresh key per kept draw and
    # split it into `thin` step keys, so thin=4 is not every 4th state of the thin=1 chain of
    # the same key (their step keys differ), but exactly every 4th state of the same kernel
    # run on those step keys; thin=1 is that chain itself. No warm-up: the kernel is known
    # (slice: width 1; hmc: step size 0.1, unit mass).
    import blackjax

    init = jnp.zeros((1, 2))
    key = jax.random.key(4)
    if method == "slice":
        kernel = blackjax.coordinate_slice(gaussian, initial_widths=1.0, max_expansions=10)
    else:
        kernel = blackjax.hmc(gaussian, step_size=0.1, inverse_mass_matrix=jnp.ones(2),
                              num_integration_steps=16)
    state = kernel.init(init[0])
    run = samplers.get(method)
    a, _ = jax.jit(lambda k: run(k, gaussian, init, 20, num_warmup=0, thin=1))(key)
    b, _ = jax.jit(lambda k: run(k, gaussian, init, 5, num_warmup=0, thin=4))(key)
    assert a.shape == (1, 20, 2) and b.shape == (1, 5, 2)
    # (one chain: its key is split(key, 1)[0]; its run key the second half of that split)
    _, k_run = jax.random.split(jax.random.split(key, 1)[0])
    chain = jax.jit(_reference_chain, static_argnums=(0, 3, 4))
    ref4 = np.asarray(chain(kernel, state, k_run, 5, 4))
    ref1 = np.asarray(chain(kernel, state, k_run, 20, 1))
    # Same programs up to XLA's fusion: equal to float32 rounding.
    np.testing.assert_allclose(np.asarray(b[0]), ref4[3::4], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(a[0]), ref1, rtol=0, atol=1e-5)
    assert np.abs(ref4[3::4] - ref1[3::4]).max() > 0.1  # the streams do differ


@pytest.mark.parametrize("method", ["aies", "ess"])
def test_ensemble_thinning_keeps_every_kth_state_of_the_same_chain(method):
    # The ensemble samplers carry their random state in the kernel state, so thin=4 keeps
    # exactly every 4th state of the unthinned chain of the same key.
    init = exact_draws(jax.random.key(5), 8)
    run = samplers.get(method)
    a, _ = jax.jit(lambda k: run(k, gaussian, init, 20 * 8, num_warmup=0, thin=1))(
        jax.random.key(4))
    b, _ = jax.jit(lambda k: run(k, gaussian, init, 5 * 8, num_warmup=0, thin=4))(
        jax.random.key(4))
    assert a.shape == (8, 20, 2) and b.shape == (8, 5, 2)
    np.testing.assert_allclose(np.asarray(b), np.asarray(a[:, 3::4]), rtol=0, atol=1e-5)
    assert np.abs(np.diff(np.asarray(a), axis=1)).max() > 0  # the walkers move


def test_errors_name_the_field():
    init = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="num_samples"):
        mcmc.nuts(jax.random.key(0), gaussian, init, 0)
    with pytest.raises(ValueError, match="thin"):
        mcmc.nuts(jax.random.key(0), gaussian, init, 10, thin=0)
    with pytest.raises(ValueError, match="init of shape"):
        mcmc.nuts(jax.random.key(0), gaussian, jnp.zeros(2), 10)
    with pytest.raises(ValueError, match="walkers"):
        mcmc.aies(jax.random.key(0), gaussian, jnp.zeros((3, 2)), 10)
    with pytest.raises(ValueError, match="num_integration_steps"):
        mcmc.hmc(jax.random.key(0), gaussian, init, 10, num_integration_steps=0)
    with pytest.raises(ValueError, match="method"):
        samplers.get("gibbs")


@pytest.mark.parametrize(
    ("method", "options", "match"),
    [
        ("nuts", {"target_acceptance": 1.0},
         r"Expected target_acceptance to be a finite float in \(0, 1\); got 1\.0"),
        ("nuts", {"target_acceptance": 0.0}, r"target_acceptance .* in \(0, 1\); got 0\.0"),
        ("nuts", {"target_acceptance": float("nan")}, r"target_acceptance .*; got nan"),
        ("hmc", {"target_acceptance": 80}, r"target_acceptance .* in \(0, 1\); got 80"),
        ("mala", {"target_acceptance": True}, r"target_acceptance .*; got True"),
        ("nuts", {"max_num_doublings": 0}, r"Expected max_num_doublings to be an int >= 1; got 0"),
        ("nuts", {"max_num_doublings": 2.5}, r"max_num_doublings to be an int >= 1; got 2\.5"),
        ("nuts", {"max_num_doublings": True}, r"max_num_doublings to be an int >= 1; got True"),
        ("nuts", {"num_warmup": -1}, r"Expected num_warmup to be an int >= 0; got -1"),
        ("nuts", {"num_warmup": 10.0}, r"Expected num_warmup to be an int >= 0; got 10\.0"),
        ("hmc", {"thin": 2.0}, r"Expected thin to be an int >= 1; got 2\.0"),
        ("hmc", {"num_integration_steps": 4.0}, r"num_integration_steps to be an int >= 1"),
        ("slice", {"width": float("inf")}, r"Expected width to be a finite float > 0; got inf"),
        ("slice", {"width": 0.0}, r"Expected width to be a finite float > 0; got 0\.0"),
        ("slice", {"max_expansions": 2.5}, r"Expected max_expansions to be an int >= 0; got 2\.5"),
        ("slice", {"max_expansions": -1}, r"Expected max_expansions to be an int >= 0; got -1"),
        ("aies", {"thin": True}, r"Expected thin to be an int >= 1; got True"),
        ("aies", {"moves": {}}, r"Expected moves to be None or a non-empty dict"),
        ("ess", {"moves": [1]}, r"Expected moves to be None or a non-empty dict"),
        ("ess", {"max_steps": 0}, r"Expected max_steps to be an int >= 1; got 0"),
        ("ess", {"max_iter": 1e4}, r"Expected max_iter to be an int >= 1; got 10000\.0"),
    ],
)
def test_bad_options_name_the_field(method, options, match):
    init = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match=match):
        samplers.get(method)(jax.random.key(0), gaussian, init, 8, **options)


def test_aies_move_weights_must_be_finite_and_not_all_zero():
    from numpyro.infer import AIES

    init = jnp.zeros((4, 2))
    for weights in ({AIES.StretchMove(): 0.0}, {AIES.StretchMove(): float("nan")}):
        with pytest.raises(ValueError, match=r"Expected moves' weights"):
            mcmc.aies(jax.random.key(0), gaussian, init, 8, moves=weights)


def test_valid_numpy_options_still_run():
    # numpy ints and floats are valid options (a few steps, no statistics)
    init = jnp.zeros((2, 2))
    draws, stats = mcmc.nuts(jax.random.key(0), gaussian, init, 4, num_warmup=np.int64(5),
                             thin=np.int32(1), target_acceptance=np.float32(0.7),
                             max_num_doublings=np.int64(3))
    assert draws.shape == (2, 2, 2) and np.isfinite(np.asarray(draws)).all()
    draws, _ = mcmc.slice(jax.random.key(1), gaussian, init, 4, num_warmup=0, width=2,
                          max_expansions=0)
    assert draws.shape == (2, 2, 2) and np.isfinite(np.asarray(draws)).all()


def test_default_chains():
    assert samplers.default_num_chains("nuts", 5) == 4
    assert samplers.default_num_chains("aies", 5) == 20
    assert samplers.default_num_chains("ess", 2) == 16
    assert samplers.default_num_chains("vi", 5) == 16
    # Many short chains for the single-chain samplers: one per 64 draws, 4 to 32.
    assert [samplers.default_num_chains("nuts", 2, n) for n in (10, 256, 1000, 2048, 10**5)] \
        == [4, 4, 15, 32, 32]
    assert samplers.default_num_chains("aies", 5, 10**5) == 20


def test_rhat_threshold_follows_the_ess_identity():
    # R-hat ~ sqrt(1 + m / ESS) (Vats & Knudson 2021): the threshold is the R-hat of 400
    # effective draws for m chains, never below 1.01 (Vehtari et al. 2021).
    assert samplers.rhat_threshold(4) == 1.01
    assert samplers.rhat_threshold(32) == pytest.approx(math.sqrt(1.08))
    assert samplers.rhat_threshold(32, ess_target=3200) == 1.01
