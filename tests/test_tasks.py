"""Tests for ilijax.tasks: shapes, exact likelihoods and reference posteriors.

Monte Carlo checks use z-bounds at a family-wise level of about 1% per test
(``norm.ppf(1 - 0.01 / (2 * num_checks))``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ilijax import tasks
from ilijax.tasks import TASKS


def _zmax(num_checks):
    return stats.norm.ppf(1 - 0.01 / (2 * num_checks))


def _assert_means_close(samples, ref_mean, ref_sd, num_checks=None):
    samples = np.asarray(samples, np.float64)
    n = samples.shape[0]
    z = (samples.mean(0) - np.asarray(ref_mean)) / (np.asarray(ref_sd) / np.sqrt(n))
    zmax = _zmax(num_checks or z.size)
    assert np.all(np.abs(z) < zmax), (z, zmax)


@pytest.mark.parametrize("name", TASKS)
def test_task_contract(name):
    task = tasks.get(name)
    assert task.name == name
    assert task.prior.event_shape == (task.theta_dim,) and task.prior.batch_shape == ()
    assert len(task.labels) == task.theta_dim
    has_ll, has_post = task.log_likelihood is not None, task.sample_posterior is not None

    @jax.jit
    def run(key):
        theta = task.prior.sample(key, (7,))
        x = jax.vmap(task.simulator)(jax.random.split(key, 7), theta)
        ll = jax.vmap(task.log_likelihood)(theta, x) if has_ll else None
        draws = task.sample_posterior(key, x[0], 50) if has_post else None
        # different keys give different data, the same key the same data
        x1, x2, x3 = (task.simulator(jax.random.key(k), theta[0]) for k in (1, 2, 1))
        return x, ll, draws, x1, x2, x3

    x, ll, draws, x1, x2, x3 = run(jax.random.key(0))
    assert x.shape == (7, task.x_dim) and x.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(x)))
    assert not np.array_equal(x1, x2)
    np.testing.assert_array_equal(x1, x3)
    if has_ll:
        assert ll.shape == (7,) and ll.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(ll)))
    if has_post:
        assert draws.shape == (50, task.theta_dim) and draws.dtype == jnp.float32
        assert bool(jnp.all(task.prior.support(draws)))


def test_get_unknown_task():
    with pytest.raises(ValueError, match=r"Unknown task 'moons'; expected one of \["):
        tasks.get("moons")


# ------------------------------------------------------------------ simulator vs likelihood

_T = np.linspace(0.0, 1.0, 20)

# theta values away from the prior edges (the score test needs a likelihood smooth in theta),
# and the mean of x under the task's definition
MOMENT_CASES = {
    "gaussian_linear": (np.linspace(-0.5, 0.5, 10), lambda th: th),
    "toy": (np.array([0.3, 0.6, 0.2]), lambda th: th[0] + th[1] * _T + th[2] * _T**2),
    "slcp": (np.array([0.5, -1.0, 1.2, -0.8, 0.3]), lambda th: np.tile(th[:2], 4)),
    "gaussian_mixture": (np.array([1.5, -2.0]), lambda th: th),
}


@pytest.mark.parametrize("name", MOMENT_CASES)
def test_simulator_agrees_with_likelihood_and_definition(name):
    """Bartlett's identities tie the simulator to the likelihood.

    Under x ~ simulator(theta): E[grad log p(x | theta)] = 0 (a wrong mean or location in either
    one breaks it) and E[(d_i log p)^2 + d_i^2 log p] = 0 (the information identity; a wrong
    noise scale or correlation breaks it). The mean of x is also checked against the task's
    definition.
    """
    task = tasks.get(name)
    theta_np, mean_fn = MOMENT_CASES[name]
    theta = jnp.asarray(theta_np, jnp.float32)
    n = 20_000

    @jax.jit
    def run(key):
        x = jax.vmap(task.simulator, (0, None))(jax.random.split(key, n), theta)
        score = jax.vmap(jax.grad(task.log_likelihood), (None, 0))(theta, x)
        hess = jax.vmap(jax.hessian(task.log_likelihood), (None, 0))(theta, x)
        return x, score, jnp.diagonal(hess, axis1=1, axis2=2)

    x, s, h = (np.asarray(a, np.float64) for a in run(jax.random.key(11)))
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(h))
    num_checks = 2 * task.theta_dim + task.x_dim
    _assert_means_close(s, np.zeros(task.theta_dim), s.std(0), num_checks)
    info = s**2 + h
    _assert_means_close(info, np.zeros(task.theta_dim), info.std(0), num_checks)
    _assert_means_close(x, mean_fn(theta_np), x.std(0), num_checks)


def test_gaussian_mixture_simulator_variance():
    task = tasks.gaussian_mixture()
    n = 20_000
    x = jax.jit(jax.vmap(task.simulator, (0, None)))(jax.random.split(jax.random.key(5), n),
                                                     jnp.zeros(2))
    x = np.asarray(x, np.float64)
    # per coordinate: var = 0.5 * 1 + 0.5 * 0.01, m4 = 0.5 * 3 + 0.5 * 3e-4; the variance
    # estimate's sd is sqrt((m4 - var^2) / n)
    var, m4 = 0.505, 0.5 * 3 + 0.5 * 3 * 0.01**2
    z = (np.mean(x**2, 0) - var) / np.sqrt((m4 - var**2) / n)
    assert np.all(np.abs(z) < _zmax(2)), z


def _two_moons_x_grid(center, half=0.2, step=0.0005):
    u = np.arange(center[0] - 0.05, center[0] + half, step)
    v = np.arange(center[1] - half, center[1] + half, step)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    return np.stack([uu.ravel(), vv.ravel()], -1).astype(np.float32), step**2


def test_two_moons_likelihood_normalised_and_matches_simulator():
    task = tasks.two_moons()
    theta = jnp.array([0.3, -0.6])
    g = np.array([-abs(0.3 - 0.6) / np.sqrt(2), (-0.3 - 0.6) / np.sqrt(2)])
    grid, cell = _two_moons_x_grid(g + [0.25, 0.0])
    dens = np.exp(np.asarray(jax.vmap(task.log_likelihood, (None, 0))(theta, grid), np.float64))
    total = dens.sum() * cell
    assert abs(total - 1.0) < 1e-2, total
    mean = (dens[:, None] * grid).sum(0) * cell / total
    sd = np.sqrt((dens[:, None] * (grid - mean) ** 2).sum(0) * cell / total)
    n = 20_000
    x = jax.vmap(task.simulator, (0, None))(jax.random.split(jax.random.key(2), n), theta)
    _assert_means_close(x, mean, sd)
    # a half moon: all simulated x lie on the side u > 0 of the centre
    assert float(jnp.min(x[:, 0] - g[0] - 0.25)) > -0.01


# ----------------------------------------------------------------------------- exact posteriors


def test_gaussian_linear_posterior_matches_conjugate_formula():
    task = tasks.gaussian_linear()
    d = 10
    x = np.asarray(task.simulator(jax.random.key(0), task.prior.sample(jax.random.key(1))),
                   np.float64)
    # conjugate normal-normal update with full matrices, float64
    prior_cov, noise_cov = 0.1 * np.eye(d), 0.1 * np.eye(d)
    post_cov = np.linalg.inv(np.linalg.inv(prior_cov) + np.linalg.inv(noise_cov))
    post_mean = post_cov @ np.linalg.inv(noise_cov) @ x
    post = task.posterior(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(post.mean, post_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(post.variance, np.diag(post_cov), rtol=1e-5)
    pts = np.asarray(post.sample(jax.random.key(2), (5,)), np.float64)
    ref = stats.multivariate_normal(post_mean, post_cov).logpdf(pts)
    np.testing.assert_allclose(post.log_prob(jnp.asarray(pts, jnp.float32)), ref, rtol=1e-5)
    # Bayes: log post = log lik + log prior - log evidence, evidence N(x; 0, prior + noise cov)
    log_ev = stats.multivariate_normal(np.zeros(d), prior_cov + noise_cov).logpdf(x)
    pts32 = jnp.asarray(pts, jnp.float32)
    rhs = (jax.vmap(task.log_likelihood, (0, None))(pts32, jnp.asarray(x, jnp.float32))
           + task.prior.log_prob(pts32) - log_ev)
    np.testing.assert_allclose(post.log_prob(pts32), rhs, rtol=1e-4, atol=1e-4)
    draws = task.sample_posterior(jax.random.key(3), jnp.asarray(x, jnp.float32), 10_000)
    _assert_means_close(draws, post_mean, np.sqrt(np.diag(post_cov)))


def test_two_moons_sample_posterior_matches_grid_posterior():
    task = tasks.two_moons()
    theta_true = jnp.array([0.3, -0.6])
    x = task.simulator(jax.random.key(4), theta_true)
    step = 0.0012
    axis = np.arange(-1 + step / 2, 1, step)
    tt = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
    lp = np.asarray(jax.jit(jax.vmap(task.log_likelihood, (0, None)))(tt, x), np.float64)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    ref = {"theta": tt, "theta^2": tt**2, "theta1*theta2": tt[:, :1] * tt[:, 1:]}
    draws = np.asarray(
        jax.jit(task.sample_posterior, static_argnums=2)(jax.random.key(5), x, 20_000), np.float64
    )
    assert not np.isnan(draws).any() and np.all(np.abs(draws) <= 1)
    feats = {"theta": draws, "theta^2": draws**2, "theta1*theta2": draws[:, :1] * draws[:, 1:]}
    for k, f in ref.items():
        mean = (w[:, None] * f).sum(0)
        sd = np.sqrt((w[:, None] * (f - mean) ** 2).sum(0))
        _assert_means_close(feats[k], mean, sd, num_checks=5)
    # both moons present: the posterior is symmetric in the sign of theta1 + theta2
    s = draws.sum(1)
    frac = (s > 0).mean()
    grid_frac = w[tt.sum(1) > 0].sum()
    assert abs(frac - grid_frac) < _zmax(1) * np.sqrt(grid_frac * (1 - grid_frac) / len(s))


def test_slcp_log_likelihood_matches_scipy():
    task = tasks.slcp()
    key = jax.random.key(6)
    thetas = task.prior.sample(key, (20,))
    xs = jax.vmap(task.simulator)(jax.random.split(key, 20), thetas)
    ours = np.asarray(jax.vmap(task.log_likelihood)(thetas, xs), np.float64)
    for th, x, ll in zip(np.asarray(thetas, np.float64), np.asarray(xs, np.float64), ours,
                         strict=True):
        s1, s2, rho = th[2] ** 2, th[3] ** 2, np.tanh(th[4])
        cov = np.array([[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]]) + 1e-6 * np.eye(2)
        ref = stats.multivariate_normal(th[:2], cov).logpdf(x.reshape(4, 2)).sum()
        assert abs(ll - ref) < 1e-4 * max(1.0, abs(ref)) + 1e-3, (th, ll, ref)


def test_gaussian_mixture_posterior_is_normalised_bayes():
    task = tasks.gaussian_mixture()
    x = np.array([9.5, -9.8])  # near a corner, so truncation reweights the components
    xj = jnp.asarray(x, jnp.float32)
    log_post = jax.jit(lambda x, t: task.posterior(x).log_prob(t))
    # evidence computed independently: (1/400) * sum_k 0.5 * prod_i P(-10 < N(x_i, s_k) < 10)
    mass = [np.prod(stats.norm.cdf((10 - x) / s) - stats.norm.cdf((-10 - x) / s))
            for s in (1.0, 0.1)]
    log_ev = np.log(0.5 * mass[0] + 0.5 * mass[1]) - np.log(400.0)
    pts = np.concatenate([
        x + np.random.default_rng(0).normal(size=(20, 2)) * 0.3,
        np.array([[0.0, 0.0], [9.9, -9.9]]),
    ]).astype(np.float32)
    pts = pts[np.all(np.abs(pts) <= 10, axis=1)]
    rhs = jax.jit(lambda t: jax.vmap(task.log_likelihood, (0, None))(t, xj)
                  + task.prior.log_prob(t))(pts) - log_ev
    np.testing.assert_allclose(log_post(xj, pts), rhs, rtol=1e-4, atol=1e-4)
    assert log_post(xj, jnp.array([[10.5, 0.0]]))[0] == -np.inf
    # draws: mean of the truncated mixture, from scipy's truncnorm per component
    w = np.array([0.5 * mass[0], 0.5 * mass[1]])
    w /= w.sum()
    comp_means, comp_vars = [], []
    for s in (1.0, 0.1):
        a, b = (-10 - x) / s, (10 - x) / s
        comp_means.append(stats.truncnorm.mean(a, b, loc=x, scale=s))
        comp_vars.append(stats.truncnorm.var(a, b, loc=x, scale=s))
    mean = w @ np.array(comp_means)
    var = w @ (np.array(comp_vars) + np.array(comp_means) ** 2) - mean**2
    draws = jax.jit(task.sample_posterior, static_argnums=2)(jax.random.key(7), xj, 20_000)
    assert bool(jnp.all(jnp.abs(draws) <= 10))
    _assert_means_close(draws, mean, np.sqrt(var))
    narrow = np.mean(np.all(np.abs(np.asarray(draws) - x) < 0.5, axis=1))  # ~all of comp 2
    p = w[1] * 1.0 + w[0] * np.prod([
        (stats.norm.cdf(min(0.5, 10 - xi)) - stats.norm.cdf(max(-0.5, -10 - xi)))
        / (stats.norm.cdf(10 - xi) - stats.norm.cdf(-10 - xi)) for xi in x])
    assert abs(narrow - p) < _zmax(1) * np.sqrt(p * (1 - p) / 20_000), (narrow, p)


def test_toy_sample_posterior_matches_grid_posterior():
    task = tasks.toy()
    theta_true = jnp.array([0.05, 0.9, 0.5])  # near the box edge: rejection truncation matters
    x = task.simulator(jax.random.key(8), theta_true)
    step = np.array([0.004, 0.02, 0.02])  # posterior sds are about (0.026, 0.12, 0.12)
    axes = [np.arange(h / 2, 1, h) for h in step]
    tt = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    tt = tt.astype(np.float32)
    lp = np.asarray(jax.jit(jax.vmap(task.log_likelihood, (0, None)))(tt, x), np.float64)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    mean = w @ tt
    sd = np.sqrt(w @ (tt - mean) ** 2)
    draws = jax.jit(task.sample_posterior, static_argnums=2)(jax.random.key(9), x, 20_000)
    assert bool(jnp.all(task.prior.support(draws)))
    _assert_means_close(draws, mean, sd)
    # the grid resolves the posterior (several cells per posterior sd)
    assert np.all(sd > 3 * step), sd


def test_rejection_sample_marks_failure_with_nan():
    out = tasks.rejection_sample(
        jax.random.key(0), lambda k, m: jax.random.normal(k, (m, 2)),
        lambda t: jnp.zeros(t.shape[0], bool), 4, 2, max_rounds=3,
    )
    assert out.shape == (4, 2) and bool(jnp.all(jnp.isnan(out)))
