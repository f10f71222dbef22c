"""The sbi (PyTorch) side of ``speed_validation.py``: the full validation of an NPE ensemble.

For ``N`` test pairs ``(theta_i, x_i)`` and ``S`` posterior draws each: the draws, SBC marginal
ranks and their checks, expected coverage of HPD regions (SBC with the negative log-posterior as
the reduce function, as sbi's docs compute it), TARP, and the log-posterior of the truths. Each
step is timed on its own with ``time.perf_counter``.

Tested with sbi 0.27.0 on torch 2.13.0 (CPU). sbi functions used (module ``sbi.diagnostics``
unless said otherwise):

- draws: ``sbi.utils.diagnostics_utils.get_posterior_samples_on_batch`` (what ``run_sbc`` and
  ``run_tarp`` call; ``use_batched_sampling=True``, i.e. ``EnsemblePosterior.sample_batched``)
  on chunks of ``chunk_obs`` observations (one call on 1,000 observations is ~4x slower:
  ``sample_batched`` caps its rejection batch at ``100_000 // num_obs`` draws per observation);
- SBC ranks: ``sbc._run_sbc(..., reduce_fns="marginals")`` (the rank loop of ``run_sbc``);
- SBC checks: the three parts of ``check_sbc`` timed apart: ``sbc.check_uniformity_frequentist``
  (KS p-values), ``sbc.check_uniformity_c2st`` and ``sbc.check_prior_vs_dap`` (C2STs);
- expected coverage: ``sbc._run_sbc`` with ``reduce_fns=lambda th, x: -posterior.log_prob(th,
  x)`` on the same draws; the coverage curve is the empirical CDF of ``(rank + 1/2) / (S + 1)``;
- TARP: ``tarp.get_tarp_references`` + ``tarp._run_tarp`` (``run_tarp``'s defaults: L2,
  ``z_score_theta=True``, ``N // 10`` bins) on the same draws, then ``check_tarp``;
- log-prob of the truths: each member's ``DirectPosterior.log_prob_batched`` (one call for the
  whole test set) mixed with the ensemble weights as ``EnsemblePosterior.log_prob`` does
  (``EnsemblePosterior`` has no ``log_prob_batched``), or, normalised, ``posterior.log_prob``
  per observation.

``mode="public"`` instead calls the public entry points as a user would: one ``run_sbc`` with the
three marginals and the coverage function as a list of ``reduce_fns`` (one set of draws, all
observations in one ``sample_batched`` call) and one ``run_tarp`` (which draws again).

Normalisation. sbi's NSF is not bounded to the box prior; ``DirectPosterior.log_prob`` (default
``norm_posterior=True``) divides by the in-prior acceptance, estimated per call and per member
from 10,000 rejection-sampled draws for every new ``x`` (nothing is cached across ``x``; and
``set_default_x`` does not reset the cached factor in sbi 0.27, so it cannot be used to share it).
For 1,000 observations, 5 members and the two ``log_prob`` calls per observation of the coverage
loop that is ~100 million flow draws. ``log_prob="unnormalized"`` (the default) passes
``norm_posterior=False`` (sbi's documented speed-up): coverage ranks of one posterior are
unchanged by a per-``x`` constant (for an ensemble, the member weights inside the mixture shift
by the members' acceptance ratios) and the log-prob of the truths is low by ``log(acceptance)``.
``norm_probe_obs`` times the normalised path on the first observations and extrapolates it, and
reports how much the ranks and log-probs move.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

COVERAGE_LEVELS = 101


def _as_tensor(a: Any):
    import torch

    return torch.tensor(np.array(a, dtype=np.float32))


def _members(posterior) -> tuple[list, Any]:
    """(member posteriors, weights) of an ``EnsemblePosterior``, or of a single posterior."""
    import torch

    members = list(getattr(posterior, "posteriors", [posterior]))
    weights = getattr(posterior, "weights", None)
    if weights is None:
        weights = torch.ones(len(members)) / len(members)
    return members, torch.as_tensor(weights, dtype=torch.float32)


def coverage_fn(posterior, normalized: bool):
    """sbi's reduce function for expected coverage: the negative log-posterior."""
    if normalized:
        return lambda th, x: -posterior.log_prob(th, x)  # as in sbi's docs
    return lambda th, x: -posterior.log_prob(th, x, norm_posterior=False)


