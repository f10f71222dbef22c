"""The sbi (PyTorch) side of ``speed_mcmc.py``: NLE (MAF) trained and sampled by MCMC the sbi way.

Tested with sbi 0.27.0 on torch 2.13.0 (CPU); the public API used here is ``sbi.inference.NLE``,
``sbi.neural_nets.likelihood_nn``, ``NLE.build_posterior`` (an ``MCMCPosterior``) with its
``sample`` / ``sample_batched`` and ``sbi.utils.BoxUniform``.

The simulations are not made here: ``speed_mcmc.py`` simulates once with ``ilijax.tasks.slcp()``
and hands the very same float32 arrays to both libraries. This module carries the SLCP simulator
and likelihood in numpy (sbibm's definition) only to check that definition against ilijax's
(``check_slcp``), so that both sides are known to model the same task.

torch and sbi are imported lazily so that ``speed_mcmc.py --skip-sbi`` works without them.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
from _sbi_peer import available, setup_threads, versions

__all__ = [
    "MCMC_DEFAULTS",
    "available",
    "build_posterior",
    "check_slcp",
    "sample",
    "setup_threads",
    "slcp_log_likelihood_np",
    "slcp_simulate_np",
    "time_sampling",
    "train_nle",
    "versions",
]

# sbi 0.27.0's defaults for MCMC (``MCMCPosteriorParameters`` and ``MCMCPosterior.__init__``;
# its ``thin=-1`` means 1): what ``NLE().build_posterior()`` samples with unless told otherwise.
MCMC_DEFAULTS: dict[str, Any] = {
    "method": "slice_np_vectorized",
    "num_chains": 20,
    "warmup_steps": 200,
    "thin": 1,
    "init_strategy": "resample",
}


# ----------------------------------------------------------------------------------------------
# SLCP in numpy (sbibm's ``slcp``), to check the definition against ilijax.tasks.slcp()


def _moments_np(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means ``(n, 2)`` and covariances ``(n, 2, 2)`` for ``theta`` ``(n, 5)`` (float64)."""
    theta = np.asarray(theta, np.float64)
    m = theta[:, :2]
    s1, s2 = theta[:, 2] ** 2, theta[:, 3] ** 2
    rho = np.tanh(theta[:, 4])
    cov = np.empty((len(theta), 2, 2))
    cov[:, 0, 0] = s1**2 + 1e-6
    cov[:, 1, 1] = s2**2 + 1e-6
    cov[:, 0, 1] = cov[:, 1, 0] = rho * s1 * s2
    return m, cov


def slcp_simulate_np(rng: np.random.Generator, theta: np.ndarray) -> np.ndarray:
    """sbibm's SLCP simulator: 4 i.i.d. draws of ``N(m(theta), S(theta))``, flattened to (n, 8)."""
    m, cov = _moments_np(theta)
    chol = np.linalg.cholesky(cov)
    z = rng.standard_normal((len(m), 4, 2))
    return (m[:, None, :] + np.einsum("nij,nkj->nki", chol, z)).reshape(len(m), 8)


