"""Gaussian linear task (sbibm ``gaussian_linear``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from ilijax.priors import normal
from ilijax.tasks._base import Task

__all__ = ["gaussian_linear"]


def gaussian_noise(noise_sd: float):
    """``x = theta + noise_sd * eps``: the simulator ``(key, theta) -> x`` and its exact
    log-likelihood ``(theta, x) -> log N(x; theta, noise_sd^2 I)``, shared by the Gaussian linear
    tasks."""

    def simulator(key, theta):
        theta = jnp.asarray(theta, jnp.float32)
        return theta + noise_sd * jax.random.normal(key, theta.shape, jnp.float32)

    def log_likelihood(theta, x):
        return dist.Normal(theta, noise_sd).to_event(1).log_prob(x)

    return simulator, log_likelihood


def gaussian_linear(*, dim: int = 10, prior_var: float = 0.1, noise_var: float = 0.1) -> Task:
    """Conjugate Gaussian: ``theta ~ N(0, prior_var I)``, ``x | theta ~ N(theta, noise_var I)``.

    The posterior is Gaussian with variance ``v = 1 / (1/prior_var + 1/noise_var)`` and mean
    ``v x / noise_var`` (with the sbibm values, ``N(x / 2, 0.05 I)``).

    Args:
        dim: Number of parameters (= data dimension); sbibm uses 10.
        prior_var: Prior variance per parameter.
        noise_var: Noise variance per data dimension.

    Returns:
        A :class:`~ilijax.tasks.Task` with exact ``log_likelihood``, ``posterior`` and
        ``sample_posterior``.

    Examples:
        >>> task = gaussian_linear()
        >>> task.simulator(jax.random.key(0), jnp.zeros(10)).shape
        (10,)

    References:
        Lueckmann et al., "Benchmarking Simulation-Based Inference", AISTATS 2021 (sbibm task
        ``gaussian_linear``).
    """
    if dim < 1 or prior_var <= 0 or noise_var <= 0:
        raise ValueError(
            f"Expected dim >= 1, prior_var > 0, noise_var > 0; got {dim}, {prior_var}, "
            f"{noise_var}"
        )
    noise_sd = float(noise_var) ** 0.5
    post_var = 1.0 / (1.0 / prior_var + 1.0 / noise_var)
    prior = normal(jnp.zeros(dim), float(prior_var) ** 0.5)

    simulator, log_likelihood = gaussian_noise(noise_sd)

    def posterior(x):
        loc = jnp.asarray(x, jnp.float32) * (post_var / noise_var)
        return dist.Normal(loc, jnp.full((dim,), post_var**0.5, jnp.float32)).to_event(1)

    def sample_posterior(key, x, num_samples):
        return posterior(x).sample(key, (num_samples,))

    labels = tuple(f"theta_{i + 1}" for i in range(dim))
    return Task("gaussian_linear", prior, simulator, dim, dim, log_likelihood, posterior,
                sample_posterior, labels)
