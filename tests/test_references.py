"""The sbibm tasks against sbibm's published files (observations and reference posteriors).

The files are read from sbibm's wheel, fetched once with pip (no dependencies) into the cache
(``ilijax.tasks.references``). Every check has a known answer: the exact posterior's draws, a
Stein identity that any exact posterior satisfies, the simulator's own spread at the true
parameters, and the GLM's sufficient statistics of the raw spike trains; each with a negative
control that must fail.
"""

from __future__ import annotations

import pickle
import subprocess
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import ilijax
from ilijax.diagnostics import c2st
from ilijax.tasks import references as refs_mod
from ilijax.tasks.bernoulli_glm import design_matrix
from ilijax.tasks.references import SBIBM_TASKS, load_reference, sbibm_file, sbibm_wheel


@pytest.fixture(scope="module")
def wheel():
    return sbibm_wheel()  # fetched once per machine; a failure names pip's message


def _legacy_torch_float_tensor(data: bytes) -> np.ndarray:
    """A float32 tensor from torch's legacy (pre-zip) ``torch.save`` format, without torch.

    The file is a sequence of pickles: magic number, protocol, system info, the tensor (its
    storage as a persistent id), the storage keys; then per storage an int64 element count and
    the raw little-endian values.
    """
    fh = __import__("io").BytesIO(data)

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return lambda storage, offset, size, stride, *_: (offset, size, stride)
            if module == "torch" and name == "FloatStorage":
                return name
            if (module, name) == ("collections", "OrderedDict"):
                return dict
            raise pickle.UnpicklingError(f"unexpected {module}.{name}")

        def persistent_load(self, pid):
            return pid

    for _ in range(3):
        pickle.load(fh)
    offset, size, stride = Unpickler(fh).load()
    pickle.load(fh)
    count = int(np.frombuffer(fh.read(8), "<i8")[0])
    flat = np.frombuffer(fh.read(4 * count), "<f4")
    return np.lib.stride_tricks.as_strided(flat[offset:], size, [4 * s for s in stride]).copy()


def test_bernoulli_glm_design_matrix_is_sbibms(wheel):
    theirs = _legacy_torch_float_tensor(sbibm_file("bernoulli_glm", "design_matrix.pt"))
    assert theirs.shape == (100, 10)
    np.testing.assert_array_equal(design_matrix(), theirs)


def test_bernoulli_glm_observations_are_the_statistics_of_the_raw_spikes(wheel):
    x_design = design_matrix()
    for k in range(1, 11):
        raw = refs_mod._csv(sbibm_file("bernoulli_glm", f"num_observation_{k}/observation_raw.csv"))
        ref = load_reference("bernoulli_glm", k)
        assert set(np.unique(raw)) <= {0.0, 1.0} and raw.shape == (1, 100)
        np.testing.assert_allclose(x_design.T @ raw[0], ref.observation, rtol=1e-5, atol=1e-4)


def _stein_z(task, samples, x):
    """z-scores of a Stein identity ``E_post[div phi + phi . grad log p] = 0`` per dimension.

    ``phi_i = (theta_i - a_i)(b_i - theta_i) e_i`` on a box prior ``[a, b]`` (it vanishes on the
    boundary, where the posterior has mass and plain ``E[grad log p] = 0`` fails), ``phi_i = e_i``
    on an unbounded prior. Exact posterior draws give standard-normal z (the reference draws are
    independent: rejection sampling, or Gibbs thinned 25 times for the GLM).
    """
    lp = lambda th: task.log_likelihood(th, x) + task.prior.log_prob(th)  # noqa: E731
    theta = jnp.asarray(samples)
    grad = np.asarray(jax.vmap(jax.grad(lp))(theta), np.float64)
    s = np.asarray(samples, np.float64)
    support = task.prior.support
    if hasattr(support, "base_constraint") and hasattr(support.base_constraint, "lower_bound"):
        a = np.asarray(support.base_constraint.lower_bound, np.float64)
        b = np.asarray(support.base_constraint.upper_bound, np.float64)
        h = (s - a) * (b - s) * grad + (a + b - 2 * s)
    else:
        h = grad
    return h.mean(0) / (h.std(0, ddof=1) / np.sqrt(len(h)))


