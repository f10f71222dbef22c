"""Posterior predictive checks: simulate from posterior draws, see where the data fall."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ilijax._checks import check_key
from ilijax.diagnostics._common import check_draws
from ilijax.diagnostics.results import PredictiveResult
from ilijax.simulate import run_simulator

Array = jax.Array

__all__ = ["posterior_predictive", "predictive_pvalues"]


@jax.jit
def predictive_pvalues(x_pred: Array, x_obs: Array) -> tuple[Array, Array]:
    """Two-sided per-dimension predictive p-values and z-scores.

    Args:
        x_pred: ``(..., m, x_dim)`` simulations from posterior draws.
        x_obs: ``(..., x_dim)`` observations.

    Returns:
        ``(pvalue, zscore)``, each ``(..., x_dim)``; ``pvalue`` is
        ``min(1, 2 min(P(x_pred <= x_obs), P(x_pred >= x_obs)))`` (ties count on both sides).
    """
    below = jnp.mean(x_pred <= x_obs[..., None, :], axis=-2)
    above = jnp.mean(x_pred >= x_obs[..., None, :], axis=-2)
    p = jnp.minimum(1.0, 2.0 * jnp.minimum(below, above))
    mu = jnp.mean(x_pred, axis=-2)
    sd = jnp.std(x_pred, axis=-2)
    z = (x_obs - mu) / jnp.where(sd > 0, sd, jnp.inf)
    return p, z


def posterior_predictive(
    key: Array,
    posterior: Any,
    simulator: Callable[..., Any],
    x_obs: Any,
    *,
    num_samples: int = 1000,
    samples: Any = None,
    kind: str = "auto",
    batch_size: int = 10_000,
    progress: bool = False,
) -> PredictiveResult:
    """Posterior predictive check: does the observation look like data simulated from its
    posterior? (Gelman, Meng & Stern 1996, "Posterior predictive assessment of model fitness
    via realized discrepancies", Statistica Sinica 6.)

    Each posterior draw is pushed through the simulator; per data dimension the result reports
    where ``x_obs`` falls among the simulations as a two-sided p-value and a z-score. Small
    p-values flag dimensions the model (or the posterior) cannot reproduce. They are
    conservative: the observation was used to form the posterior, so even for a correct model
    and posterior they concentrate towards 1 rather than being uniform. For a batch of
    observations, all draws of all observations are simulated together.

    Args:
        key: PRNG key (posterior draws and simulator noise).
        posterior: Object with ``sample(key, x, num_samples)`` (ignored if ``samples`` given).
        simulator: ``(key, theta) -> x`` JAX simulator for one theta, or a numpy batch
            simulator ``(theta_batch) -> x_batch`` (see :func:`ilijax.simulate`).
        x_obs: ``(x_dim,)`` one observation, or ``(b, x_dim)`` several.
        num_samples: Posterior draws (and simulations) per observation.
        samples: Optional precomputed draws, ``(m, d)`` or ``(b, m, d)``.
        kind: Simulator kind, ``"auto"``, ``"jax"`` or ``"numpy"``.
        batch_size: Simulations per simulator call.
        progress: Progress bar over simulator batches.

    Returns:
        A :class:`~ilijax.diagnostics.PredictiveResult`.
    """
    key = check_key(key)
    xo = jnp.asarray(x_obs, jnp.float32)
    if xo.ndim not in (1, 2):
        raise ValueError(f"Expected x_obs of shape (x_dim,) or (b, x_dim); got {xo.shape}")
    single = xo.ndim == 1
    xb = xo[None] if single else xo
    k_post, k_sim = jax.random.split(key)
    if samples is None:
        draws = posterior.sample(k_post, xb, int(num_samples))
    else:
        draws = jnp.asarray(samples, jnp.float32)
        draws = draws[None] if (single and draws.ndim == 2) else draws
    draws = check_draws(draws, "samples")
    if draws.shape[0] != xb.shape[0]:
        raise ValueError(
            f"Expected samples for {xb.shape[0]} observations; got shape {draws.shape}"
        )
    b, m, d = draws.shape
    x_pred = run_simulator(
        k_sim, simulator, draws.reshape(b * m, d), batch_size=batch_size, kind=kind,
        progress=progress,
    )
    x_pred = jnp.asarray(x_pred, jnp.float32).reshape(b, m, -1)
    if x_pred.shape[-1] != xb.shape[-1]:
        raise ValueError(
            f"Expected the simulator to return x of dimension {xb.shape[-1]} like x_obs; got "
            f"{x_pred.shape[-1]}"
        )
    bad = ~jnp.all(jnp.isfinite(x_pred), axis=-1)
    nbad = int(jnp.sum(bad))
    if nbad:
        raise ValueError(
            f"Expected finite simulations; got {nbad} of {b * m} with NaN or inf"
        )
    p, z = predictive_pvalues(x_pred, xb)
    if single:
        return PredictiveResult(x_pred[0], xb[0], p[0], z[0])
    return PredictiveResult(x_pred, xb, p, z)
