"""Log-density of the true parameters under the posterior."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ilijax.diagnostics._common import check_draws, check_truth
from ilijax.diagnostics.kde import kde_log_prob
from ilijax.diagnostics.results import LogProbResult

Array = jax.Array

__all__ = ["has_normalized_log_prob", "log_prob_of_truth", "summarize_log_prob"]


def has_normalized_log_prob(posterior: Any) -> bool:
    """Whether ``posterior.log_prob`` is a normalised density (NPE: yes). Posteriors whose
    ``log_prob`` is known only up to a constant (NLE, NRE) set ``normalized = False``."""
    return (
        posterior is not None
        and callable(getattr(posterior, "log_prob", None))
        and bool(getattr(posterior, "normalized", True))
    )


def log_prob_of_truth(
    theta: Any,
    x: Any = None,
    *,
    posterior: Any = None,
    samples: Any = None,
) -> LogProbResult:
    """``log q(theta_true | x)`` for every test pair: exact where possible, else a KDE estimate.

    With a posterior whose ``log_prob`` is normalised (NPE) the values are exact, computed for
    the whole test set in one vectorised call. Otherwise they are estimated from ``samples``
    with a Gaussian kernel (Scott's bandwidth, full covariance) and labelled ``"kde"``; such
    estimates are biased low for sharp posteriors and should be compared only with each other.
    ltu-ili's ``logprob`` metric always fits a KDE per test point, even when the exact density
    is known.

    Args:
        theta: ``(n_test, d)`` true parameters.
        x: ``(n_test, x_dim)`` observations (needed with ``posterior``).
        posterior: Optional posterior with ``log_prob(theta, x)``.
        samples: ``(n_test, S, d)`` draws, used when there is no normalised ``log_prob``.

    Returns:
        A :class:`~ilijax.diagnostics.LogProbResult`.
    """
    if has_normalized_log_prob(posterior):
        t = jnp.asarray(theta, jnp.float32)
        if t.ndim != 2:
            raise ValueError(f"Expected theta of shape (n_test, theta_dim); got {t.shape}")
        if x is None:
            raise ValueError("Expected x (the test observations) with a posterior")
        values = jnp.asarray(posterior.log_prob(t, x))
        method = "exact"
    elif samples is not None:
        s = check_draws(samples)
        t = check_truth(theta, s.shape[0], s.shape[2])
        values = kde_log_prob(s, t[:, None, :])[:, 0]
        method = "kde"
    else:
        raise ValueError(
            "Expected a posterior with a normalised log_prob, or samples for a KDE estimate; "
            "got neither"
        )
    return summarize_log_prob(values, method)


def summarize_log_prob(values: Any, method: str) -> LogProbResult:
    """Mean and standard error of per-pair log-densities; non-finite ones are left out with a
    warning that counts them."""
    v = np.asarray(values, np.float64)
    finite = np.isfinite(v)
    nbad = int((~finite).sum())
    if nbad:
        import warnings

        warnings.warn(
            f"log_prob_of_truth: {nbad} of {v.size} truths have a non-finite log-density "
            "(outside the support?); the mean and sem use the finite ones only",
            stacklevel=3,
        )
    vf = v[finite]
    mean = float(vf.mean()) if vf.size else float("nan")
    sem = float(vf.std(ddof=1) / np.sqrt(vf.size)) if vf.size > 1 else float("nan")
    return LogProbResult(values=values, mean=mean, sem=sem, method=method)
