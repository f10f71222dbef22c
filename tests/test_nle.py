"""Neural likelihood estimation and MCMC sampling of its posterior over batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ilijax
from ilijax.inference.nle import nle, nle_loss

Z = 4.5


@pytest.fixture(scope="module")
def trained():
    task = ilijax.tasks.gaussian_linear(dim=2)
    data = ilijax.simulate(jax.random.key(0), task.prior, task.simulator, 3000, progress=False)
    post, info = nle(jax.random.key(1), data.theta, data.x, prior=task.prior,
                     estimator=ilijax.estimators.maf(hidden=32, transforms=2),
                     max_epochs=60, patience=10, batch_size=100, progress=False)
    return task, post, info


def test_nle_posterior_matches_the_analytic_posterior(trained):
    task, post, info = trained
    assert post.method == "nle" and post.normalized is False
    # Four fresh observations; the exact posterior is N(x/2, 0.05 I).
    theta0 = task.prior.sample(jax.random.key(5), (4,))
    x = jax.vmap(task.simulator)(jax.random.split(jax.random.key(6), 4), theta0)
    draws, si = post.sample(jax.random.key(7), x, 2000, return_info=True)
    assert draws.shape == (4, 2000, 2) and si.method == "nuts" and si.num_chains == 31
    exact = ilijax.tasks.ExactPosterior(task)
    ref = exact.sample(jax.random.key(8), x, 20_000)
    m_ref, s_ref = np.asarray(ref.mean(1)), np.asarray(ref.std(1))
    m, s = np.asarray(draws.mean(1)), np.asarray(draws.std(1))
    # Bound = Monte Carlo error (from the chains' bulk ESS) + the estimator's error, which we
    # allow to be 0.2 posterior sd in the mean and 20% in the sd (a 3000-simulation flow).
    mc = Z * s_ref / np.sqrt(si.ess)
    assert np.all(np.abs(m - m_ref) < mc + 0.2 * s_ref), (m - m_ref) / s_ref
    assert np.all(np.abs(s / s_ref - 1) < 0.2 + Z / np.sqrt(2 * si.ess)), s / s_ref
    # The parameters are independent a posteriori.
    corr = np.array([np.corrcoef(np.asarray(d).T)[0, 1] for d in draws])
    assert np.all(np.abs(corr) < 0.15 + Z / np.sqrt(si.ess.min(1))), corr
    assert np.all(si.rhat < 1.05), si.rhat


def test_log_prob_is_likelihood_plus_prior(trained):
    task, post, _ = trained
    theta = task.prior.sample(jax.random.key(2), (5,))
    x = jnp.ones(2) * 0.3
    g = post.groups[0]
    member = jax.tree.map(lambda a: a[0], g.params)
    # The one member's term is log q(x | theta) (weights sum to one).
    direct = jax.vmap(g.estimator.log_prob, in_axes=(None, 0, None))(member, theta, x)
    expected = direct + task.prior.log_prob(theta)
    np.testing.assert_allclose(post.log_prob(theta, x), expected, rtol=1e-5, atol=1e-5)
    # Without the prior term it is the learned likelihood, which must match the exact one,
    # log N(x; theta, 0.1 I), up to a constant, at 200 distinct theta where the posterior
    # lives (draws of the exact posterior N(x/2, 0.05 I)). Bound: the estimator error that
    # test_nle_posterior_matches_the_analytic_posterior allows, a posterior mean off by 0.2
    # posterior sd, i.e. a likelihood shifted by delta with |delta_j| = 2 * 0.2 * sqrt(0.05);
    # its log error (x - theta) . delta / 0.1 - const has sd sqrt(0.05 |delta|^2) / 0.1 = 0.28
    # over those theta. (The exact log-likelihood's own sd there is about 0.7.)
    theta = task.posterior(x).sample(jax.random.key(3), (200,))
    learned = np.asarray(post.log_prob(theta, x) - task.prior.log_prob(theta))
    true = np.asarray(jax.vmap(task.log_likelihood, in_axes=(0, None))(theta, x))
    assert np.std(learned - true) < 0.28, (np.std(learned - true), np.std(true))


@pytest.mark.filterwarnings("ignore:.*R-hat > 1.01:RuntimeWarning")  # short test chains
def test_batch_equals_one_observation_at_a_time(trained):
    _, post, _ = trained
    x = jnp.array([[0.1, -0.2], [0.5, 0.4], [-0.3, 0.0]])
    key = jax.random.key(11)
    # Same keys, same chains; vectorising over observations changes float32 rounding only
    # (XLA's batched matmuls sum in another order), which short chains keep tiny.
    opts = dict(num_warmup=10, num_chains=2)
    batch = post.sample(key, x, 16, **opts)
    keys = jax.random.split(key, 3)
    for i in range(3):
        one = post.sample(keys[i], x[i], 16, **opts)
        np.testing.assert_allclose(batch[i], one, rtol=0, atol=1e-3)


@pytest.mark.filterwarnings("ignore:.*R-hat > 1.01:RuntimeWarning")  # short test chains
def test_mcmc_compiles_once_per_shape(trained):
    _, post, _ = trained
    opts = dict(num_warmup=20, num_chains=2)
    x = jnp.array([[0.1, -0.2], [0.5, 0.4]])
    post.sample(jax.random.key(0), x, 10, **opts)
    before = ilijax.posterior.trace_counts()
    post.sample(jax.random.key(1), x + 1.0, 10, **opts)
    # A new posterior of the same structure (the params moved) reuses the program too.
    moved = jax.tree.map(lambda a: a * 1.01 if a.dtype == jnp.float32 else a, post)
    moved.sample(jax.random.key(2), x, 10, **opts)
    # (test_functional_core shows the counter does count a new static shape.)
    assert ilijax.posterior.trace_counts()["mcmc"] == before["mcmc"]


def test_rhat_warning_names_the_observations(trained):
    _, post, _ = trained
    x = jnp.array([[0.1, -0.2], [0.5, 0.4]])
    # No warm-up, fixed small steps, chains from plain prior draws: they cannot agree yet.
    with pytest.warns(RuntimeWarning, match=r"observations have R-hat > 1.01"):
        _, si = post.sample(jax.random.key(3), x, 40, num_warmup=0, init="prior",
                            return_info=True)
    assert si.rhat.shape == (2, 2) and np.nanmax(si.rhat) > 1.01
    assert set(si.idata.children) >= {"posterior", "observed_data", "sample_stats"}
    assert dict(si.idata["posterior"].sizes) == {"chain": 4, "draw": 10, "obs": 2,
                                                 "parameter": 2}


@pytest.mark.filterwarnings("ignore:.*R-hat > 1.01:RuntimeWarning")  # short test chains
def test_save_load_round_trip(trained, tmp_path):
    _, post, _ = trained
    path = ilijax.save(post, tmp_path / "nle.npz")
    back = ilijax.load(path)
    assert back.method == "nle" and back.normalized is False
    theta = jnp.array([[0.1, 0.2], [-0.3, 0.4]])
    x = jnp.array([0.2, 0.1])
    np.testing.assert_allclose(back.log_prob(theta, x), post.log_prob(theta, x), rtol=1e-6)
    opts = dict(num_warmup=20, num_chains=2)
    np.testing.assert_allclose(back.sample(jax.random.key(4), x, 20, **opts),
                               post.sample(jax.random.key(4), x, 20, **opts), rtol=1e-5,
                               atol=1e-6)


def test_errors(trained):
    task, post, _ = trained
    x = jnp.zeros(2)
    with pytest.raises(ValueError, match="no direct sampler"):
        post.sample(jax.random.key(0), x, 10, method="direct")
    with pytest.raises(ValueError, match="method"):
        post.sample(jax.random.key(0), x, 10, method="gibbs")
    with pytest.raises(ValueError, match="init"):
        post.sample(jax.random.key(0), x, 10, init="map")
    with pytest.raises(ValueError, match="num_chains"):
        post.sample(jax.random.key(0), x, 10, num_chains=0)
    with pytest.raises(ValueError, match="num_candidates"):
        post.sample(jax.random.key(0), x, 10, num_chains=8, num_candidates=4)
    theta = np.zeros((10, 2))
    with pytest.raises(ValueError, match="columns"):
        nle(jax.random.key(0), np.zeros((10, 3)), np.zeros((10, 2)), prior=task.prior)
    with pytest.raises(ValueError, match="ensemble"):
        nle(jax.random.key(0), theta, np.zeros((10, 2)), prior=task.prior, ensemble=0)


def test_nle_loss_is_the_mean_negative_log_likelihood():
    est = ilijax.estimators.mdn(components=1, hidden=8)
    theta = jax.random.normal(jax.random.key(0), (6, 2))
    x = theta + 0.1
    params = est.init(jax.random.key(1), x, theta)
    batch = ilijax.Dataset(theta, x)
    expected = -np.mean([est.log_prob(params, x[i], theta[i]) for i in range(6)])
    np.testing.assert_allclose(nle_loss(est)(params, batch, None), expected, rtol=1e-5)