def slcp_log_likelihood_np(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``log p(x | theta)`` of SLCP for rows of ``theta`` (n, 5) and ``x`` (n, 8), float64."""
    m, cov = _moments_np(theta)
    r = np.asarray(x, np.float64).reshape(len(m), 4, 2) - m[:, None, :]
    det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
    inv = np.linalg.inv(cov)
    quad = np.einsum("nki,nij,nkj->nk", r, inv, r)
    return np.sum(-0.5 * quad - 0.5 * np.log(det)[:, None] - math.log(2 * math.pi), axis=1)


def _mahalanobis_np(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sum over the 4 draws of ``(x_k - m)^T S^{-1} (x_k - m)``: chi2 with 8 d.o.f. under SLCP."""
    m, cov = _moments_np(theta)
    r = np.asarray(x, np.float64).reshape(len(m), 4, 2) - m[:, None, :]
    return np.einsum("nki,nij,nkj->n", r, np.linalg.inv(cov), r)


def check_slcp(theta: np.ndarray, x: np.ndarray, log_lik_ilijax: np.ndarray) -> dict[str, Any]:
    """Checks ilijax's SLCP against this numpy definition on the same simulations.

    (1) ilijax's exact log-likelihood of its own ``(theta, x)`` pairs equals the numpy one (float32
    rounding aside: ill-conditioned covariances, ``|rho| -> 1``, lose digits in float32, so the
    median and the share of pairs off by more than 1% are checked); (2) the Mahalanobis sums of
    ilijax's simulations and of this numpy simulator's (same ``theta``) are both chi2(8): the
    share below chi2(8)'s median (7.344) is 1/2 up to binomial noise (4 standard errors).
    """
    ll_np = slcp_log_likelihood_np(theta, x)
    ll_il = np.asarray(log_lik_ilijax, np.float64)
    rel = np.abs(ll_np - ll_il) / np.maximum(1.0, np.abs(ll_np))
    x_np = slcp_simulate_np(np.random.default_rng(12345), theta)
    median_chi2_8 = 7.3441
    below_il = float(np.mean(_mahalanobis_np(theta, x) < median_chi2_8))
    below_np = float(np.mean(_mahalanobis_np(theta, x_np) < median_chi2_8))
    tol = 4 * 0.5 / math.sqrt(len(theta))
    return {
        "pairs": len(theta),
        "log_lik_median_rel_diff": float(np.median(rel)),
        "log_lik_share_off_by_1pct": float(np.mean(rel > 1e-2)),
        "log_lik_agrees": bool(np.median(rel) < 1e-4 and np.mean(rel > 1e-2) < 0.01),
        "share_below_chi2_8_median_ilijax": below_il,
        "share_below_chi2_8_median_numpy": below_np,
        "simulators_agree": bool(abs(below_il - 0.5) < tol and abs(below_np - 0.5) < tol),
    }


# ----------------------------------------------------------------------------------------------
# training


def train_nle(
    theta: np.ndarray,
    x: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    *,
    batch_size: int,
    epochs: int,
    hidden: int = 50,
    transforms: int = 5,
    learning_rate: float = 5e-4,
    clip_max_norm: float = 5.0,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Trains one sbi NLE (MAF likelihood) for exactly ``epochs`` epochs; returns (NLE, timings).

    sbi's loop runs epochs ``0..max_num_epochs`` inclusive, so it is given
    ``max_num_epochs=epochs - 1`` and ``stop_after_epochs=2**30`` (no early stopping); the epochs
    actually run are read back from its training summary.
    """
    if epochs < 2:
        raise ValueError(f"sbi cannot run fewer than 2 epochs here; got epochs={epochs}")
    import torch
    from sbi.inference import NLE
    from sbi.neural_nets import likelihood_nn
    from sbi.utils import BoxUniform

    prior = BoxUniform(
        low=torch.tensor(np.array(low, dtype=np.float32)),
        high=torch.tensor(np.array(high, dtype=np.float32)),
    )
    theta_t = torch.tensor(np.array(theta, dtype=np.float32))
    x_t = torch.tensor(np.array(x, dtype=np.float32))

    def fit(th, xx, n_epochs):
        inference = NLE(
            prior=prior,
            density_estimator=likelihood_nn(
                model="maf", hidden_features=hidden, num_transforms=transforms
            ),
            show_progress_bars=False,
        )
        inference.append_simulations(th, xx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "max_num_epochs reached, not converged"
            inference.train(
                training_batch_size=batch_size,
                learning_rate=learning_rate,
                validation_fraction=validation_fraction,
                stop_after_epochs=2**30,
                max_num_epochs=n_epochs - 1,
                clip_max_norm=clip_max_norm,
                show_train_summary=False,
            )
        return inference

    # Untimed warm-up (two epochs on a few rows): one-off import/allocator costs of the first
    # training in a process are not charged to sbi (ilijax's compile is reported apart).
    torch.manual_seed(seed + 10_000)
    t0 = time.perf_counter()
    fit(theta_t[:200], x_t[:200], 2)
    warmup_s = time.perf_counter() - t0

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    inference = fit(theta_t, x_t, epochs)
    wall = time.perf_counter() - t0
    summary = inference._summary
    n_epochs = int(summary["epochs_trained"][-1])
    return inference, {
        "wall_s": wall,
        "epochs": n_epochs,
        "time_per_epoch_s": wall / max(1, n_epochs),
        "best_validation_loss": float(summary["best_validation_loss"][-1])
        if summary.get("best_validation_loss")
        else None,
        "warmup_s_untimed": warmup_s,
    }


# ----------------------------------------------------------------------------------------------
# sampling


def build_posterior(inference, **mcmc_parameters) -> Any:
    """``inference.build_posterior`` with sbi's MCMC defaults, overridden by ``mcmc_parameters``.

    Uses sbi 0.27's ``posterior_parameters=MCMCPosteriorParameters(...)`` (the ``mcmc_method`` /
    ``mcmc_parameters`` keywords are deprecated there).
    """
    from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters

    params = MCMCPosteriorParameters(**{**MCMC_DEFAULTS, **mcmc_parameters})
    return inference.build_posterior(sample_with="mcmc", posterior_parameters=params)


def _chains_ok(num_samples: int, num_chains: int) -> None:
    if num_samples % num_chains:
        raise ValueError(
            f"Expected num_samples divisible by num_chains so that the draws split into whole "
            f"chains (for R-hat); got {num_samples} and {num_chains}"
        )


def _sample_loop(posterior, x_obs: np.ndarray, num_samples: int, num_chains: int) -> np.ndarray:
    """``posterior.sample(x=x_i)`` per observation; returns chains (n_obs, C, S/C, d).

    With interchangeable chains sbi concatenates chain by chain (``(C, S/C, d)`` reshaped to
    ``(S, d)``), so the draws reshape back to their chains exactly when ``C`` divides ``S``.
    """
    import torch

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for xi in x_obs:
            s = posterior.sample(
                (num_samples,), x=torch.tensor(xi[None]), show_progress_bars=False
            )
            out.append(s.numpy().reshape(num_chains, num_samples // num_chains, -1))
    return np.stack(out)


def _sample_batched(
    posterior, x_obs: np.ndarray, num_samples: int, num_chains: int, chunk_obs: int
) -> np.ndarray:
    """``posterior.sample_batched`` on chunks of ``chunk_obs`` observations; chains as above.

    sbi runs ``num_chains`` chains per observation (ordered AAA BBB ...), each of
    ``ceil(num_samples * n / (num_chains * n))`` steps after warm-up, and returns observation
    ``b``'s draws as its chains concatenated: ``(S, n, d)`` whose ``[:, b]`` reshapes to
    ``(C, S/C, d)`` when ``C`` divides ``S``.
    """
    import torch

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "large number of chains" note
        for i in range(0, len(x_obs), chunk_obs):
            xc = torch.tensor(np.asarray(x_obs[i : i + chunk_obs], np.float32))
            s = posterior.sample_batched((num_samples,), x=xc, show_progress_bars=False)
            s = s.numpy().transpose(1, 0, 2)  # (n, S, d)
            out.append(s.reshape(len(xc), num_chains, num_samples // num_chains, -1))
    return np.concatenate(out)


def sample(
    posterior,
    x_obs: np.ndarray,
    num_samples: int,
    *,
    mode: str,
    num_chains: int,
    chunk_obs: int,
    seed: int,
) -> tuple[np.ndarray, float]:
    """Draws with ``mode`` (``"loop"`` or ``"batched"``); returns (chains (n, C, S/C, d), secs)."""
    import torch

    _chains_ok(num_samples, num_chains)
    torch.manual_seed(seed)
    np.random.seed(seed)  # sbi's slice sampler draws from numpy's global generator
    t0 = time.perf_counter()
    if mode == "loop":
        chains = _sample_loop(posterior, x_obs, num_samples, num_chains)
    elif mode == "batched":
        chains = _sample_batched(posterior, x_obs, num_samples, num_chains, chunk_obs)
    else:
        raise ValueError(f"Expected mode 'loop' or 'batched'; got {mode!r}")
    return chains, time.perf_counter() - t0


def time_sampling(
    posterior,
    x_obs: np.ndarray,
    num_samples: int,
    *,
    mode: str = "auto",
    num_chains: int = MCMC_DEFAULTS["num_chains"],
    probe_obs: int = 2,
    chunk_obs: int = 100,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Times ``num_samples`` MCMC draws for every row of ``x_obs``; returns (chains, report).

    ``mode``: ``"loop"`` (``posterior.sample`` per observation, ``num_chains`` vectorized chains),
    ``"batched"`` (``posterior.sample_batched`` on chunks of ``chunk_obs`` observations: all
    chains of all observations of a chunk in one vectorized slice sampler) or ``"auto"``: both
    are timed on the first ``probe_obs`` observations, then the faster per observation is run
    on all of them (the probes are reported; the chosen run is timed on its own, from scratch).
    """
    n_obs = len(x_obs)
    out: dict[str, Any] = {
        "mode_requested": mode,
        "batched_chunk_obs": chunk_obs,
        "num_chains_per_obs": num_chains,
    }
    # Untimed warm-up of the potential (the training already warmed torch up; a warm-up MCMC
    # run would cost as much as a sampled observation).
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        posterior.log_prob(posterior.proposal.sample((num_chains,)),
                           x=torch.tensor(np.asarray(x_obs[:1], np.float32)))
    if mode == "auto":
        probe = min(probe_obs, n_obs)
        _, t_loop = sample(posterior, x_obs[:probe], num_samples, mode="loop",
                           num_chains=num_chains, chunk_obs=chunk_obs, seed=seed + 1)
        _, t_b = sample(posterior, x_obs[:probe], num_samples, mode="batched",
                        num_chains=num_chains, chunk_obs=chunk_obs, seed=seed + 2)
        out["probe"] = {"obs": probe, "loop_s": t_loop, "batched_s": t_b}
        mode = "loop" if t_loop <= t_b else "batched"
    chains, wall = sample(posterior, x_obs, num_samples, mode=mode, num_chains=num_chains,
                          chunk_obs=chunk_obs, seed=seed)
    out.update(
        mode=mode,
        method=(
            "posterior.sample per observation"
            if mode == "loop"
            else f"posterior.sample_batched on chunks of {chunk_obs} observations"
        ),
        observations=n_obs,
        wall_s=wall,
        per_obs_s=wall / n_obs,
    )
    return chains, out
