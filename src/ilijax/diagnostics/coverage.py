"""Expected coverage of highest-posterior-density (HPD) regions."""

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
from ilijax.diagnostics.kde import kde_log_prob
from ilijax.diagnostics.results import CoverageResult

Array = jax.Array

__all__ = ["expected_coverage", "hpd_credibility"]


@jax.jit
def _count_denser(lp_samples, lp_truth):
    # The truth's rank: draws whose log-density exceeds the truth's. +-inf are ordered as
    # numbers (a truth at -inf, outside the posterior's support, is less dense than every draw).
    # NaN has no order; it is counted against coverage, never for it: a NaN draw counts as
    # denser than its truth, and a NaN truth as less dense than all its draws (outside every HPD
    # region below level 1).
    nan_s, nan_t = jnp.isnan(lp_samples), jnp.isnan(lp_truth)
    denser = (lp_samples > lp_truth[:, None]) | nan_s | nan_t[:, None]
    count = jnp.sum(denser, axis=1, dtype=jnp.int32)
    bad_s, bad_t = ~jnp.isfinite(lp_samples), ~jnp.isfinite(lp_truth)
    tally = jnp.stack([
        jnp.sum(bad_s), jnp.sum(nan_s), jnp.sum(bad_t), jnp.sum(nan_t),
        jnp.sum(jnp.any(bad_s, axis=1) | bad_t),
    ]).astype(jnp.int32)
    return count, tally


def _warn_nonfinite(tally, n: int, num: int) -> None:
    bad_s, nan_s, bad_t, nan_t, obs = (int(v) for v in np.asarray(tally))
    if not obs:
        return
    import warnings

    warnings.warn(
        f"hpd_credibility: non-finite log-densities in {obs} of {n} test observations: "
        f"{bad_s} of {n * num} draws ({nan_s} NaN) and {bad_t} of {n} truths ({nan_t} NaN). "
        "NaN is counted against coverage (a NaN draw as denser than its truth, a NaN truth as "
        "outside every HPD region); +-inf are ordered as numbers (a truth at -inf lies outside "
        "the posterior's support)",
        RuntimeWarning,
        stacklevel=3,
    )


def hpd_credibility(
    samples: Any,
    theta: Any,
    *,
    posterior: Any = None,
    x: Any = None,
    log_prob_samples: Any = None,
    log_prob_truth: Any = None,
) -> tuple[Array, str]:
    """Per test pair, the credibility level of the smallest HPD region holding the truth.

    That is ``(k + 1/2) / (S + 1)`` with ``k`` the number of draws whose posterior density
    exceeds the truth's. The density comes from, in order: ``log_prob_samples`` and
    ``log_prob_truth`` if given; ``posterior.log_prob(theta, x)`` if the posterior has one (a
    density up to a constant per observation is enough: only the order matters); otherwise a
    Gaussian kernel density estimate from the draws (:func:`~ilijax.diagnostics.kde_log_prob`).

    Non-finite log-densities. ``+-inf`` are ordered as numbers: a truth at ``-inf`` (outside the
    posterior's support) is less dense than every finite draw, so it lies outside every HPD region
    below level 1. NaN has no order, and is never counted in the posterior's favour: a NaN draw
    counts as denser than its truth and a NaN truth as less dense than all its draws (credibility
    ``(S + 1/2) / (S + 1)``), which can only lower the coverage curve. Dropping the affected
    observations instead would leave a selected, no longer representative test set. Either way a
    ``RuntimeWarning`` counts the non-finite draws and truths (NaN among them) and the test
    observations they are in.

    Returns:
        ``(credibility (n_test,), method)`` with method ``"exact"`` or ``"kde"``.
    """
    s = check_draws(samples)
    n, num, d = s.shape
    t = check_truth(theta, n, d)
    if (log_prob_samples is None) != (log_prob_truth is None):
        raise ValueError("Expected both log_prob_samples and log_prob_truth, or neither")
    if log_prob_samples is not None:
        lps = jnp.asarray(log_prob_samples, jnp.float32)
        lpt = jnp.asarray(log_prob_truth, jnp.float32)
        if lps.shape != (n, num) or lpt.shape != (n,):
            raise ValueError(
                f"Expected log_prob_samples of shape ({n}, {num}) and log_prob_truth of shape "
                f"({n},); got {lps.shape} and {lpt.shape}"
            )
        method = "exact"
    elif posterior is not None and callable(getattr(posterior, "log_prob", None)):
        if x is None:
            raise ValueError("Expected x (the test observations) with a posterior")
        lps = posterior.log_prob(s, x)
        lpt = posterior.log_prob(t, x)
        method = "exact"
    else:
        if num < 2:
            raise ValueError(f"Expected at least 2 draws per observation for a KDE; got {num}")
        lps = kde_log_prob(s)
        lpt = kde_log_prob(s, t[:, None, :])[:, 0]
        method = "kde"
    count, tally = _count_denser(lps, lpt)
    _warn_nonfinite(tally, n, num)
    return pit(count, num), method