@pytest.mark.parametrize("name", [t for t in SBIBM_TASKS if t != "two_moons"])
def test_reference_draws_satisfy_the_tasks_stein_identity(wheel, name):
    """Each task's likelihood and prior are sbibm's: its reference draws satisfy the Stein
    identity of this task's posterior at their own observation (|z| < 4.5 for all 10 x dim
    tests: family-wise false alarm below 1e-3) and fail it at another observation.

    Not two_moons: its posterior density jumps to zero at the tips of each crescent (the angle
    is uniform on a half circle), so the identity gains boundary terms there; its exact sampler
    is checked against the reference draws by C2ST instead.
    """
    task = ilijax.tasks.get(name)
    worst, wrong = 0.0, []
    for k in range(1, 11):
        ref = load_reference(name, k)
        assert ref.source == "sbibm-1.1.0 wheel"
        assert ref.samples.shape == (10_000, task.theta_dim)
        assert ref.observation.shape == (task.x_dim,)
        assert np.all(np.isfinite(task.prior.log_prob(jnp.asarray(ref.samples))))
        worst = max(worst, float(np.abs(_stein_z(task, ref.samples, ref.observation)).max()))
        other = load_reference(name, k % 10 + 1).observation
        wrong.append(float(np.nanmax(np.abs(_stein_z(task, ref.samples, other)))))
    assert worst < 4.5, f"{name}: max |z| {worst:.2f} at the right observation"
    # negative control: with another observation's data the identity fails clearly
    assert np.median(wrong) > 10, f"{name}: wrong-observation |z| {wrong}"


@pytest.mark.parametrize("name", SBIBM_TASKS)
def test_observation_lies_within_the_simulated_spread(wheel, name):
    """x simulated at the true parameters surrounds sbibm's observation: over 10 observations x
    x_dim dimensions, the observation's mid-rank quantile leaves the central 99% no more often
    than a binomial(n, 0.01) allows at level 1e-4; simulating at shifted parameters (the
    negative control, gaussian_linear) leaves it almost always."""
    task = ilijax.tasks.get(name)
    sim = jax.jit(jax.vmap(task.simulator, (0, None)))
    quantiles = []
    for k in range(1, 11):
        ref = load_reference(name, k)
        keys = jax.random.split(jax.random.key(k), 4000)
        x = np.asarray(sim(keys, jnp.asarray(ref.true_parameters)))
        below = (x < ref.observation).mean(0)
        ties = (x == ref.observation).mean(0)
        quantiles.append(below + ties / 2)
    q = np.concatenate(quantiles)
    outside = int(np.sum((q < 0.005) | (q > 0.995)))
    assert outside <= stats.binom.isf(1e-4, q.size, 0.01), (name, outside, q.size)
    if name == "gaussian_linear":
        ref = load_reference(name, 1)
        x = np.asarray(sim(jax.random.split(jax.random.key(0), 4000),
                           jnp.asarray(ref.true_parameters) + 1.5))
        q = (x < ref.observation).mean(0)
        assert np.sum((q < 0.005) | (q > 0.995)) >= 8


