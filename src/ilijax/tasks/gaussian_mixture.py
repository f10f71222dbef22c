"""Gaussian mixture task (sbibm ``gaussian_mixture``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import logsumexp, ndtr

from ilijax.priors import uniform
from ilijax.tasks._base import RestrictedToBox, Task

__all__ = ["gaussian_mixture"]

_BOUND = 10.0
_SCALES = (1.0, 0.1)
_WEIGHTS = (0.5, 0.5)


def gaussian_mixture() -> Task:
    """Mixture of two Gaussians with a shared mean and different widths.

    Prior ``U(-10, 10)^2``; ``x | theta ~ 0.5 N(theta, I) + 0.5 N(theta, 0.01 I)``.

    Because the likelihood depends on ``x - theta`` only and is symmetric, the posterior is the
    same mixture centred at ``x``, truncated to the prior box. Truncation reweights the
    components: ``w_k ∝ 0.5 Z_k`` with
    ``Z_k = prod_i [Phi((10 - x_i) / s_k) - Phi((-10 - x_i) / s_k)]``, each component a product
    of truncated normals.

    Returns:
        A :class:`~ilijax.tasks.Task` with exact ``log_likelihood``, ``posterior`` and
        ``sample_posterior``.

    References:
        Sisson, Fan, Tanaka, "Sequential Monte Carlo without likelihoods", PNAS 2007.
        Lueckmann et al., "Benchmarking Simulation-Based Inference", AISTATS 2021 (sbibm task
        ``gaussian_mixture``).
    """
    prior = uniform([-_BOUND] * 2, [_BOUND] * 2)
    log_w = jnp.log(jnp.array(_WEIGHTS, jnp.float32))

    def simulator(key, theta):
        theta = jnp.asarray(theta, jnp.float32)
        kc, kn = jax.random.split(key)
        scale = jnp.where(jax.random.bernoulli(kc, _WEIGHTS[1]), _SCALES[1], _SCALES[0])
        return theta + scale * jax.random.normal(kn, (2,), jnp.float32)

    def log_likelihood(theta, x):
        lps = jnp.stack([dist.Normal(theta, s).to_event(1).log_prob(x) for s in _SCALES])
        return logsumexp(log_w + lps)

    def posterior(x):
        x = jnp.asarray(x, jnp.float32)
        comps, log_z = [], []
        for s in _SCALES:
            mass = ndtr((_BOUND - x) / s) - ndtr((-_BOUND - x) / s)
            log_z.append(jnp.sum(jnp.log(mass)))
            comps.append(dist.TruncatedNormal(x, s, low=-_BOUND, high=_BOUND).to_event(1))
        mixing = dist.Categorical(logits=log_w + jnp.stack(log_z))
        low = jnp.full((2,), -_BOUND, jnp.float32)
        return RestrictedToBox(dist.MixtureGeneral(mixing, comps), low, -low)

    def sample_posterior(key, x, num_samples):
        return posterior(x).sample(key, (num_samples,))

    return Task("gaussian_mixture", prior, simulator, 2, 2, log_likelihood, posterior,
                sample_posterior, ("theta_1", "theta_2"))