def expected_coverage(
    key: Array,
    samples: Any,
    theta: Any,
    *,
    posterior: Any = None,
    x: Any = None,
    log_prob_samples: Any = None,
    log_prob_truth: Any = None,
    levels: Any = 101,
    bootstrap: int = 200,
    band: float = 0.95,
) -> CoverageResult:
    """Expected coverage of HPD regions at every credibility level (Hermans et al. 2022).

    For a calibrated posterior, the truth falls inside the HPD region of level ``l`` for a
    fraction ``l`` of the test pairs, at every ``l``. Over-confident posteriors cover less than
    ``l`` (the curve lies below the diagonal) and conservative ones more. This is the test of
    Hermans, Delaunoy, Rozet, Wehenkel, Begy & Louppe, "A Trust Crisis In Simulation-Based
    Inference? Your Posterior Approximations Can Be Unfaithful", TMLR 2022 (arXiv:2110.06581).

    Args:
        key: PRNG key of the bootstrap.
        samples: ``(n_test, S, d)`` posterior draws.
        theta: ``(n_test, d)`` true parameters.
        posterior: Optional posterior with ``log_prob(theta, x)`` (broadcasting
            ``(n_test, S, d)`` with ``(n_test, x_dim)``) to rank the draws by exact density.
            Without one (or for a sample-only posterior), a kernel density estimate ranks them.
        x: ``(n_test, x_dim)`` observations (needed with ``posterior``).
        log_prob_samples: Optional precomputed ``(n_test, S)`` log-densities of the draws.
        log_prob_truth: Optional precomputed ``(n_test,)`` log-densities of the truths.
        levels: Number of evenly spaced levels in ``[0, 1]`` (>= 2) or an explicit 1-D grid of
            strictly increasing levels in ``[0, 1]``.
        bootstrap: Bootstrap resamples of the test pairs for the band (0: binomial band).
        band: Probability mass of the band.

    Returns:
        A :class:`~ilijax.diagnostics.CoverageResult`.

    Warns:
        RuntimeWarning: If log-densities of draws or truths are NaN or infinite, with their
            counts; NaN is counted against coverage (see :func:`hpd_credibility`).
    """
    key = check_key(key)
    check_band(band, bootstrap)
    lv = check_levels(levels)
    cred, method = hpd_credibility(
        samples, theta, posterior=posterior, x=x, log_prob_samples=log_prob_samples,
        log_prob_truth=log_prob_truth,
    )
    emp, lo, hi = coverage_curve(key, cred, lv, bootstrap, band)
    diff = np.asarray(emp, np.float64) - np.asarray(lv, np.float64)
    return CoverageResult(
        levels=lv,
        empirical=emp,
        lower=lo,
        upper=hi,
        credibility=cred,
        error=float(np.mean(np.abs(diff))),
        bias=float(np.mean(diff)),
        ks_pvalue=float(ks_uniform_pvalue(cred)),
        method=method,
    )