def log_prob_truths_batched(posterior, thetas, xs, chunk_obs: int = 1000):
    """Unnormalised ``log q(theta_i | x_i)``: per member one ``log_prob_batched`` call per chunk,
    mixed with the ensemble weights exactly as ``EnsemblePosterior.log_prob`` mixes them."""
    import torch

    members, weights = _members(posterior)
    log_w = torch.log(weights)[:, None]
    out = []
    for i in range(0, thetas.shape[0], chunk_obs):
        th, xx = thetas[i : i + chunk_obs], xs[i : i + chunk_obs]
        lps = torch.stack(
            [p.log_prob_batched(th, x=xx, norm_posterior=False).reshape(-1) for p in members]
        )
        out.append(torch.logsumexp(log_w + lps, dim=0))
    return torch.cat(out)


def log_prob_truths_loop(posterior, thetas, xs, normalized: bool = True):
    """``posterior.log_prob(theta_i, x=x_i)`` per observation (a Python loop)."""
    import torch

    kw = {} if normalized else {"norm_posterior": False}
    return torch.stack(
        [posterior.log_prob(thetas[i : i + 1], x=xs[i], **kw).reshape(()) for i in range(len(xs))]
    )


def draw_samples(posterior, xs, num_samples: int, chunk_obs: int):
    """``(S, N, d)`` draws with sbi's ``get_posterior_samples_on_batch`` on chunks of obs."""
    import torch
    from sbi.utils.diagnostics_utils import get_posterior_samples_on_batch

    chunks = [
        get_posterior_samples_on_batch(
            xs[i : i + chunk_obs],
            posterior,
            (num_samples,),
            num_workers=1,
            show_progress_bar=False,
            use_batched_sampling=True,
        )
        for i in range(0, xs.shape[0], chunk_obs)
    ]
    return torch.cat(chunks, dim=1)


def coverage_summary(ranks: np.ndarray, num_samples: int) -> dict[str, Any]:
    """Expected coverage from the ranks of ``-log q``: the credibility of the smallest HPD
    region holding the truth is ``(rank + 1/2) / (S + 1)``; the curve is its empirical CDF at
    101 levels; error / bias = mean |curve - level| / mean (curve - level)."""
    from scipy import stats

    cred = (np.asarray(ranks, np.float64) + 0.5) / (num_samples + 1.0)
    levels = np.linspace(0.0, 1.0, COVERAGE_LEVELS)
    emp = (cred[:, None] <= levels[None, :]).mean(axis=0)
    return {
        "levels": levels.tolist(),
        "empirical": emp.tolist(),
        "error": float(np.mean(np.abs(emp - levels))),
        "bias": float(np.mean(emp - levels)),
        "ks_pvalue": float(stats.kstest(cred, "uniform").pvalue),
    }


def _log_prob_summary(lp) -> dict[str, Any]:
    v = np.asarray(lp, np.float64)
    ok = np.isfinite(v)
    return {
        "mean": float(v[ok].mean()) if ok.any() else None,
        "median": float(np.median(v[ok])) if ok.any() else None,
        "std": float(v[ok].std()) if ok.any() else None,
        "nonfinite": int((~ok).sum()),
    }


def _warmup(posterior, thetas, xs, normalized: bool) -> float:
    """Untimed: the first calls in a process pay one-off costs (lazy imports, allocator)."""
    t0 = time.perf_counter()
    draw_samples(posterior, xs[:2], 10, 2)
    log_prob_truths_batched(posterior, thetas[:2], xs[:2])
    coverage_fn(posterior, normalized)(thetas[:2], xs[0])
    return time.perf_counter() - t0


