"""Ensemble weights shared by the inference methods."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

WEIGHTINGS = ("softmax", "uniform", "stacking")


def stacking_weights(member_log_probs: jax.Array, num_iterations: int = 500) -> np.ndarray:
    """Mixture weights that maximise the held-out log score ``sum_i log sum_k w_k q_k(i)``.

    Solved by the EM fixed point ``w_k <- mean_i r_ik`` with responsibilities
    ``r_ik = w_k q_k(i) / sum_j w_j q_j(i)``; the objective is concave in ``w`` so this converges
    to the global optimum on the simplex (Yao et al. 2018, "Using stacking to average Bayesian
    predictive distributions", Bayesian Analysis).

    Args:
        member_log_probs: ``(n, num_members)`` held-out log-densities.
        num_iterations: EM iterations.

    Returns:
        ``(num_members,)`` weights summing to one.
    """
    lp = jnp.asarray(member_log_probs, jnp.float32)
    lp = jnp.where(jnp.isfinite(lp), lp, -1e30)
    k = lp.shape[1]

    def body(_, logw):
        joint = lp + logw
        resp = joint - jax.nn.logsumexp(joint, axis=1, keepdims=True)
        return jax.nn.logsumexp(resp, axis=0) - jnp.log(lp.shape[0])

    logw = jax.lax.fori_loop(0, num_iterations, body, jnp.full((k,), -jnp.log(k)))
    w = np.asarray(jnp.exp(logw), np.float64)
    return w / w.sum()


def ensemble_weights(
    weighting: str,
    best_validation_loss: np.ndarray,
    diverged: np.ndarray,
    member_log_probs: jax.Array | None = None,
) -> np.ndarray:
    """Weights of the members from their validation results.

    Args:
        weighting: ``"softmax"`` (ltu-ili's: ``softmax(-best validation loss)``, i.e. of the mean
            held-out log-likelihood), ``"uniform"``, or ``"stacking"`` (see
            :func:`stacking_weights`; needs ``member_log_probs``).
        best_validation_loss: ``(K,)`` mean held-out negative log-likelihood per member.
        diverged: ``(K,)`` members stopped by a NaN loss; they get weight 0 and a warning.
        member_log_probs: ``(n_val, K)`` held-out log-densities, for stacking.

    Returns:
        ``(K,)`` non-negative weights summing to one.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"Expected weighting in {WEIGHTINGS}; got {weighting!r}")
    loss = np.asarray(best_validation_loss, np.float64)
    usable = np.isfinite(loss)
    if diverged is not None and np.any(diverged):
        warnings.warn(
            f"{int(np.sum(diverged))} of {loss.size} ensemble members hit a NaN/inf loss and were "
            f"stopped; they keep their best params"
            + ("" if np.all(usable) else f" ({int(np.sum(~usable))} never improved: weight 0)"),
            RuntimeWarning,
            stacklevel=3,
        )
    if not usable.any():
        raise RuntimeError(
            "Every ensemble member diverged before its first finite validation loss; lower the "
            "learning rate or check the data"
        )
    if weighting == "uniform":
        w = usable.astype(np.float64)
    elif weighting == "softmax":
        z = np.where(usable, -loss, -np.inf)
        w = np.exp(z - z[usable].max())
    else:
        if member_log_probs is None:
            raise ValueError("Expected member_log_probs for weighting='stacking'; got None")
        lp = np.asarray(member_log_probs)
        lp = np.where(usable[None, :], lp, -np.inf)
        w = stacking_weights(lp)
        w = np.where(usable, w, 0.0)
    return w / w.sum()
