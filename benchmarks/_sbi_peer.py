"""The sbi (PyTorch) side of ``speed_npe.py``: an NPE ensemble trained and sampled the sbi way.

Tested with sbi 0.27.0 on torch 2.13.0 (CPU, Python 3.12); the public API used here is
``sbi.inference.NPE``, ``sbi.neural_nets.posterior_nn``, ``sbi.inference.EnsemblePosterior`` and
``sbi.utils.BoxUniform``.

torch is imported lazily so that ``speed_npe.py --skip-sbi`` works where torch/sbi are missing.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np


def available() -> tuple[bool, str]:
    """Whether sbi (and torch) import; the message says what is missing and how to install it."""
    try:
        import sbi  # noqa: F401
        import torch  # noqa: F401
    except Exception as e:  # ImportError, or a broken torch install
        return False, (
            f"sbi/torch not importable ({type(e).__name__}: {e}). Install the peer with "
            "`pip install torch==2.13.0` then `pip install 'sbi>=0.25,<0.28'`, "
            "or pass --skip-sbi."
        )
    return True, ""


def versions() -> dict[str, str]:
    import sbi
    import torch

    return {"sbi": sbi.__version__, "torch": torch.__version__}


def setup_threads(num_threads: int = 1) -> dict[str, int]:
    """torch's best setting on a small CPU: one intra-op thread (more is much slower here)."""
    import torch

    torch.set_num_threads(num_threads)
    try:
        torch.set_num_interop_threads(num_threads)
    except RuntimeError:  # can only be set once, before any parallel work
        pass
    return {
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
    }


def _density_estimator(hidden: int, transforms: int, bins: int):
    from sbi.neural_nets import posterior_nn

    return posterior_nn(
        model="nsf", hidden_features=hidden, num_transforms=transforms, num_bins=bins
    )


