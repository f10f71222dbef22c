"""Result types of the diagnostics: NamedTuples of arrays with documented fields.

They live in one module because three consumers share them: the diagnostics that produce them,
:mod:`ilijax.plots` that draws them and :func:`ilijax.diagnostics.validate` that writes their
scalars to ``metrics.json``. Every field is an array (or a Python scalar / string); a result is a
pytree, so it can be returned from ``jax.jit``-ed code, and ``np.asarray`` works on each field.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

Array = jax.Array

__all__ = [
    "CoverageResult",
    "LogProbResult",
    "PredictionsResult",
    "PredictiveResult",
    "SBCResult",
    "TARPResult",
]


class SBCResult(NamedTuple):
    """Simulation-based calibration (Talts et al. 2018): marginal ranks of the truths.

    Attributes:
        ranks: ``(n_test, d)`` int, the number of posterior draws strictly below the true value,
            per parameter; in ``{0, ..., num_samples}`` and uniform when calibrated.
        num_samples: Draws per test observation, ``S``.
        ks_pvalue: ``(d,)`` Kolmogorov-Smirnov p-value of the ranks against uniformity.
        chi2_pvalue: ``(d,)`` chi-square p-value of the rank histogram against uniformity.
        histogram: ``(bins, d)`` rank counts per bin.
        expected: ``(bins,)`` expected counts per bin under uniformity (bins may differ in width
            by one rank when ``S + 1`` is not a multiple of ``bins``).
        bin_edges: ``(bins + 1,)`` integer rank edges; bin ``j`` holds ranks in
            ``[bin_edges[j], bin_edges[j + 1])``.
    """

    ranks: Array
    num_samples: int
    ks_pvalue: Array
    chi2_pvalue: Array
    histogram: Array
    expected: Array
    bin_edges: Array


class CoverageResult(NamedTuple):
    """Expected coverage of highest-posterior-density regions (Hermans et al. 2022).

    Attributes:
        levels: ``(L,)`` credibility levels from 0 to 1.
        empirical: ``(L,)`` fraction of test truths inside the HPD region of each level;
            equals ``levels`` for a calibrated posterior.
        lower: ``(L,)`` lower end of the bootstrap band of ``empirical`` (``1 - band`` / 2).
        upper: ``(L,)`` upper end of the bootstrap band.
        credibility: ``(n_test,)`` per test pair, the level of the smallest HPD region that
            contains the truth (the fraction of draws denser than the truth); uniform on
            ``[0, 1]`` when calibrated.
        error: Expected coverage error, ``mean_L |empirical - level|`` (0 is perfect, 0.5 the
            worst).
        bias: ``mean_L (empirical - level)``: positive means conservative (regions too wide),
            negative over-confident.
        ks_pvalue: Kolmogorov-Smirnov p-value of ``credibility`` against uniformity.
        method: ``"exact"`` (the posterior's normalised ``log_prob`` ranks the draws) or ``"kde"``
            (a kernel density estimate from the draws does).
    """

    levels: Array
    empirical: Array
    lower: Array
    upper: Array
    credibility: Array
    error: float
    bias: float
    ks_pvalue: float
    method: str


class TARPResult(NamedTuple):
    """Tests of Accuracy with Random Points (Lemos et al. 2023).

    Attributes:
        levels: ``(L,)`` credibility levels ``alpha`` from 0 to 1.
        ecp: ``(L,)`` expected coverage probability at each level; equals ``levels`` when
            calibrated.
        lower: ``(L,)`` lower end of the bootstrap band of ``ecp``.
        upper: ``(L,)`` upper end of the bootstrap band.
        credibility: ``(n_test,)`` per test pair, the fraction of draws closer to the random
            reference point than the truth is; uniform when calibrated.
        atc: Area to curve as sbi's ``check_tarp`` defines it,
            ``sum((ecp - alpha)[L // 2:]) * dalpha``: near 0 when calibrated, negative for
            over-confident posteriors (at most 1/8 in size).
        ks_pvalue: Kolmogorov-Smirnov p-value of ``credibility`` against uniformity.
    """

    levels: Array
    ecp: Array
    lower: Array
    upper: Array
    credibility: Array
    atc: float
    ks_pvalue: float


class LogProbResult(NamedTuple):
    """Log-density of the true parameters under the posterior, per test pair.

    Attributes:
        values: ``(n_test,)`` ``log q(theta_true | x)``.
        mean: Mean over the test set (higher is better; the expected negative loss of NPE).
        sem: Its standard error.
        method: ``"exact"`` (the posterior's normalised density) or ``"kde"`` (an ESTIMATE from
            the draws with a Gaussian kernel; biased low for sharp posteriors).
    """

    values: Array
    mean: float
    sem: float
    method: str


class PredictionsResult(NamedTuple):
    """Point predictions and central intervals against the truth, per parameter.

    Attributes:
        truth: ``(n_test, d)`` true parameters.
        mean: ``(n_test, d)`` posterior means.
        std: ``(n_test, d)`` posterior standard deviations.
        median: ``(n_test, d)`` posterior medians.
        lo68, hi68: ``(n_test, d)`` the 16th and 84th percentiles.
        lo95, hi95: ``(n_test, d)`` the 2.5th and 97.5th percentiles.
        rmse: ``(d,)`` root mean squared error of the posterior mean.
        bias: ``(d,)`` mean of ``mean - truth``.
        inside68: ``(d,)`` fraction of truths inside the central 68% interval.
        inside95: ``(d,)`` fraction of truths inside the central 95% interval.
    """

    truth: Array
    mean: Array
    std: Array
    median: Array
    lo68: Array
    hi68: Array
    lo95: Array
    hi95: Array
    rmse: Array
    bias: Array
    inside68: Array
    inside95: Array


class PredictiveResult(NamedTuple):
    """Posterior predictive check: where each observation falls among simulations from its
    posterior draws.

    Attributes:
        x_pred: ``(..., m, x_dim)`` simulated data, one per posterior draw.
        x_obs: ``(..., x_dim)`` the observations.
        pvalue: ``(..., x_dim)`` two-sided predictive p-value per data dimension,
            ``2 min(P(x_pred <= x_obs), P(x_pred >= x_obs))`` (capped at 1).
        zscore: ``(..., x_dim)`` ``(x_obs - mean(x_pred)) / std(x_pred)``.
    """

    x_pred: Array
    x_obs: Array
    pvalue: Array
    zscore: Array
