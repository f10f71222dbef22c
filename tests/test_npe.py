"""NPE end to end on tasks with known posteriors, ensembles, bad input, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import ilijax
from ilijax.estimators import maf, mdn

NUM_DRAWS = 2000


@pytest.fixture(scope="module")
def gaussian_linear_fit():
    """NPE ensemble (2 MAFs) on 10,000 simulations of the 10-d conjugate Gaussian task."""
    task = ilijax.tasks.gaussian_linear()
    data = ilijax.simulate(jax.random.key(0), task.prior, task.simulator, 10_000, progress=False)
    post, info = ilijax.npe(jax.random.key(1), data.theta, data.x, prior=task.prior,
                            estimator=maf(hidden=32, transforms=2), ensemble=2,
                            batch_size=128, max_epochs=300, patience=10, progress=False)
    test = ilijax.simulate(jax.random.key(2), task.prior, task.simulator, 200, progress=False)
    draws = post.sample(jax.random.key(3), test.x, NUM_DRAWS)
    return task, post, info, test, draws


def hpd_ranks(post, theta, x, draws, num=500):
    """Share of posterior draws denser than the true parameter (HPD expected coverage, Hermans
    et al. 2022): for a calibrated posterior it is uniform on [0, 1]."""
    lp_true = post.log_prob(theta[:, None, :], x)[:, 0]
    lp_draws = post.log_prob(draws[:, :num], x)
    return np.asarray(jnp.mean(lp_draws > lp_true[:, None], axis=1))


def test_posterior_matches_analytic_gaussian(gaussian_linear_fit):
    task, post, _, test, draws = gaussian_linear_fit
    n = NUM_DRAWS
    for i in range(4):
        exact = task.posterior(test.x[i])
        mu, sd = np.asarray(exact.mean), np.sqrt(np.asarray(exact.variance))
        s = np.asarray(draws[i])
        assert np.all(np.isfinite(s))
        # Monte Carlo bound (4 standard errors) plus an allowance for the network's own error,
        # both in units of the exact posterior deviation.
        z_mean = np.abs(s.mean(0) - mu) / sd
        assert np.all(z_mean < 4 / np.sqrt(n) + 0.2), z_mean
        ratio = s.std(0) / sd
        assert np.all(np.abs(ratio - 1) < 4 / np.sqrt(2 * n) + 0.12), ratio
        # The exact posterior covariance is diagonal: no spurious correlations.
        corr = np.corrcoef(s.T)[np.triu_indices(task.theta_dim, 1)]
        assert np.all(np.abs(corr) < 4 / np.sqrt(n) + 0.1), corr


def test_expected_coverage_positive_and_negative_control(gaussian_linear_fit):
    _, post, _, test, draws = gaussian_linear_fit
    m = test.theta.shape[0]
    levels = np.array([0.2, 0.5, 0.68, 0.9, 0.95])
    bound = 4 * np.sqrt(levels * (1 - levels) / m)
    ranks = hpd_ranks(post, test.theta, test.x, draws)
    coverage = np.array([(ranks < a).mean() for a in levels])
    assert np.all(np.abs(coverage - levels) < bound), coverage
    assert stats.kstest(ranks, "uniform").pvalue > 1e-3

    # Negative control: the same draws shrunk by 0.5 about their mean (an over-confident
    # posterior). Its density ordering at theta equals q's at mean + (theta - mean) / 0.5.
    mean = jnp.mean(draws, axis=1)
    theta_pulled = mean + (test.theta - mean) / 0.5
    bad = hpd_ranks(post, theta_pulled, test.x, draws)
    bad_cov = np.array([(bad < a).mean() for a in levels])
    assert np.all(bad_cov[1:] < levels[1:] - bound[1:]), bad_cov


def test_ensemble_mixture_and_members(gaussian_linear_fit):
    _, post, info, test, draws = gaussian_linear_fit
    assert post.num_members == 2 and info.epoch_traces == 1
    np.testing.assert_allclose(post.weights.sum(), 1.0, rtol=1e-12)
    # softmax of the held-out log-likelihood
    w = np.exp(-info.best_validation_loss - np.max(-info.best_validation_loss))
    np.testing.assert_allclose(post.weights, w / w.sum(), rtol=1e-6)
    theta, x = draws[0, :5], test.x[0]
    members = jax.vmap(post.member_log_prob, in_axes=(0, None))(theta, x)  # (5, 2)
    expected = jax.nn.logsumexp(members + jnp.log(post.weights), axis=1)
    np.testing.assert_allclose(post.log_prob(theta, x), expected, rtol=1e-5, atol=1e-5)
    # Members trained from different keys differ.
    p = post.groups[0].params
    leaf = jax.tree.leaves(p["net"])[-1]
    assert not np.allclose(np.asarray(leaf[0]), np.asarray(leaf[1]))
    assert not np.allclose(members[:, 0], members[:, 1])


def test_batch_sampling_equals_per_observation(gaussian_linear_fit):
    _, post, _, test, _ = gaussian_linear_fit
    key = jax.random.key(11)
    x = test.x[:3]
    batch = post.sample(key, x, 64)
    assert batch.shape == (3, 64, 10) and batch.dtype == jnp.float32
    keys = jax.random.split(key, 3)
    for i in range(3):
        one = post.sample(keys[i], x[i], 64)
        np.testing.assert_allclose(np.asarray(one), np.asarray(batch[i]), rtol=1e-5, atol=1e-5)
    # chunked evaluation gives the same draws
    chunked = post.sample(key, x, 64, chunk_size=1)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(batch), rtol=1e-5, atol=1e-5)
    # log_prob broadcasting
    assert post.log_prob(batch, x).shape == (3, 64)
    assert post.log_prob(batch[0], x[0]).shape == (64,)
    assert post.log_prob(batch[:, 0], x).shape == (3,)


def test_save_load_round_trip(gaussian_linear_fit, tmp_path):
    _, post, _, test, _ = gaussian_linear_fit
    path = ilijax.save(post, tmp_path / "post")
    assert path.name == "post.npz" and not list(tmp_path.glob("*.tmp"))
    loaded = ilijax.load(path)
    key = jax.random.key(5)
    a = post.sample(key, test.x[:4], 100)
    b = loaded.sample(key, test.x[:4], 100)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(post.log_prob(a, test.x[:4])),
                                  np.asarray(loaded.log_prob(a, test.x[:4])))
    np.testing.assert_array_equal(loaded.weights, post.weights)
    assert loaded.labels == post.labels


@pytest.fixture(scope="module")
def moons_data():
    task = ilijax.tasks.two_moons()
    data = ilijax.simulate(jax.random.key(0), task.prior, task.simulator, 600, progress=False)
    return task, data


def test_same_key_same_params_and_samples_stay_in_support(moons_data):
    task, data = moons_data
    kw = dict(prior=task.prior, estimator=[mdn(hidden=16, components=3)], ensemble=2,
              max_epochs=3, patience=None, progress=False)
    a, _ = ilijax.npe(jax.random.key(4), data.theta, data.x, **kw)
    b, _ = ilijax.npe(jax.random.key(4), data.theta, data.x, **kw)
    for x, y in zip(jax.tree.leaves(a.groups[0].params), jax.tree.leaves(b.groups[0].params),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # A barely trained posterior is wide: without the support bijection many draws would leave
    # the box [-1, 1]^2. None may.
    s = np.asarray(a.sample(jax.random.key(1), data.x[:20], 500))
    assert np.all(np.abs(s) <= 1.0)
    assert float(a.log_prob(jnp.array([1.5, 0.0]), data.x[0])) == -np.inf


def test_heterogeneous_ensemble_and_stacking(moons_data):
    task, data = moons_data
    post, info = ilijax.npe(
        jax.random.key(0), data.theta, data.x, prior=task.prior,
        estimator=[mdn(hidden=16, components=3), maf(hidden=16, transforms=2)], ensemble=1,
        weighting="stacking", max_epochs=3, patience=None, progress=False)
    assert len(post.groups) == 2 and info.group.tolist() == [0, 1]
    assert info.epoch_traces == 1
    assert np.all(post.weights >= 0) and np.isclose(post.weights.sum(), 1.0)
    assert post.sample(jax.random.key(0), data.x[0], 10).shape == (10, 2)


def test_bad_input_is_reported(moons_data):
    task, data = moons_data
    kw = dict(prior=task.prior, estimator=mdn(hidden=8, components=2), max_epochs=1,
              progress=False)
    theta, x = np.asarray(data.theta), np.asarray(data.x)
    with pytest.raises(ValueError, match="same number of rows"):
        ilijax.npe(jax.random.key(0), theta, x[:-1], **kw)
    with pytest.raises(ValueError, match="rank 2"):
        ilijax.npe(jax.random.key(0), theta[:, 0], x, **kw)
    with pytest.raises(ValueError, match="outside the prior support"):
        ilijax.npe(jax.random.key(0), theta * 3.0, x, **kw)
    with pytest.raises(ValueError, match="at least 10 rows"):
        ilijax.npe(jax.random.key(0), theta[:5], x[:5], **kw)
    with pytest.raises(ValueError, match="2 columns"):
        ilijax.npe(jax.random.key(0), np.concatenate([theta, theta], 1), x, **kw)
    with pytest.raises(ValueError, match="weighting"):
        ilijax.npe(jax.random.key(0), theta, x, weighting="best", **kw)
    x_nan = x.copy()
    x_nan[[3, 7, 9]] = np.nan
    with pytest.warns(UserWarning, match="dropped 3 of 600 rows"):
        post, _ = ilijax.npe(jax.random.key(0), theta, x_nan, **kw)
    with pytest.raises(ValueError, match=r"x of shape \(2,\) or \(batch, 2\)"):
        post.sample(jax.random.key(0), x[:2, :1], 10)
