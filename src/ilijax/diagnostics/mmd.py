"""Maximum mean discrepancy between two sets of draws."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from ilijax.diagnostics._common import check_real

Array = jax.Array

__all__ = ["mmd"]


def _sqdist(a, b):
    return jnp.maximum(
        jnp.sum(a**2, -1)[:, None] + jnp.sum(b**2, -1)[None, :] - 2.0 * a @ b.T, 0.0
    )


def _mmd_one(p, q, bandwidth):
    m, n = p.shape[0], q.shape[0]
    dall = _sqdist(jnp.concatenate([p, q]), jnp.concatenate([p, q]))  # pooled, once
    dpp, dqq, dpq = dall[:m, :m], dall[m:, m:], dall[:m, m:]
    if bandwidth is None:
        # median heuristic: the median pairwise distance of the pooled draws (distinct pairs)
        iu = jnp.triu_indices(m + n, k=1)
        bw = jnp.sqrt(jnp.median(dall[iu]))
    else:
        bw = jnp.asarray(bandwidth, jnp.float32)
    g = 1.0 / (2.0 * bw**2)
    kpp = jnp.exp(-g * dpp)
    kqq = jnp.exp(-g * dqq)
    kpq = jnp.exp(-g * dpq)
    # unbiased U-statistic: drop the diagonal terms of the within-set sums
    tpp = (jnp.sum(kpp) - jnp.trace(kpp)) / (m * (m - 1))
    tqq = (jnp.sum(kqq) - jnp.trace(kqq)) / (n * (n - 1))
    return tpp + tqq - 2.0 * jnp.mean(kpq)


def mmd(samples_p: Any, samples_q: Any, *, bandwidth: float | None = None) -> Array:
    """Unbiased squared MMD with a Gaussian kernel (Gretton et al. 2012).

    ``MMD^2 = E k(p, p') + E k(q, q') - 2 E k(p, q)`` with
    ``k(a, b) = exp(-|a - b|^2 / (2 h^2))``, estimated with the unbiased U-statistic (Gretton,
    Borgwardt, Rasch, Schoelkopf & Smola, "A Kernel Two-Sample Test", JMLR 2012). Its
    expectation is 0 when both sets come from the same distribution (single estimates can be
    slightly negative) and positive otherwise. ``h`` defaults to the median heuristic: the
    median distance between distinct pairs of the pooled draws. Cost is quadratic in the
    number of draws.

    Args:
        samples_p: ``(..., m, d)`` draws (``m >= 2``); ``(m,)`` means ``d == 1``.
        samples_q: ``(..., n, d)`` draws with the same batch shape and ``d``.
        bandwidth: Kernel width ``h``, finite and > 0 (default: median heuristic, per batch
            entry). An infinite ``h`` would make every kernel value 1 and the estimate 0 ("same
            distribution") whatever the draws.

    Returns:
        ``(...)`` squared MMD estimates.

    Raises:
        ValueError: For mismatched shapes, fewer than 2 draws in a set, NaN or inf draws, or a
            bandwidth that is not a finite float > 0; the message names the field.
    """
    p = jnp.asarray(samples_p, jnp.float32)
    q = jnp.asarray(samples_q, jnp.float32)
    p = p[:, None] if p.ndim == 1 else p
    q = q[:, None] if q.ndim == 1 else q
    if p.shape[:-2] != q.shape[:-2] or p.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"Expected samples_p (..., m, d) and samples_q (..., n, d) with the same batch "
            f"shape and d; got {p.shape} and {q.shape}"
        )
    if p.shape[-2] < 2 or q.shape[-2] < 2:
        raise ValueError(f"Expected at least 2 draws in each set; got {p.shape} and {q.shape}")
    bw = None if bandwidth is None else check_real("bandwidth", bandwidth, low=0.0)
    for name, a in (("samples_p", p), ("samples_q", q)):
        if isinstance(a, jax.core.Tracer):
            continue  # inside a trace: values are unknown here
        nbad = int(jnp.sum(~jnp.all(jnp.isfinite(a), axis=-1)))  # only the count leaves
        if nbad:
            raise ValueError(
                f"Expected finite values in {name}; got {nbad} rows with NaN or inf "
                f"(of {math.prod(a.shape[:-1])})"
            )
    batch = p.shape[:-2]
    pb = p.reshape((-1,) + p.shape[-2:])
    qb = q.reshape((-1,) + q.shape[-2:])
    return _mmd_batch(pb, qb, bw).reshape(batch)


@functools.partial(jax.jit, static_argnums=2)
def _mmd_batch(p, q, bandwidth):
    return jax.vmap(lambda a, b: _mmd_one(a, b, bandwidth))(p, q)
