"""Diagnostics of trained posteriors, for a whole test set at once.

Every diagnostic is a function of posterior draws ``(n_test, S, d)`` and true parameters
``(n_test, d)`` (plus the posterior's ``log_prob`` where it has one) and returns a NamedTuple of
arrays (:mod:`ilijax.diagnostics.results`); none loops over test observations in Python.
:func:`validate` runs the chosen ones from one shared set of draws and writes the numbers
(``metrics.json``), the plots (PNG), the draws and an arviz netCDF file.
"""

from ilijax.diagnostics.c2st import C2STResult as C2STResult
from ilijax.diagnostics.c2st import c2st as c2st
from ilijax.diagnostics.coverage import expected_coverage as expected_coverage
from ilijax.diagnostics.coverage import hpd_credibility as hpd_credibility
from ilijax.diagnostics.kde import kde_log_prob as kde_log_prob
from ilijax.diagnostics.logprob import log_prob_of_truth as log_prob_of_truth
from ilijax.diagnostics.mmd import mmd as mmd
from ilijax.diagnostics.predictions import predictions as predictions
from ilijax.diagnostics.predictive import posterior_predictive as posterior_predictive
from ilijax.diagnostics.report import ValidationReport as ValidationReport
from ilijax.diagnostics.report import validate as validate
from ilijax.diagnostics.results import CoverageResult as CoverageResult
from ilijax.diagnostics.results import LogProbResult as LogProbResult
from ilijax.diagnostics.results import PredictionsResult as PredictionsResult
from ilijax.diagnostics.results import PredictiveResult as PredictiveResult
from ilijax.diagnostics.results import SBCResult as SBCResult
from ilijax.diagnostics.results import TARPResult as TARPResult
from ilijax.diagnostics.sampling import sample_test_set as sample_test_set
from ilijax.diagnostics.sbc import ranks as ranks
from ilijax.diagnostics.sbc import sbc as sbc
from ilijax.diagnostics.tarp import tarp as tarp

__all__ = [
    "C2STResult",
    "CoverageResult",
    "LogProbResult",
    "PredictionsResult",
    "PredictiveResult",
    "SBCResult",
    "TARPResult",
    "ValidationReport",
    "c2st",
    "expected_coverage",
    "hpd_credibility",
    "kde_log_prob",
    "log_prob_of_truth",
    "mmd",
    "posterior_predictive",
    "predictions",
    "ranks",
    "sample_test_set",
    "sbc",
    "tarp",
    "validate",
]
