"""Gaussian kernel density estimates from posterior draws, for a whole test set at once.

Used where a posterior can only be sampled: the density of the truth (``log_prob_of_truth``) and
the density ranks of highest-posterior-density coverage (``expected_coverage``). The bandwidth
follows Scott's rule with the draws' full covariance, as ``scipy.stats.gaussian_kde`` does:
``H = S^(-2 / (d + 4)) Cov``. Each observation's draws are whitened by the Cholesky factor of
its own ``H``, so the kernel sums are one matrix product per observation; observations are
processed in vectorised chunks (``lax.map``) so that memory stays bounded.

These are estimates: a kernel estimate smooths the posterior, which lowers the density of sharp
posteriors at their mode and raises it in the tails.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["kde_log_prob"]


def _whitening(draws: Array):
    """Cholesky factor of Scott's bandwidth matrix and the log-normaliser of the kernel."""
    s, d = draws.shape
    factor = s ** (-2.0 / (d + 4))
    cov = jnp.cov(draws, rowvar=False).reshape(d, d)
    # a tiny ridge keeps degenerate (e.g. constant) coordinates finite
    cov = cov + 1e-6 * (jnp.trace(cov) / d + 1e-12) * jnp.eye(d)
    chol = jnp.linalg.cholesky(factor * cov)
    log_norm = -jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * d * math.log(2 * math.pi)
    return chol, log_norm


def _log_kde_one(draws: Array, points: Array, leave_one_out: bool) -> Array:
    s = draws.shape[0]
    chol, log_norm = _whitening(draws)
    solve = functools.partial(jax.scipy.linalg.solve_triangular, chol, lower=True)
    zd = solve(draws.T).T  # (S, d)
    zp = solve(points.T).T  # (m, d)
    sq = (jnp.sum(zp**2, 1)[:, None] + jnp.sum(zd**2, 1)[None, :] - 2.0 * zp @ zd.T)
    logk = -0.5 * jnp.maximum(sq, 0.0)
    count = s
    if leave_one_out:  # points are the draws themselves: drop each point's own kernel
        logk = jnp.where(jnp.eye(s, dtype=bool), -jnp.inf, logk)
        count = s - 1
    return jax.nn.logsumexp(logk, axis=1) - math.log(count) + log_norm


@functools.partial(jax.jit, static_argnums=(2, 3))
def _kde_batch(draws, points, leave_one_out, chunk):
    fn = lambda a: _log_kde_one(a[0], a[1], leave_one_out)  # noqa: E731
    return jax.lax.map(fn, (draws, points), batch_size=chunk)


def kde_log_prob(draws: Array, points: Array | None = None, *, chunk_size: int | None = None):
    """Gaussian-KDE log-density of each observation's draws, evaluated at given points.

    Args:
        draws: ``(n_test, S, d)`` posterior draws (``S >= 2``).
        points: ``(n_test, m, d)`` where to evaluate each observation's estimate. ``None``
            evaluates at the draws themselves, leaving each draw's own kernel out (so draws and
            an outside point are compared on equal terms).
        chunk_size: Observations per vectorised chunk (default: about 2^24 kernel terms).

    Returns:
        ``(n_test, m)`` (or ``(n_test, S)``) estimated log-densities.
    """
    draws = jnp.asarray(draws, jnp.float32)
    if draws.ndim != 3 or draws.shape[1] < 2:
        raise ValueError(
            f"Expected draws of shape (n_test, S >= 2, d) for a kernel density estimate; got "
            f"{draws.shape}"
        )
    loo = points is None
    pts = draws if loo else jnp.asarray(points, jnp.float32)
    if pts.ndim != 3 or pts.shape[0] != draws.shape[0] or pts.shape[2] != draws.shape[2]:
        raise ValueError(
            f"Expected points of shape ({draws.shape[0]}, m, {draws.shape[2]}); got {pts.shape}"
        )
    if chunk_size is None:
        chunk_size = max(1, (1 << 24) // (draws.shape[1] * pts.shape[1]))
    return _kde_batch(draws, pts, loo, int(min(chunk_size, draws.shape[0])))
