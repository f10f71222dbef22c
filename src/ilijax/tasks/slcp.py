"""Simple likelihood, complex posterior (sbibm ``slcp``)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ilijax.priors import uniform
from ilijax.tasks._base import Task

__all__ = ["slcp"]

_NUM_DRAWS = 4
_EPS = 1e-6  # sbibm adds 1e-6 to the covariance diagonal


def _moments(theta):
    """Mean, Cholesky factor and covariance of one 2-D draw."""
    m = theta[:2]
    s1, s2 = theta[2] ** 2, theta[3] ** 2
    rho = jnp.tanh(theta[4])
    c00, c01, c11 = s1**2 + _EPS, rho * s1 * s2, s2**2 + _EPS
    l00 = jnp.sqrt(c00)
    l10 = c01 / l00
    l11 = jnp.sqrt(jnp.maximum(c11 - l10**2, 0.0))
    chol = jnp.array([[l00, 0.0], [l10, l11]])
    cov = jnp.array([[c00, c01], [c01, c11]])
    return m, chol, cov


def slcp() -> Task:
    """SLCP: a 5-parameter Gaussian likelihood whose posterior has four symmetric modes.

    Prior ``U(-3, 3)^5``. With ``m = (theta1, theta2)``, ``s1 = theta3^2``, ``s2 = theta4^2``,
    ``rho = tanh(theta5)`` and ``S = [[s1^2, rho s1 s2], [rho s1 s2, s2^2]] + 1e-6 I`` (sbibm's
    diagonal jitter), ``x`` is 4 i.i.d. draws from ``N(m, S)``, concatenated to length 8.

    Returns:
        A :class:`~ilijax.tasks.Task` with exact ``log_likelihood``; ``posterior`` and
        ``sample_posterior`` are None (sbibm's reference draws come from MCMC).

    References:
        Papamakarios, Sterratt, Murray, "Sequential Neural Likelihood", AISTATS 2019.
        Lueckmann et al., "Benchmarking Simulation-Based Inference", AISTATS 2021 (sbibm task
        ``slcp``).
    """
    prior = uniform([-3.0] * 5, [3.0] * 5)

    def simulator(key, theta):
        theta = jnp.asarray(theta, jnp.float32)
        m, chol, _ = _moments(theta)
        z = jax.random.normal(key, (_NUM_DRAWS, 2), jnp.float32)
        return (m + z @ chol.T).reshape(-1)

    def log_likelihood(theta, x):
        m, _, cov = _moments(theta)
        det = cov[0, 0] * cov[1, 1] - cov[0, 1] ** 2
        r = x.reshape(_NUM_DRAWS, 2) - m
        # quadratic form with the closed-form 2x2 inverse
        quad = (cov[1, 1] * r[:, 0] ** 2 - 2 * cov[0, 1] * r[:, 0] * r[:, 1]
                + cov[0, 0] * r[:, 1] ** 2) / det
        return jnp.sum(-0.5 * quad - 0.5 * jnp.log(det) - math.log(2 * math.pi))

    labels = tuple(f"theta_{i + 1}" for i in range(5))
    return Task("slcp", prior, simulator, 5, 2 * _NUM_DRAWS, log_likelihood, None, None, labels)
