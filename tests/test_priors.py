"""Priors: densities against scipy, support bijections, serialisation, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import stats

from ilijax import priors

PRIORS = {
    "uniform": lambda: priors.uniform([0.0, -1.0], [1.0, 3.0]),
    "normal": lambda: priors.normal([0.0, 1.0], [1.0, 2.0]),
    "multivariate_normal": lambda: priors.multivariate_normal([0.0, 1.0],
                                                              [[1.0, 0.5], [0.5, 2.0]]),
    "log_uniform": lambda: priors.log_uniform([1.0, 0.1], [10.0, 100.0]),
    "truncated_normal": lambda: priors.truncated_normal(0.0, 1.0, [-1.0, 0.0], [2.0, 3.0]),
    "independent": lambda: priors.independent(
        [dist.Uniform(0.0, 1.0), dist.LogNormal(0.0, 0.5), priors.normal(0.0, 2.0)]),
}


def scipy_logpdf(name, t):
    t = np.asarray(t, np.float64)
    if name == "uniform":
        return stats.uniform(0, 1).logpdf(t[0]) + stats.uniform(-1, 4).logpdf(t[1])
    if name == "normal":
        return stats.norm(0, 1).logpdf(t[0]) + stats.norm(1, 2).logpdf(t[1])
    if name == "multivariate_normal":
        return stats.multivariate_normal([0, 1], [[1, 0.5], [0.5, 2]]).logpdf(t)
    if name == "log_uniform":
        return stats.loguniform(1, 10).logpdf(t[0]) + stats.loguniform(0.1, 100).logpdf(t[1])
    if name == "truncated_normal":
        return stats.truncnorm(-1, 2).logpdf(t[0]) + stats.truncnorm(0, 3).logpdf(t[1])
    return (stats.uniform(0, 1).logpdf(t[0]) + stats.lognorm(0.5).logpdf(t[1])
            + stats.norm(0, 2).logpdf(t[2]))


@pytest.mark.parametrize("name", PRIORS)
def test_density_support_and_bijection(name):
    prior = PRIORS[name]()
    d = prior.event_shape[0]
    draws = prior.sample(jax.random.key(0), (500,))
    assert draws.shape == (500, d) and draws.dtype == jnp.float32
    assert bool(jnp.all(prior.support(draws)))
    for t in draws[:5]:
        np.testing.assert_allclose(float(prior.log_prob(t)), scipy_logpdf(name, t), rtol=1e-4,
                                   atol=1e-4)
    bij = priors.support_bijector(prior)
    u = 3.0 * jax.random.normal(jax.random.key(1), (200, d))
    theta = bij(u)
    assert bool(jnp.all(prior.support(theta)))
    np.testing.assert_allclose(bij.inv(theta[:20]), u[:20], rtol=1e-3, atol=1e-3)
    # log|det J| against autodiff
    for ui in u[:5] / 3.0:
        jac = jax.jacfwd(bij)(ui)
        np.testing.assert_allclose(bij.log_abs_det_jacobian(ui, bij(ui)),
                                   jnp.linalg.slogdet(jac)[1], atol=1e-4)


@pytest.mark.parametrize("name", PRIORS)
def test_spec_round_trip(name):
    prior = PRIORS[name]()
    spec = priors.prior_to_spec(prior)
    again = priors.prior_from_spec(spec)
    t = prior.sample(jax.random.key(3), (10,))
    np.testing.assert_array_equal(np.asarray(prior.log_prob(t)), np.asarray(again.log_prob(t)))
    assert type(again.support) is type(prior.support)


def test_mixed_support_maps_each_coordinate():
    prior = PRIORS["independent"]()
    theta = priors.support_bijector(prior)(jnp.array([-30.0, -30.0, -30.0]))
    assert 0.0 <= float(theta[0]) < 1e-6 and 0.0 < float(theta[1]) < 1e-6
    np.testing.assert_allclose(float(theta[2]), -30.0)
    assert not bool(prior.support(jnp.array([0.5, -1.0, 0.0])))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: priors.uniform([0.0, 1.0], [1.0, 0.5]), "high > low"),
        (lambda: priors.uniform([0.0, 0.0, 0.0], [1.0, 1.0]), "length 1 or 3"),
        (lambda: priors.normal(0.0, -1.0), "scale > 0"),
        (lambda: priors.normal([[0.0]], 1.0), "scalar or 1-D"),
        (lambda: priors.log_uniform(0.0, 1.0), "0 < low < high"),
        (lambda: priors.multivariate_normal([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]]),
         "positive definite"),
        (lambda: priors.multivariate_normal([0.0, 0.0], np.eye(3)), r"shape \(2, 2\)"),
        (lambda: priors.uniform(0.0, np.inf), "finite"),
        (lambda: priors.independent([dist.Normal(jnp.zeros(2), 1.0)]), "scalar numpyro"),
        (lambda: priors.validate_prior(dist.Normal(0.0, 1.0)), "event_shape"),
        (lambda: priors.validate_prior("uniform"), "numpyro Distribution"),
    ],
)
def test_bad_priors_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()
