"""Simulation-based calibration: marginal ranks of the true parameters among posterior draws."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from ilijax.diagnostics._common import check_draws, check_truth, ks_uniform_pvalue, pit
from ilijax.diagnostics.results import SBCResult

Array = jax.Array

__all__ = ["ranks", "sbc"]


@jax.jit
def _ranks(samples, theta):
    return jnp.sum(samples < theta[:, None, :], axis=1, dtype=jnp.int32)


def ranks(samples: Any, theta: Any) -> Array:
    """Rank of each true parameter among its posterior draws, per parameter.

    Args:
        samples: ``(n_test, S, d)`` posterior draws.
        theta: ``(n_test, d)`` true parameters.

    Returns:
        ``(n_test, d)`` int32 counts of draws strictly below the truth, in ``{0, ..., S}``.
        For a calibrated posterior they are uniform (Talts et al. 2018).
    """
    s = check_draws(samples)
    t = check_truth(theta, s.shape[0], s.shape[2])
    return _ranks(s, t)


def sbc(samples: Any, theta: Any, *, bins: int | None = None) -> SBCResult:
    """Simulation-based calibration (SBC) with a uniformity test per parameter.

    If each test pair was drawn from the prior and the simulator, the rank of the true value
    among ``S`` draws of a calibrated posterior is uniform on ``{0, ..., S}`` for every parameter
    (Talts, Betancourt, Simpson, Vehtari & Gelman 2018, "Validating Bayesian inference
    algorithms with simulation-based calibration", arXiv:1804.06788). Over-confident
    posteriors pile ranks at both ends (a U shape), under-confident ones in the middle, and
    biased ones at one end.

    Two tests per parameter: Kolmogorov-Smirnov of ``(rank + 1/2) / (S + 1)`` against
    ``U(0, 1)`` (conservative by at most the ``1 / (S + 1)`` discretisation), and chi-square of
    the rank histogram with exact expected counts per bin.

    Args:
        samples: ``(n_test, S, d)`` posterior draws.
        theta: ``(n_test, d)`` true parameters, drawn from the prior.
        bins: Histogram bins (default ``min(20, S + 1, max(2, n_test // 10))``, at least about
            ten expected counts per bin).

    Returns:
        An :class:`~ilijax.diagnostics.SBCResult`.
    """
    s = check_draws(samples)
    n, num, d = s.shape
    t = check_truth(theta, n, d)
    r = _ranks(s, t)
    if bins is None:
        bins = int(min(20, num + 1, max(2, n // 10)))
    if not isinstance(bins, int | np.integer) or not 2 <= bins <= num + 1:
        raise ValueError(f"Expected bins to be an int in [2, S + 1 = {num + 1}]; got {bins!r}")
    edges = np.unique(np.round(np.linspace(0, num + 1, int(bins) + 1)).astype(np.int64))
    r_np = np.asarray(r)
    hist = np.stack([np.histogram(r_np[:, j], bins=edges)[0] for j in range(d)], axis=1)
    expected = n * np.diff(edges) / (num + 1.0)
    chi2 = ((hist - expected[:, None]) ** 2 / expected[:, None]).sum(axis=0)
    chi2_p = stats.chi2.sf(chi2, df=len(edges) - 2)
    ks_p = ks_uniform_pvalue(pit(r, num))
    return SBCResult(
        ranks=r,
        num_samples=int(num),
        ks_pvalue=np.asarray(ks_p),
        chi2_pvalue=np.asarray(chi2_p),
        histogram=hist,
        expected=expected,
        bin_edges=edges,
    )