def run_validation(
    posterior,
    theta_test: Any,
    x_test: Any,
    num_samples: int,
    seed: int = 0,
    *,
    mode: str = "shared",
    chunk_obs: int = 50,
    log_prob: str = "unnormalized",
    norm_probe_obs: int = 20,
) -> dict[str, Any]:
    """Runs and times sbi's full validation of ``posterior`` on ``(theta_test, x_test)``.

    Args:
        posterior: An sbi posterior (an ``EnsemblePosterior`` of ``DirectPosterior`` s here).
        theta_test, x_test: ``(N, d)`` true parameters and ``(N, x_dim)`` observations.
        num_samples: Draws per observation, ``S``.
        seed: ``torch.manual_seed`` before the timed steps.
        mode: ``"shared"`` (one set of draws, in chunks, reused by every diagnostic: sbi's
            fastest) or ``"public"`` (``run_sbc`` + ``run_tarp`` as called by a user).
        chunk_obs: Observations per ``sample_batched`` call in ``"shared"`` mode.
        log_prob: ``"unnormalized"`` (``norm_posterior=False``; batched log-prob of the truths)
            or ``"normalized"`` (sbi's defaults; log-prob of the truths in a per-observation
            loop).
        norm_probe_obs: With ``"unnormalized"``: time the normalised coverage ranks and
            log-probs on this many observations (0: skip), extrapolated to ``N``; not in the total.

    Returns:
        A dict: ``steps`` (seconds per step; ``None`` where a step is folded into another),
        ``total_s``, ``total_excl_c2st_s``, ``wall_s``, the sanity numbers (``sbc``,
        ``coverage``, ``tarp``, ``log_prob``), ``settings`` and ``norm_probe``.
    """
    if mode not in ("shared", "public"):
        raise ValueError(f"mode must be 'shared' or 'public'; got {mode!r}")
    if log_prob not in ("unnormalized", "normalized"):
        raise ValueError(f"log_prob must be 'unnormalized' or 'normalized'; got {log_prob!r}")
    import torch
    from sbi.diagnostics import check_tarp, run_sbc, run_tarp
    from sbi.diagnostics.sbc import (
        _run_sbc,
        check_prior_vs_dap,
        check_uniformity_c2st,
        check_uniformity_frequentist,
    )
    from sbi.diagnostics.tarp import _run_tarp, get_tarp_references

    normalized = log_prob == "normalized"
    thetas, xs = _as_tensor(theta_test), _as_tensor(x_test)
    n, d = thetas.shape
    cov_fn = coverage_fn(posterior, normalized)
    steps: dict[str, float | None] = {}
    out: dict[str, Any] = {
        "settings": {
            "mode": mode,
            "chunk_obs": chunk_obs if mode == "shared" else n,
            "log_prob": log_prob,
            "use_batched_sampling": True,
            "num_workers": 1,
            "show_progress_bar": False,
            "torch_threads": torch.get_num_threads(),
            "tarp": {"distance": "l2", "z_score_theta": True, "num_bins": n // 10},
            "coverage_reduce_fn": (
                "lambda th, x: -posterior.log_prob(th, x)"
                if normalized
                else "lambda th, x: -posterior.log_prob(th, x, norm_posterior=False)"
            ),
            "log_prob_truths": (
                "posterior.log_prob(theta_i, x=x_i) per observation"
                if normalized
                else "member.log_prob_batched(norm_posterior=False), mixed with the weights"
            ),
        }
    }

    with torch.no_grad(), warnings.catch_warnings():
        # nflows' triangular_solve deprecation, "capping max_sampling_batch_size", and for small
        # test sets "should be on the order of 100s".
        warnings.simplefilter("ignore")
        out["warmup_s_untimed"] = _warmup(posterior, thetas, xs, normalized)
        torch.manual_seed(seed)
        t_all = time.perf_counter()
        if mode == "shared":
            t0 = time.perf_counter()
            samples = draw_samples(posterior, xs, num_samples, chunk_obs)
            steps["sample"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            ranks = _run_sbc(thetas, xs, samples, "marginals", show_progress_bar=False)
            steps["sbc_ranks"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            cov_ranks = _run_sbc(thetas, xs, samples, cov_fn, show_progress_bar=False)[:, 0]
            cov = coverage_summary(cov_ranks.numpy(), num_samples)
            steps["coverage"] = time.perf_counter() - t0
        else:
            cov_time = [0.0]

            def timed_cov(th, x):
                t = time.perf_counter()
                r = cov_fn(th, x)
                cov_time[0] += time.perf_counter() - t
                return r

            marginals = [(lambda th, x, i=i: th[:, i]) for i in range(d)]
            t0 = time.perf_counter()
            ranks_all, dap = run_sbc(
                thetas,
                xs,
                posterior,
                num_posterior_samples=num_samples,
                reduce_fns=[*marginals, timed_cov],
                num_workers=1,
                show_progress_bar=False,
                use_batched_sampling=True,
            )
            t_run_sbc = time.perf_counter() - t0
            ranks, cov_ranks = ranks_all[:, :d], ranks_all[:, d]
            t0 = time.perf_counter()
            cov = coverage_summary(cov_ranks.numpy(), num_samples)
            steps["sample"] = None  # inside run_sbc, charged to sbc_ranks
            steps["sbc_ranks"] = t_run_sbc - cov_time[0]
            steps["coverage"] = cov_time[0] + time.perf_counter() - t0
            samples = None

        dap_samples = samples[0] if samples is not None else dap
        t0 = time.perf_counter()
        ks_pvals = check_uniformity_frequentist(ranks, num_samples)
        steps["sbc_ks"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        c2st_ranks = check_uniformity_c2st(ranks, num_samples)
        c2st_dap = check_prior_vs_dap(thetas, dap_samples)
        steps["sbc_c2st"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if mode == "shared":
            refs = get_tarp_references(thetas)
            ecp, alpha = _run_tarp(samples, thetas, refs, z_score_theta=True)
        else:
            ecp, alpha = run_tarp(
                thetas,
                xs,
                posterior,
                num_posterior_samples=num_samples,
                num_workers=1,
                show_progress_bar=False,
                z_score_theta=True,
                use_batched_sampling=True,
            )
        atc, tarp_ks = check_tarp(ecp, alpha)
        steps["tarp"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if normalized:
            lp = log_prob_truths_loop(posterior, thetas, xs, normalized=True)
        else:
            lp = log_prob_truths_batched(posterior, thetas, xs)
        steps["log_prob"] = time.perf_counter() - t0
        out["wall_s"] = time.perf_counter() - t_all

        if not normalized and norm_probe_obs > 0:
            k = min(norm_probe_obs, n)
            probe_samples = (
                samples[:, :k]
                if samples is not None
                else draw_samples(posterior, xs[:k], num_samples, chunk_obs)
            )
            out["norm_probe"] = _norm_probe(
                posterior, thetas[:k], xs[:k], probe_samples, lp[:k], n
            )

    timed = [v for v in steps.values() if v is not None]
    out["steps"] = steps
    out["total_s"] = float(sum(timed))
    out["total_excl_c2st_s"] = float(sum(timed) - steps["sbc_c2st"])
    dalpha = float(alpha[1] - alpha[0])
    out["sbc"] = {
        "ks_pvalue": [float(v) for v in ks_pvals],
        "c2st_ranks": [float(v) for v in c2st_ranks],
        "c2st_dap": [float(v) for v in c2st_dap],
        "rank_mean_over_S": [float(v) for v in (ranks.mean(0) / num_samples)],
    }
    out["coverage"] = cov
    out["tarp"] = {
        "atc": float(atc),
        # ilijax's atc sums (ecp - alpha) over the levels without the d-alpha factor
        "atc_without_dalpha": float(atc) / dalpha,
        "ks_pvalue_ecp_vs_alpha": float(tarp_ks),
        "alpha": alpha.tolist(),
        "ecp": ecp.tolist(),
    }
    out["log_prob"] = {**_log_prob_summary(lp), "normalized": normalized}
    return out


def _norm_probe(posterior, thetas, xs, samples, lp_unnorm, n_total: int):
    """Times sbi's default (normalised) coverage ranks and log-prob on the first k observations
    and compares them with the unnormalised ones on the same draws."""
    from sbi.diagnostics.sbc import _run_sbc

    k = thetas.shape[0]
    ranks_u = _run_sbc(
        thetas, xs, samples, coverage_fn(posterior, False), show_progress_bar=False
    )[:, 0]
    t0 = time.perf_counter()
    ranks_n = _run_sbc(
        thetas, xs, samples, coverage_fn(posterior, True), show_progress_bar=False
    )[:, 0]
    t_cov = time.perf_counter() - t0
    t0 = time.perf_counter()
    lp_n = log_prob_truths_loop(posterior, thetas, xs, normalized=True)
    t_lp = time.perf_counter() - t0
    diff = (ranks_n - ranks_u).abs()
    d_lp = (lp_n - lp_unnorm).numpy()
    return {
        "obs": k,
        "coverage_s": t_cov,
        "log_prob_s": t_lp,
        "coverage_extrapolated_s": t_cov * n_total / k,
        "log_prob_extrapolated_s": t_lp * n_total / k,
        "coverage_ranks_equal_fraction": float((diff == 0).float().mean()),
        "coverage_ranks_max_abs_diff": float(diff.max()),
        "log_prob_normalized_mean": float(lp_n.mean()),
        "log_prob_unnormalized_mean": float(lp_unnorm.mean()),
        "log_prob_offset_mean": float(np.mean(d_lp)),
    }
