"""Gaussian linear task with a uniform prior (sbibm ``gaussian_linear_uniform``)."""

from __future__ import annotations

import jax.numpy as jnp
import numpyro.distributions as dist

from ilijax.priors import uniform
from ilijax.tasks._base import RestrictedToBox, Task
from ilijax.tasks.gaussian_linear import gaussian_noise

__all__ = ["gaussian_linear_uniform"]


def gaussian_linear_uniform(*, dim: int = 10, bound: float = 1.0, noise_var: float = 0.1) -> Task:
    """``theta ~ U(-bound, bound)^dim``, ``x | theta ~ N(theta, noise_var I)``.

    The posterior factorises over the dimensions: each ``theta_i`` is ``N(x_i, noise_var)``
    truncated to ``[-bound, bound]`` (the likelihood is symmetric in ``x - theta``, the prior
    flat on the box), so it is exact, normalised and sampled directly.

    Args:
        dim: Number of parameters (= data dimension); sbibm uses 10.
        bound: Half-width of the prior box; sbibm uses 1.
        noise_var: Noise variance per data dimension; sbibm uses 0.1.

    Returns:
        A :class:`~ilijax.tasks.Task` with exact ``log_likelihood``, ``posterior`` and
        ``sample_posterior``.

    Examples:
        >>> task = gaussian_linear_uniform()
        >>> task.posterior(jnp.full(10, 3.0)).sample(jax.random.key(0), (4,)).max() <= 1.0
        Array(True, dtype=bool)

    References:
        Lueckmann et al., "Benchmarking Simulation-Based Inference", AISTATS 2021 (sbibm task
        ``gaussian_linear_uniform``).
    """
    if dim < 1 or bound <= 0 or noise_var <= 0:
        raise ValueError(
            f"Expected dim >= 1, bound > 0, noise_var > 0; got {dim}, {bound}, {noise_var}"
        )
    noise_sd = float(noise_var) ** 0.5
    low = jnp.full((dim,), -float(bound), jnp.float32)
    prior = uniform(low, -low)

    simulator, log_likelihood = gaussian_noise(noise_sd)

    def posterior(x):
        x = jnp.asarray(x, jnp.float32)
        base = dist.TruncatedNormal(x, noise_sd, low=-float(bound), high=float(bound))
        return RestrictedToBox(base.to_event(1), low, -low)

    def sample_posterior(key, x, num_samples):
        return posterior(x).sample(key, (num_samples,))

    labels = tuple(f"theta_{i + 1}" for i in range(dim))
    return Task("gaussian_linear_uniform", prior, simulator, dim, dim, log_likelihood, posterior,
                sample_posterior, labels)
