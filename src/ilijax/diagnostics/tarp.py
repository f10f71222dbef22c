"""TARP: Tests of Accuracy with Random Points."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ilijax._checks import check_key
from ilijax.diagnostics._common import (
    check_band,
    check_draws,
    check_levels,
    check_truth,
    coverage_curve,
    ks_uniform_pvalue,
    pit,
)
from ilijax.diagnostics.results import TARPResult

Array = jax.Array

__all__ = ["tarp"]


@jax.jit
def _tarp_counts(samples, theta, references):
    d_truth = jnp.sqrt(jnp.sum((theta - references) ** 2, axis=-1))  # (n,)
    d_draws = jnp.sqrt(jnp.sum((samples - references[:, None, :]) ** 2, axis=-1))  # (n, S)
    return jnp.sum(d_draws < d_truth[:, None], axis=1, dtype=jnp.int32)


def tarp(
    key: Array,
    samples: Any,
    theta: Any,
    *,
    references: Any = None,
    normalize: bool = True,
    levels: Any = 101,
    bootstrap: int = 200,
    band: float = 0.95,
) -> TARPResult:
    """The TARP coverage test (Lemos, Coogan, Hezaveh & Perreault-Levasseur 2023).

    For each test pair a random reference point ``r`` is drawn; the credibility of the truth is
    the fraction of posterior draws closer to ``r`` than the truth (euclidean distance). For a
    posterior that equals the true one, it is uniform whatever the reference distribution, so
    the expected coverage probability ``ECP(alpha) = P(credibility < alpha)`` is the diagonal
    (Lemos et al., "Sampling-Based Accuracy Testing of Posterior Estimators for General
    Inference", ICML 2023, arXiv:2302.03026). Unlike HPD coverage it needs no density.

    Args:
        key: PRNG key for the references and the bootstrap.
        samples: ``(n_test, S, d)`` posterior draws.
        theta: ``(n_test, d)`` true parameters.
        references: Optional ``(n_test, d)`` reference points in parameter space. By default
            one per test pair, uniform over the bounding box of the (normalised) true values,
            as sbi's ``get_tarp_references``.
        normalize: Z-score draws, truths and references with the mean and standard deviation
            of the true values, so that every parameter counts on the same scale.
        levels: Number of evenly spaced levels in ``[0, 1]`` (>= 2) or an explicit grid of at
            least 2 strictly increasing levels in ``[0, 1]``.
        bootstrap: Bootstrap resamples of the test pairs for the band (0: binomial band).
        band: Probability mass of the band.

    Returns:
        A :class:`~ilijax.diagnostics.TARPResult`. ``atc`` follows sbi's ``check_tarp``
        (``sum((ecp - alpha)[L // 2:]) * dalpha``, the signed area between the curve and the
        diagonal over the upper half of the levels), and the KS p-value tests the per-pair
        credibilities for uniformity (sbi's compares the two curves instead).

    Raises:
        ValueError: For bad shapes, non-finite draws or truths, or levels that are not a grid of
            at least 2 strictly increasing levels in ``[0, 1]``; the message names the field.
    """
    key = check_key(key)
    check_band(band, bootstrap)
    # ATC sums (ECP - alpha) times the grid step over the upper half of the levels: one level
    # has no step (sbi returns 0.0, "calibrated", for it)
    lv = check_levels(levels, min_levels=2, why=" for TARP's ATC (it needs a grid step)")
    s = check_draws(samples)
    n, num, d = s.shape
    t = check_truth(theta, n, d)
    k_ref, k_boot = jax.random.split(key)
    if normalize:
        mu = jnp.mean(t, axis=0)
        sd = jnp.std(t, axis=0)
        sd = jnp.where(sd > 0, sd, 1.0)
    else:
        mu, sd = jnp.zeros(d), jnp.ones(d)
    s_n, t_n = (s - mu) / sd, (t - mu) / sd
    if references is None:
        lo, hi = jnp.min(t_n, axis=0), jnp.max(t_n, axis=0)
        refs = jax.random.uniform(k_ref, (n, d), minval=lo, maxval=hi)
    else:
        refs = check_truth(references, n, d, name="references")
        refs = (refs - mu) / sd
    cred = pit(_tarp_counts(s_n, t_n, refs), num)
    ecp, lo_b, hi_b = coverage_curve(k_boot, cred, lv, bootstrap, band)
    lv_np, ecp_np = np.asarray(lv, np.float64), np.asarray(ecp, np.float64)
    return TARPResult(
        levels=lv,
        ecp=ecp,
        lower=lo_b,
        upper=hi_b,
        credibility=cred,
        atc=_atc(lv_np, ecp_np),
        ks_pvalue=float(ks_uniform_pvalue(cred)),
    )


def _atc(levels: np.ndarray, ecp: np.ndarray) -> float:
    """sbi's area to curve: ``sum((ecp - alpha)[L // 2:] * dalpha)`` (``dalpha`` the grid
    step; for an uneven grid, each level's step to the next)."""
    mid = levels.size // 2
    step = np.diff(levels, append=levels[-1] + (levels[-1] - levels[-2]))
    return float(np.sum((ecp[mid:] - levels[mid:]) * step[mid:]))
