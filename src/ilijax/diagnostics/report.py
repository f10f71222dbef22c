"""``validate``: every diagnostic from one shared set of draws, written as numbers, plots and
samples.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ilijax._checks import check_key
from ilijax._files import atomic_write
from ilijax.diagnostics._common import check_draws, check_truth
from ilijax.diagnostics.c2st import C2STResult, c2st
from ilijax.diagnostics.coverage import expected_coverage
from ilijax.diagnostics.logprob import (
    has_normalized_log_prob,
    log_prob_of_truth,
    summarize_log_prob,
)
from ilijax.diagnostics.mmd import mmd
from ilijax.diagnostics.predictions import predictions
from ilijax.diagnostics.predictive import posterior_predictive
from ilijax.diagnostics.results import (
    CoverageResult,
    LogProbResult,
    PredictionsResult,
    PredictiveResult,
    SBCResult,
    TARPResult,
)
from ilijax.diagnostics.sampling import sample_test_set
from ilijax.diagnostics.sbc import sbc
from ilijax.diagnostics.tarp import tarp

Array = jax.Array

__all__ = ["DEFAULT_METRICS", "METRICS", "ValidationReport", "validate"]

METRICS = ("sbc", "coverage", "tarp", "log_prob", "predictions", "c2st", "mmd", "predictive")
DEFAULT_METRICS = ("sbc", "coverage", "tarp", "log_prob", "predictions")


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """What :func:`validate` computed. Fields of metrics that were not run are ``None``.

    Attributes:
        samples: ``(n_test, S, d)`` the shared posterior draws.
        theta: ``(n_test, d)`` true parameters.
        labels: Parameter names.
        sbc, coverage, tarp, log_prob, predictions: The results of those diagnostics.
        c2st: Per-observation C2ST against ``reference_samples`` (first ``m`` test pairs).
        mmd: ``(m,)`` squared MMD against ``reference_samples``.
        predictive: Posterior predictive check of every test observation.
        metrics: The scalars, as written to ``metrics.json`` (nested dict, JSON types only).
        files: Written files by kind (``{"metrics": path, "coverage.png": path, ...}``).
        timings: Seconds per step.
    """

    samples: Array
    theta: Array
    labels: tuple[str, ...]
    sbc: SBCResult | None = None
    coverage: CoverageResult | None = None
    tarp: TARPResult | None = None
    log_prob: LogProbResult | None = None
    predictions: PredictionsResult | None = None
    c2st: C2STResult | None = None
    mmd: Array | None = None
    predictive: PredictiveResult | None = None
    metrics: dict = dataclasses.field(default_factory=dict)
    files: dict = dataclasses.field(default_factory=dict)
    timings: dict = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """A short human-readable table of the headline numbers."""
        m = self.metrics
        n, s, _ = self.samples.shape
        lines = [f"validation on {n} test pairs x {s} draws"]
        if "sbc" in m:
            lines.append("  SBC rank KS p-value:   " + _fmt_per(m["sbc"]["ks_pvalue"]))
        if "coverage" in m:
            c = m["coverage"]
            lines.append(f"  HPD coverage ({c['method']}): error {c['error']:.3f}, bias "
                         f"{c['bias']:+.3f}, KS p {c['ks_pvalue']:.3g}")
        if "tarp" in m:
            lines.append(f"  TARP: ATC {m['tarp']['atc']:+.3f}, KS p {m['tarp']['ks_pvalue']:.3g}")
        if "log_prob" in m:
            lp = m["log_prob"]
            lines.append(f"  log q(theta_true|x) ({lp['method']}): {lp['mean']:.3f} "
                         f"+- {lp['sem']:.3f}")
        if "predictions" in m:
            lines.append("  RMSE of the mean:      " + _fmt_per(m["predictions"]["rmse"]))
            lines.append("  inside 68% / 95%:      " + ", ".join(
                f"{k} {v:.2f}/{m['predictions']['inside95'][k]:.2f}"
                for k, v in m["predictions"]["inside68"].items()))
        if "c2st" in m:
            lines.append(f"  C2ST vs reference:     {m['c2st']['mean']:.3f} "
                         f"(over {m['c2st']['num_observations']} observations)")
        if "mmd" in m:
            lines.append(f"  MMD^2 vs reference:    {m['mmd']['mean']:.4f}")
        if "predictive" in m:
            lines.append(f"  predictive p < 0.05:   {m['predictive']['fraction_below_0.05']:.3f}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ValidationReport(\n{self.summary()}\n)"


def _fmt_per(d: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in d.items())


def _per(labels: Sequence[str], values: Any) -> dict:
    return {str(k): _num(v) for k, v in zip(labels, np.asarray(values).ravel(), strict=True)}


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _curve(a: Any) -> list:
    return [round(float(v), 6) for v in np.asarray(a)]


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    out = tuple(metrics)
    unknown = [m for m in out if m not in METRICS]
    if unknown:
        raise ValueError(f"Expected metrics from {METRICS}; got unknown {unknown}")
    return out


def validate(
    key: Array,
    posterior: Any,
    theta_test: Any,
    x_test: Any,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    num_samples: int = 1000,
    samples: Any = None,
    reference_samples: Any = None,
    simulator: Callable[..., Any] | None = None,
    predictive_samples: int = 100,
    labels: Sequence[str] | None = None,
    levels: int = 101,
    bootstrap: int = 200,
    band: float = 0.95,
    out_dir: str | os.PathLike | None = None,
    plots: bool = True,
    corner_index: int = 0,
    progress: bool = True,
    sampler_options: dict | None = None,
) -> ValidationReport:
    """Validates a posterior on a test set: the chosen diagnostics from one set of draws.

    The draws for every test observation come from one call (:func:`sample_test_set`), the
    posterior's ``log_prob`` is evaluated once for all draws and truths and shared by the HPD
    coverage and the log-prob metric, and every diagnostic is vectorised over the test set.

    Args:
        key: PRNG key (draws, bootstraps, TARP references, C2ST, predictive simulations).
        posterior: Object with ``sample(key, x, n)``, optionally ``log_prob(theta, x)`` and a
            ``normalized`` flag (see :func:`log_prob_of_truth`); e.g. :class:`ilijax.Posterior`.
        theta_test: ``(n_test, d)`` true parameters, drawn from the prior.
        x_test: ``(n_test, x_dim)`` their simulated observations, or ``(n_test, *x_shape)``
            for a posterior over structured data (an estimator with an embedding network).
        metrics: Any of ``"sbc"``, ``"coverage"``, ``"tarp"``, ``"log_prob"``,
            ``"predictions"`` (the default set), ``"c2st"`` and ``"mmd"`` (need
            ``reference_samples``) and ``"predictive"`` (needs ``simulator``).
        num_samples: Posterior draws per test observation.
        samples: Optional precomputed ``(n_test, S, d)`` draws (then ``num_samples`` is ``S``).
        reference_samples: ``(m, S_ref, d)`` reference posterior draws for the first ``m`` test
            observations (e.g. from a task's exact posterior), for ``c2st`` and ``mmd``; both
            sets are cut to ``min(S_ref, S)`` draws so that C2ST's chance level is 1/2.
        simulator: The simulator, for ``predictive`` (see :func:`posterior_predictive`).
        predictive_samples: Draws (and simulations) per observation for ``predictive``.
        labels: Parameter names (default: ``posterior.labels`` or ``theta_i``).
        levels: Credibility levels for coverage and TARP.
        bootstrap: Bootstrap resamples for the coverage and TARP bands.
        band: Probability mass of those bands.
        out_dir: If given, writes there (atomically): ``metrics.json``, ``samples.npy``,
            ``validation.nc`` (an arviz DataTree: groups ``posterior`` with the draws per test
            observation, ``observed_data`` with x, ``true_parameters``, and ``diagnostics``
            with the per-observation ranks and credibilities), and with ``plots`` the PNGs.
        plots: Write the plots when ``out_dir`` is given.
        corner_index: Test observation shown in ``corner.png``.
        progress: Show a progress bar over the steps.
        sampler_options: Passed to ``posterior.sample``.

    Returns:
        A :class:`ValidationReport`.

    Examples:
        >>> import jax, ilijax
        >>> task = ilijax.tasks.gaussian_linear(dim=2)
        >>> kt, kx, kv = jax.random.split(jax.random.key(0), 3)
        >>> theta = task.prior.sample(kt, (200,))
        >>> x = jax.vmap(task.simulator)(jax.random.split(kx, 200), theta)
        >>> report = validate(kv, ilijax.tasks.ExactPosterior(task), theta, x,
        ...                   num_samples=200, progress=False)
        >>> report.coverage.error < 0.1
        True
    """
    key = check_key(key)
    metrics = _check_metrics(metrics)
    timings: dict[str, float] = {}
    xt = jnp.asarray(x_test, jnp.float32)
    if xt.ndim < 2:
        raise ValueError(
            f"Expected x_test of shape (n_test, x_dim) or (n_test, *x_shape); got {xt.shape}"
        )
    n = xt.shape[0]
    th = jnp.asarray(theta_test, jnp.float32)
    if th.ndim != 2 or th.shape[0] != n:
        raise ValueError(
            f"Expected theta_test of shape ({n}, theta_dim) to match x_test {xt.shape}; "
            f"got {th.shape}"
        )
    d = th.shape[1]
    if labels is None:
        labels = getattr(posterior, "labels", None) or [f"theta_{i}" for i in range(d)]
    labels = tuple(str(s) for s in labels)
    if len(labels) != d:
        raise ValueError(f"Expected {d} labels; got {len(labels)}: {labels}")
    if ("c2st" in metrics or "mmd" in metrics) and reference_samples is None:
        raise ValueError("Expected reference_samples for the 'c2st' and 'mmd' metrics")
    if "predictive" in metrics and simulator is None:
        raise ValueError("Expected a simulator for the 'predictive' metric")
    if not 0 <= corner_index < n:
        raise ValueError(f"Expected corner_index in [0, {n}); got {corner_index}")
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    steps = ["samples"] + list(metrics) + (["write"] if out is not None else [])
    bar = None
    if progress:
        from ilijax._progress import progress_bar

        bar = progress_bar(total=len(steps), desc="validate", unit="step", leave=False)

    def done(step: str, t0: float) -> None:
        timings[step] = time.perf_counter() - t0
        if bar is not None:
            bar.set_postfix_str(step)
            bar.update(1)

    keys = dict(zip(
        ("samples", "coverage", "tarp", "c2st", "predictive"), jax.random.split(key, 5),
        strict=True,
    ))
    t0 = time.perf_counter()
    if samples is None:
        s = sample_test_set(keys["samples"], posterior, xt, num_samples, **(sampler_options or {}))
    else:
        s = check_draws(samples)
        if s.shape[0] != n or s.shape[2] != d:
            raise ValueError(f"Expected samples of shape ({n}, S, {d}); got {s.shape}")
    th = check_truth(th, n, d, name="theta_test")
    s = jax.block_until_ready(s)
    done("samples", t0)

    results: dict[str, Any] = {}
    lp_samples = lp_truth = None
    has_lp = posterior is not None and callable(getattr(posterior, "log_prob", None))
    if has_lp and ("coverage" in metrics or "log_prob" in metrics):
        t0 = time.perf_counter()
        lp_truth = jnp.asarray(posterior.log_prob(th, xt))
        if "coverage" in metrics:
            lp_samples = jnp.asarray(posterior.log_prob(s, xt))
        lp_samples, lp_truth = jax.block_until_ready((lp_samples, lp_truth))
        timings["log_prob_eval"] = time.perf_counter() - t0
    for m in metrics:
        t0 = time.perf_counter()
        if m == "sbc":
            results[m] = sbc(s, th)
        elif m == "coverage":
            if lp_samples is not None:
                results[m] = expected_coverage(
                    keys["coverage"], s, th, log_prob_samples=lp_samples,
                    log_prob_truth=lp_truth, levels=levels, bootstrap=bootstrap, band=band)
            else:
                results[m] = expected_coverage(
                    keys["coverage"], s, th, levels=levels, bootstrap=bootstrap, band=band)
        elif m == "tarp":
            results[m] = tarp(keys["tarp"], s, th, levels=levels, bootstrap=bootstrap, band=band)
        elif m == "log_prob":
            if has_normalized_log_prob(posterior) and lp_truth is not None:
                results[m] = summarize_log_prob(lp_truth, "exact")
            else:
                results[m] = log_prob_of_truth(th, samples=s)
        elif m == "predictions":
            results[m] = predictions(s, th)
        elif m == "c2st" or m == "mmd":
            ref = jnp.asarray(reference_samples, jnp.float32)
            if ref.ndim != 3 or ref.shape[0] > n or ref.shape[2] != d or ref.shape[1] < 2:
                raise ValueError(
                    f"Expected reference_samples of shape (m <= {n}, S_ref >= 2, {d}); got "
                    f"{ref.shape}"
                )
            # equal set sizes, so that chance accuracy is 1/2 (sbibm compares 10k vs 10k)
            k = min(ref.shape[1], s.shape[1])
            ref, mine = ref[:, :k], s[: ref.shape[0], :k]
            if m == "c2st":
                results[m] = c2st(keys["c2st"], ref, mine)
            else:
                results[m] = mmd(ref, mine)
        elif m == "predictive":
            results[m] = posterior_predictive(
                keys["predictive"], posterior, simulator, xt.reshape(n, -1),
                samples=s[:, : min(predictive_samples, s.shape[1])])
        jax.block_until_ready(results[m])
        done(m, t0)

    metrics_dict = _metrics_json(results, labels, s.shape, posterior, timings)
    report = ValidationReport(
        samples=s, theta=th, labels=labels, metrics=metrics_dict, timings=timings,
        **{k: results.get(k) for k in METRICS},
    )
    if out is not None:
        t0 = time.perf_counter()
        files = _write(out, report, xt, plots=plots, corner_index=corner_index,
                       reference=reference_samples)
        report = dataclasses.replace(report, files=files)
        done("write", t0)
        report.metrics["timings"] = {k: round(v, 4) for k, v in timings.items()}
        atomic_write(out / "metrics.json",
                     lambda p: Path(p).write_text(json.dumps(report.metrics, indent=1)))
    if bar is not None:
        bar.close()
    return report


def _metrics_json(results, labels, shape, posterior, timings) -> dict:
    from ilijax import __version__

    n, s, d = shape
    out: dict[str, Any] = {
        "ilijax_version": __version__,
        "num_test": int(n),
        "num_samples": int(s),
        "labels": list(labels),
        "method": getattr(posterior, "method", None),
    }
    if "sbc" in results:
        r = results["sbc"]
        out["sbc"] = {
            "ks_pvalue": _per(labels, r.ks_pvalue),
            "chi2_pvalue": _per(labels, r.chi2_pvalue),
            "min_ks_pvalue": _num(np.min(r.ks_pvalue)),
            "bins": int(len(r.bin_edges) - 1),
        }
    if "coverage" in results:
        r = results["coverage"]
        out["coverage"] = {
            "error": _num(r.error), "bias": _num(r.bias), "ks_pvalue": _num(r.ks_pvalue),
            "method": r.method, "levels": _curve(r.levels), "empirical": _curve(r.empirical),
            "lower": _curve(r.lower), "upper": _curve(r.upper),
        }
    if "tarp" in results:
        r = results["tarp"]
        out["tarp"] = {
            "atc": _num(r.atc), "ks_pvalue": _num(r.ks_pvalue), "levels": _curve(r.levels),
            "ecp": _curve(r.ecp), "lower": _curve(r.lower), "upper": _curve(r.upper),
        }
    if "log_prob" in results:
        r = results["log_prob"]
        out["log_prob"] = {"mean": _num(r.mean), "sem": _num(r.sem), "method": r.method}
    if "predictions" in results:
        r = results["predictions"]
        out["predictions"] = {
            "rmse": _per(labels, r.rmse), "bias": _per(labels, r.bias),
            "inside68": _per(labels, r.inside68), "inside95": _per(labels, r.inside95),
            "mean_std": _per(labels, np.mean(np.asarray(r.std), axis=0)),
        }
    if "c2st" in results:
        acc = np.asarray(results["c2st"].accuracy)
        out["c2st"] = {"mean": _num(acc.mean()), "num_observations": int(acc.size),
                       "per_observation": _curve(acc)}
    if "mmd" in results:
        v = np.asarray(results["mmd"])
        out["mmd"] = {"mean": _num(v.mean()), "num_observations": int(v.size),
                      "per_observation": _curve(v)}
    if "predictive" in results:
        p = np.asarray(results["predictive"].pvalue)
        out["predictive"] = {
            "fraction_below_0.05": _num(np.mean(p < 0.05)),
            "mean_pvalue": _num(p.mean()),
            "mean_pvalue_per_dim": [_num(v) for v in p.reshape(-1, p.shape[-1]).mean(0)],
        }
    out["timings"] = {k: round(v, 4) for k, v in timings.items()}
    return out


def _write(out: Path, report: ValidationReport, x: Array, *, plots: bool, corner_index: int,
           reference: Any) -> dict:
    files: dict[str, str] = {}
    s = np.asarray(report.samples)
    files["samples"] = str(atomic_write(out / "samples.npy", lambda p: _save_npy(p, s)))
    files["netcdf"] = str(atomic_write(
        out / "validation.nc", lambda p: _datatree(report, x).to_netcdf(p, engine="h5netcdf")))
    files["metrics"] = str(out / "metrics.json")
    if plots:
        from ilijax import plots as P

        labels = list(report.labels)
        ref = None
        if reference is not None and corner_index < np.shape(reference)[0]:
            ref = np.asarray(reference)[corner_index]
        figs = {
            "corner.png": lambda p: P.plot_corner(
                s[corner_index], truth=np.asarray(report.theta[corner_index]), labels=labels,
                reference=ref, title=f"test observation {corner_index}", save=p),
        }
        if report.coverage is not None:
            figs["coverage.png"] = lambda p: P.plot_coverage(
                report.coverage, sbc=report.sbc, labels=labels, save=p)
        if report.sbc is not None:
            figs["ranks.png"] = lambda p: P.plot_ranks(report.sbc, labels=labels, save=p)
        if report.tarp is not None:
            figs["tarp.png"] = lambda p: P.plot_tarp(report.tarp, save=p)
        if report.predictions is not None:
            figs["predictions.png"] = lambda p: P.plot_predictions(
                report.predictions, labels=labels, save=p)
        if report.log_prob is not None:
            figs["log_prob.png"] = lambda p: P.plot_log_prob(report.log_prob, save=p)
        if report.predictive is not None:
            figs["predictive.png"] = lambda p: P.plot_predictive(
                report.predictive, index=corner_index, save=p)
        import matplotlib.pyplot as plt

        for name, make in figs.items():
            fig = make(out / name)
            plt.close(fig)
            files[name] = str(out / name)
    return files


def _save_npy(path: str, a: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, a)


def x_dims(rank: int) -> list[str]:
    """Names of the axes of one observation: ``["x_dim"]`` for vectors, ``["x_dim_0", ...]``
    for observations with more axes (as :class:`ilijax.Posterior`'s sampling info)."""
    return ["x_dim"] if rank == 1 else [f"x_dim_{i}" for i in range(rank)]


def _datatree(report: ValidationReport, x: Array):
    import arviz as az
    import xarray as xr

    s = np.asarray(report.samples)
    n, num, d = s.shape
    coords = {"obs": np.arange(n), "parameter": list(report.labels)}
    dt = az.from_dict(
        {"posterior": {"theta": s.transpose(1, 0, 2)[None]},
         "observed_data": {"x": np.asarray(x)}},
        dims={"theta": ["obs", "parameter"], "x": ["obs", *x_dims(np.ndim(x) - 1)]},
        coords=coords,
    )
    dt["true_parameters"] = xr.DataTree(xr.Dataset(
        {"theta": (("obs", "parameter"), np.asarray(report.theta))}, coords=coords))
    diag: dict[str, Any] = {}
    if report.sbc is not None:
        diag["rank"] = (("obs", "parameter"), np.asarray(report.sbc.ranks))
    if report.coverage is not None:
        diag["hpd_credibility"] = (("obs",), np.asarray(report.coverage.credibility))
    if report.tarp is not None:
        diag["tarp_credibility"] = (("obs",), np.asarray(report.tarp.credibility))
    if report.log_prob is not None:
        diag["log_prob_truth"] = (("obs",), np.asarray(report.log_prob.values))
    if diag:
        dt["diagnostics"] = xr.DataTree(xr.Dataset(diag, coords=coords))
    return dt