def train_ensemble(
    theta: np.ndarray,
    x: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    *,
    members: int,
    batch_size: int,
    epochs: int,
    hidden: int = 50,
    transforms: int = 5,
    bins: int = 10,
    learning_rate: float = 5e-4,
    clip_max_norm: float = 5.0,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Trains ``members`` sbi NPEs one after another on the same data; returns (ensemble, timings).

    Exactly ``epochs`` epochs per member, no early stopping. sbi's loop runs epochs
    ``0..max_num_epochs`` inclusive, so it is given ``max_num_epochs=epochs - 1``; the epochs it
    actually ran are read back from its training summary and reported.
    """
    if epochs < 2:
        raise ValueError(f"sbi cannot run fewer than 2 epochs here; got epochs={epochs}")
    import torch
    from sbi.inference import NPE, EnsemblePosterior
    from sbi.utils import BoxUniform

    prior = BoxUniform(
        low=torch.tensor(np.array(low, dtype=np.float32)),
        high=torch.tensor(np.array(high, dtype=np.float32)),
    )
    theta_t = torch.tensor(np.array(theta, dtype=np.float32))
    x_t = torch.tensor(np.array(x, dtype=np.float32))

    def fit(th, xx, bs, n_epochs):
        inference = NPE(
            prior=prior,
            density_estimator=_density_estimator(hidden, transforms, bins),
            show_progress_bars=False,
        )
        inference.append_simulations(th, xx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "max_num_epochs reached, not converged"
            inference.train(
                training_batch_size=bs,
                learning_rate=learning_rate,
                validation_fraction=validation_fraction,
                stop_after_epochs=2**30,
                max_num_epochs=n_epochs - 1,
                clip_max_norm=clip_max_norm,
                show_train_summary=False,
            )
        return inference

    # Untimed warm-up (two epochs on a few simulations): one-off import/allocator costs of the
    # first training in a process are not charged to sbi, as ilijax's compile is reported apart.
    torch.manual_seed(seed + 10_000)
    t0 = time.perf_counter()
    fit(theta_t[:200], x_t[:200], batch_size, 2)
    warmup_s = time.perf_counter() - t0

    posteriors, member_s, member_epochs = [], [], []
    t_all = time.perf_counter()
    for m in range(members):
        torch.manual_seed(seed + m)
        t0 = time.perf_counter()
        inference = fit(theta_t, x_t, batch_size, epochs)
        posteriors.append(inference.build_posterior())
        member_s.append(time.perf_counter() - t0)
        member_epochs.append(int(inference._summary["epochs_trained"][-1]))
    wall = time.perf_counter() - t_all
    ensemble = EnsemblePosterior(posteriors)
    return ensemble, {
        "wall_s": wall,
        "member_wall_s": member_s,
        "epochs": member_epochs,
        "time_per_ensemble_epoch_s": wall / max(1, float(np.mean(member_epochs))),
        "warmup_s_untimed": warmup_s,
    }


def _sample_loop(ensemble, x_test, num_samples: int, n_obs: int) -> float:
    import torch

    x_t = torch.tensor(np.array(x_test[:n_obs], dtype=np.float32))
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nflows' torch.triangular_solve deprecation
        for i in range(n_obs):
            s = ensemble.sample((num_samples,), x=x_t[i], show_progress_bars=False)
            assert s.shape[0] == num_samples, s.shape
    return time.perf_counter() - t0


def _sample_batched(ensemble, x_test, num_samples: int, chunk_obs: int) -> float:
    """``sample_batched`` over chunks of ``chunk_obs`` observations.

    sbi caps its rejection-sampling batch at ``100_000 // num_obs`` draws per observation and
    round, so one call on 1,000 observations runs many small rounds (about 4x slower than chunks
    of 50 here); chunking keeps its cost linear in the number of observations.
    """
    import torch

    x_all = torch.tensor(np.array(x_test, dtype=np.float32))
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_obs * n_samples is large; nflows deprecations
        for i in range(0, x_all.shape[0], chunk_obs):
            x_t = x_all[i : i + chunk_obs]
            s = ensemble.sample_batched((num_samples,), x=x_t, show_progress_bars=False)
            assert s.shape[:2] == (num_samples, x_t.shape[0]), s.shape
    return time.perf_counter() - t0


def time_sampling(
    ensemble,
    x_test: np.ndarray,
    num_samples: int,
    *,
    mode: str = "auto",
    probe_obs: int = 50,
    chunk_obs: int = 50,
) -> dict[str, Any]:
    """Times ``num_samples`` posterior draws for every row of ``x_test``.

    ``mode``: ``"loop"`` (``ensemble.sample`` per observation), ``"batched"``
    (``ensemble.sample_batched`` on chunks of ``chunk_obs`` observations) or ``"auto"``: time
    both on the first ``probe_obs`` observations, then run the faster one on the whole set (both
    probes are reported; each mode's cost is linear in the number of observations).
    """
    n_obs = len(x_test)
    out: dict[str, Any] = {"mode_requested": mode, "batched_chunk_obs": chunk_obs}
    # Warm-up: first calls pay one-off costs (lazy imports, allocator) in either mode.
    _sample_loop(ensemble, x_test, 10, 1)
    _sample_batched(ensemble, x_test[:2], 10, chunk_obs)

    if mode == "auto":
        probe = min(probe_obs, n_obs)
        t_loop = _sample_loop(ensemble, x_test, num_samples, probe)
        t_batched = _sample_batched(ensemble, x_test[:probe], num_samples, chunk_obs)
        out["probe"] = {
            "obs": probe,
            "loop_s": t_loop,
            "batched_s": t_batched,
            "loop_extrapolated_s": t_loop * n_obs / probe,
            "batched_extrapolated_s": t_batched * n_obs / probe,
        }
        mode = "loop" if t_loop <= t_batched else "batched"
    if mode == "loop":
        out.update(
            method="loop: ensemble.sample per observation",
            wall_s=_sample_loop(ensemble, x_test, num_samples, n_obs),
        )
    else:
        out.update(
            method=f"ensemble.sample_batched on chunks of {chunk_obs} observations",
            wall_s=_sample_batched(ensemble, x_test, num_samples, chunk_obs),
        )
    return out