def test_gaussian_linear_exact_posterior_matches_the_reference(wheel):
    """The closed-form posterior N(x / 2, 0.05 I) against sbibm's draws: the means agree within
    z-bounds, C2ST on 2,000 + 2,000 draws is at chance (0.5 + 4 sd of a fair 4,000-prediction
    accuracy), and the same test against the posterior of observation 2 is far from it."""
    task = ilijax.tasks.gaussian_linear()
    ref = load_reference("gaussian_linear", 1)
    exact = task.posterior(jnp.asarray(ref.observation))
    z = (ref.samples.mean(0) - np.asarray(exact.mean)) / np.sqrt(0.05 / ref.samples.shape[0])
    assert np.abs(z).max() < 4.5
    var_ratio = ref.samples.var(0, ddof=1) / 0.05
    chi = stats.chi2(ref.samples.shape[0] - 1)
    n1 = ref.samples.shape[0] - 1
    assert np.all((var_ratio > chi.ppf(1e-5) / n1) & (var_ratio < chi.isf(1e-5) / n1))
    n = 2000
    draws = exact.sample(jax.random.key(0), (n,))
    acc = float(c2st(jax.random.key(1), ref.samples[:n], draws, epochs=100).accuracy)
    assert acc < 0.5 + 4 * np.sqrt(0.25 / (2 * n)), acc
    other = task.posterior(jnp.asarray(load_reference("gaussian_linear", 2).observation))
    acc_wrong = float(c2st(jax.random.key(1), ref.samples[:n],
                           other.sample(jax.random.key(0), (n,)), epochs=100).accuracy)
    assert acc_wrong > 0.7, acc_wrong


@pytest.mark.parametrize("name", ["two_moons", "gaussian_mixture", "gaussian_linear_uniform"])
def test_exact_samplers_match_the_reference(wheel, name):
    """The tasks' exact samplers against sbibm's draws for observation 1 (C2ST at chance)."""
    task = ilijax.tasks.get(name)
    ref = load_reference(name, 1)
    n = 2000
    draws = jax.jit(task.sample_posterior, static_argnums=2)(
        jax.random.key(3), jnp.asarray(ref.observation), n)
    acc = float(c2st(jax.random.key(4), ref.samples[:n], draws, epochs=100).accuracy)
    assert acc < 0.5 + 4 * np.sqrt(0.25 / (2 * n)), acc


def test_generated_reference_without_the_files(monkeypatch, tmp_path):
    """With no wheel and pip failing, ``auto`` generates the reference and says why; ``sbibm``
    raises with pip's message."""

    def failing_pip(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, "", "ERROR: no index reachable")

    monkeypatch.setattr(refs_mod.subprocess, "run", failing_pip)
    ref = load_reference("gaussian_linear", 3, folder=tmp_path, num_samples=500)
    assert ref.source.startswith("ilijax exact sampler (sbibm files unavailable")
    assert "no index reachable" in ref.source
    assert ref.samples.shape == (500, 10) and ref.observation.shape == (10,)
    # the draws follow the exact posterior of the generated observation (z-bounds on the mean)
    z = (ref.samples.mean(0) - ref.observation / 2) / np.sqrt(0.05 / 500)
    assert np.abs(z).max() < 4.5
    with pytest.raises(FileNotFoundError, match="no index reachable"):
        load_reference("gaussian_linear", 3, source="sbibm", folder=tmp_path)


def test_mcmc_reference_matches_an_exact_posterior():
    """The NUTS fallback on a 2-D conjugate Gaussian: mean and variance within bounds that
    allow for autocorrelation (effective sample size taken as n / 5)."""
    task = ilijax.tasks.gaussian_linear(dim=2)
    x = np.array([0.3, -0.4], np.float32)
    draws = refs_mod.mcmc_reference(jax.random.key(0), task, x, 2000, num_chains=20,
                                    num_warmup=300, thin=2, num_candidates=2000)
    n_eff = 2000 / 5
    z = (draws.mean(0) - x / 2) / np.sqrt(0.05 / n_eff)
    assert np.abs(z).max() < 4.5, z
    assert np.all(np.abs(draws.var(0) / 0.05 - 1) < 5 * np.sqrt(2 / n_eff))


def test_wheel_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="not cached"):
        sbibm_wheel(tmp_path, download=False)
    bad = tmp_path / refs_mod._SBIBM_WHEEL
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("x", "y")
    with pytest.raises(ValueError, match="SHA-256"):
        sbibm_wheel(tmp_path)
    with pytest.raises(ValueError, match="num_observation in 1..10"):
        load_reference("two_moons", 11)
    with pytest.raises(ValueError, match="Expected task in"):
        load_reference("toy", 1)
