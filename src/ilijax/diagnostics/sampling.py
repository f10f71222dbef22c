"""Posterior draws for a whole test set in one call."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ilijax._checks import check_int, check_key
from ilijax.diagnostics._common import check_draws

Array = jax.Array

__all__ = ["sample_test_set"]


def sample_test_set(
    key: Array, posterior: Any, x_test: Any, num_samples: int, **sampler_options: Any
) -> Array:
    """Draws ``num_samples`` posterior samples for every test observation at once.

    The posterior does the batching: an NPE :class:`~ilijax.Posterior` samples the whole test
    set in one vectorised program (split over devices where there are several); a posterior
    that samples by MCMC receives the ``sampler_options`` and runs its chains for all
    observations together. Nothing here loops over observations.

    Args:
        key: PRNG key; observation ``i`` uses ``jax.random.split(key, n_test)[i]`` for an NPE
            posterior, so the draws do not depend on how the test set is chunked.
        posterior: Any object with ``sample(key, x, num_samples, **options)`` that returns
            ``(n_test, num_samples, theta_dim)`` for a batch ``x`` of shape ``(n_test, x_dim)``.
        x_test: ``(n_test, x_dim)`` observations (or ``(n_test, *x_shape)``).
        num_samples: Draws per observation.
        **sampler_options: Passed on to ``posterior.sample`` (e.g. ``chunk_size``).

    Returns:
        ``(n_test, num_samples, theta_dim)`` float32 draws.

    Raises:
        ValueError: If ``x_test`` is not 2-D or holds NaN/inf (the message names the
            observations), ``num_samples`` is not an int >= 1, or the posterior returns another
            shape or non-finite draws.

    Examples:
        >>> import jax, ilijax
        >>> task = ilijax.tasks.gaussian_linear(dim=2)
        >>> class Exact:
        ...     def sample(self, key, x, n):
        ...         keys = jax.random.split(key, x.shape[0])
        ...         return jax.vmap(lambda k, xi: task.sample_posterior(k, xi, n))(keys, x)
        >>> sample_test_set(jax.random.key(0), Exact(), jax.numpy.zeros((5, 2)), 100).shape
        (5, 100, 2)
    """
    key = check_key(key)
    if not hasattr(posterior, "sample"):
        raise ValueError(
            f"Expected posterior to have a sample(key, x, num_samples) method; got "
            f"{type(posterior).__name__}"
        )
    x = jnp.asarray(x_test, jnp.float32)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(
            f"Expected x_test of shape (n_test, x_dim) or (n_test, *x_shape) with n_test >= 1; "
            f"got {x.shape}"
        )
    num_samples = check_int("num_samples", num_samples, 1)
    finite = np.isfinite(np.asarray(x)).reshape(x.shape[0], -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        raise ValueError(
            f"Expected finite values in x_test; got NaN or inf in {bad.size} of {finite.size} "
            f"observations (indices {', '.join(map(str, bad[:10]))}{more})"
        )
    draws = posterior.sample(key, x, num_samples, **sampler_options)
    draws = jnp.asarray(draws)
    if draws.ndim != 3 or draws.shape[:2] != (x.shape[0], int(num_samples)):
        raise ValueError(
            f"Expected posterior.sample to return ({x.shape[0]}, {int(num_samples)}, theta_dim) "
            f"for x_test of shape {x.shape}; got {draws.shape}"
        )
    return check_draws(draws, "posterior draws")
