"""Point predictions and central intervals against the truth."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ilijax.diagnostics._common import check_draws, check_truth
from ilijax.diagnostics.results import PredictionsResult

Array = jax.Array

__all__ = ["predictions"]

_QUANTILES = (0.025, 0.16, 0.5, 0.84, 0.975)


@jax.jit
def _predictions(s, t):
    mean = jnp.mean(s, axis=1)
    std = jnp.std(s, axis=1, ddof=1) if s.shape[1] > 1 else jnp.zeros_like(mean)
    q = jnp.quantile(s, jnp.asarray(_QUANTILES), axis=1)  # (5, n, d)
    lo95, lo68, med, hi68, hi95 = q
    err = mean - t
    return PredictionsResult(
        truth=t,
        mean=mean,
        std=std,
        median=med,
        lo68=lo68,
        hi68=hi68,
        lo95=lo95,
        hi95=hi95,
        rmse=jnp.sqrt(jnp.mean(err**2, axis=0)),
        bias=jnp.mean(err, axis=0),
        inside68=jnp.mean((t >= lo68) & (t <= hi68), axis=0),
        inside95=jnp.mean((t >= lo95) & (t <= hi95), axis=0),
    )


def predictions(samples: Any, theta: Any) -> PredictionsResult:
    """Posterior mean, standard deviation and central intervals per parameter, with the RMSE of
    the mean and the fraction of truths inside the central 68% and 95% intervals (ltu-ili's
    ``predictions`` plot, as numbers). For a calibrated posterior the fractions are near 0.68
    and 0.95.

    Args:
        samples: ``(n_test, S, d)`` posterior draws.
        theta: ``(n_test, d)`` true parameters.

    Returns:
        A :class:`~ilijax.diagnostics.PredictionsResult`.
    """
    s = check_draws(samples)
    t = check_truth(theta, s.shape[0], s.shape[2])
    return _predictions(s, t)
