"""A small 3-parameter demo task in the spirit of ltu-ili's toy example."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ilijax.priors import uniform
from ilijax.tasks._base import Task, rejection_sample

__all__ = ["toy"]


def toy(*, num_points: int = 20, noise: float = 0.05) -> Task:
    """A noisy quadratic curve: ``x_i = theta0 + theta1 t_i + theta2 t_i^2 + noise * eps_i``.

    Prior ``U(0, 1)^3``; ``t`` is ``num_points`` evenly spaced points on ``[0, 1]``, ``eps_i``
    i.i.d. standard normal. The model is linear-Gaussian, ``x = A theta + noise * eps``, so the
    posterior is ``N(mu, noise^2 (A^T A)^-1)`` with ``mu = (A^T A)^-1 A^T x``, truncated to the
    box; ``sample_posterior`` draws it exactly by rejection.

    Args:
        num_points: Length of ``x``.
        noise: Standard deviation of the noise.

    Returns:
        A :class:`~ilijax.tasks.Task` with exact ``log_likelihood`` and ``sample_posterior``.

    References:
        Ho et al., "LtU-ILI: An All-in-One Framework for Implicit Inference in Astrophysics and
        Cosmology", OJAp 2024 (toy example).
    """
    if num_points < 3 or noise <= 0:
        raise ValueError(f"Expected num_points >= 3 and noise > 0; got {num_points}, {noise}")
    t = jnp.linspace(0.0, 1.0, num_points, dtype=jnp.float32)
    design = jnp.stack([jnp.ones_like(t), t, t**2], axis=-1)  # (num_points, 3)
    gram_inv = jnp.linalg.inv(design.T @ design)
    chol = jnp.linalg.cholesky(gram_inv) * noise
    prior = uniform(0.0, jnp.ones(3))

    def simulator(key, theta):
        theta = jnp.asarray(theta, jnp.float32)
        return design @ theta + noise * jax.random.normal(key, (num_points,), jnp.float32)

    def log_likelihood(theta, x):
        r = (x - design @ theta) / noise
        return -0.5 * jnp.sum(r**2) - num_points * (math.log(noise) + 0.5 * math.log(2 * math.pi))

    def sample_posterior(key, x, num_samples):
        mu = gram_inv @ (design.T @ jnp.asarray(x, jnp.float32))

        def propose(k, m):
            return mu + jax.random.normal(k, (m, 3), jnp.float32) @ chol.T

        def accept(theta):
            return jnp.all((theta >= 0.0) & (theta <= 1.0), axis=-1)

        return rejection_sample(key, propose, accept, num_samples, 3)

    return Task("toy", prior, simulator, 3, num_points, log_likelihood, None, sample_posterior,
                ("offset", "slope", "curvature"))
