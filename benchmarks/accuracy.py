"""Accuracy benchmark: ilijax's C2ST beside the published sbibm numbers, task by task.

Protocol of sbibm (Lueckmann et al., "Benchmarking Simulation-Based Inference", AISTATS 2021):
for each task, train on ``N`` simulations from the prior, then for each of sbibm's 10 fixed
observations draw 10,000 posterior samples and compare them with sbibm's 10,000 reference draws
by the classifier two-sample test (C2ST; 0.5 is perfect, 1.0 separable). Observations and
reference draws are read from sbibm's own files (``ilijax.tasks.references``, from its wheel;
where that cannot be fetched the script generates references and says so in every row).

Methods, with sbibm's architectures (5 transforms, 50 hidden units):

* ``npe``: ``nsf()`` (neural spline flow, 10 bins), direct sampling.
* ``nle``: ``maf()``, then NUTS (``--chains`` chains per observation, SIR initialisation, all
  observations in one compiled call).
* ``nre``: ``classifier(kind="resnet")`` (2 residual blocks), NRE-B with 10 atoms, then NUTS.
* ``snpe``, ``snle``, ``snre``: ``ilijax.sequential`` with 10 rounds of ``N / 10`` simulations,
  one run per observation (non-amortised, as sbibm; slow: 10 trainings per observation).

Training (``--schedule defaults``, the default here): no training options, i.e. what a user
of ``ilijax.npe``/``nle``/``nre`` gets: ``ilijax.fit``'s cosine schedule, Adam with the rate
decayed from 1e-3 to 1e-5 over 40,000 steps of batch 50 (223 epochs at 10^4), gradient clip 5,
10% validation, every epoch run and each member's best-validation parameters kept.
``--schedule cosine`` is the same recipe spelled out (``--steps``, ``--lr`` to vary it);
``--schedule constant`` is sbi's training (Adam 5e-4, early stopping after 20 epochs without
improvement), ilijax's default before issue 14. With frozen statistics on sbibm's observations
1-5 (where it was chosen) the cosine run scored 0.554 / 0.612 / 0.596 (two_moons NPE,
gaussian_mixture NPE, two_moons NRE) against 0.600 / 0.622 / 0.669 for the constant rate; see
``benchmarks/README.md`` for the scores on observations 6-10. ``--ensemble 5`` trains five
members in one vmapped program and mixes them with weights from the held-out loss.

The published means are the sbibm maintainers' 2024 re-run of the neural methods with
sbi > 0.23 (``benchmarks/data/sbibm_published.json``, from ``sbi-benchmark/results``,
``benchmarking_sbi_023/results/re-sbibm_sbi_023.csv``), on the same 10 observations and
reference files.

Usage::

    python benchmarks/accuracy.py --quick            # two tasks, NPE, 10^4, 3 obs: < 15 min
    python benchmarks/accuracy.py                    # NPE, NLE, NRE at 10^4 on five tasks
    python benchmarks/accuracy.py --tasks slcp --methods nle --ensemble 1 5 --sims 1000 10000

Writes ``benchmarks/results/accuracy.json`` (``--quick``: ``accuracy_quick.json``) atomically
after every cell; rows of earlier runs with other (task, method, sims, ensemble) keys are kept,
and the table printed at the end covers all rows in the file.
"""

from __future__ import annotations

import os

# One XLA CPU device per core, set before jax is imported (ensemble members can be sharded).
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count()}")

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import ilijax  # noqa: E402
from ilijax.diagnostics import c2st  # noqa: E402
from ilijax.posterior import resolve_space  # noqa: E402
from ilijax.tasks.references import load_reference  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "accuracy.json"
PUBLISHED_FILE = HERE / "data" / "sbibm_published.json"
FIVE_TASKS = ["two_moons", "slcp", "gaussian_linear", "gaussian_mixture", "bernoulli_glm"]
METHODS = ("npe", "nle", "nre", "snpe", "snle", "snre")
QUICK = {"tasks": ["two_moons", "gaussian_linear"], "methods": ["npe"], "sims": [10_000],
         "num_obs": 3}


def _write_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=1)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_rows(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path) as fh:
            return list(json.load(fh).get("rows", []))
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def _row_key(row: dict[str, Any]) -> tuple:
    return (row["task"], row["method"], row["sims"], row["ensemble"],
            row.get("weighting", "softmax"), row.get("sampler", {}).get("method", "nuts"),
            row.get("sampler", {}).get("num_chains"), row.get("sampler", {}).get("num_warmup"),
            tuple(row["observations"]), row.get("space") or "unconstrained")


def published() -> dict[tuple, dict[str, Any]]:
    """``(task, method, sims) -> {"mean", "std", "n", "per_observation"}`` from the data file."""
    with open(PUBLISHED_FILE) as fh:
        data = json.load(fh)
    out = {}
    for c in data["cells"]:
        out[(c["task"], c["algorithm"].lower(), int(c["num_simulations"]))] = {
            "mean": c["c2st_mean"], "std": c["c2st_std"], "n": c["n"],
            "per_observation": c["c2st_per_observation"], "rt": None,
        }
    # The re-run's own run time per observation (its "rt" column, one sbi run per observation
    # on the maintainers' machines: not comparable in absolute terms, a scale for the cost).
    rts: dict[tuple, list[float]] = {}
    with open(PUBLISHED_FILE.with_name("sbibm_published_rows.csv")) as fh:
        for r in csv.DictReader(fh):
            k = (r["task"], r["algorithm"].lower(), int(r["num_simulations"]))
            rts.setdefault(k, []).append(float(r["rt"]))
    for k, v in rts.items():
        if k in out:
            out[k]["rt"] = float(np.mean(v))
    return out


def _train(method: str, key, task, theta, x, ensemble: int, args):
    common = dict(prior=task.prior, ensemble=ensemble, progress=False, labels=task.labels,
                  weighting=args.weighting, **training_options(args, theta.shape[0]))
    if method == "npe":
        return ilijax.npe(key, theta, x, estimator=ilijax.estimators.nsf(hidden=50,
                          transforms=5), space=args.space, **common)
    if method == "nle":
        return ilijax.nle(key, theta, x, estimator=ilijax.estimators.maf(hidden=50,
                          transforms=5), **common)
    if method == "nre":
        clf = ilijax.estimators.classifier(kind="resnet", hidden=50, blocks=2)
        return ilijax.nre(key, theta, x, classifier=clf, variant="b", num_atoms=10, **common)
    raise ValueError(f"Expected method in {METHODS}; got {method!r}")


def training_options(args, num_rows: int) -> dict[str, Any]:
    """``fit`` options: none (``--schedule defaults``: what a user gets), a cosine
    learning-rate schedule over ``--steps`` steps, or a constant rate with early stopping
    (``--schedule constant``, sbi's training)."""
    if args.schedule == "defaults":
        return {}
    if args.schedule == "constant":
        return {"batch_size": args.batch_size, "learning_rate": args.lr,
                "max_epochs": args.max_epochs, "patience": args.patience}
    steps_per_epoch = max(1, int(num_rows * 0.9) // args.batch_size)
    epochs = max(1, -(-args.steps // steps_per_epoch))
    schedule = optax.cosine_decay_schedule(args.lr, epochs * steps_per_epoch, alpha=0.01)
    # every epoch is run; fit keeps each member's best-validation parameters
    return {"batch_size": args.batch_size, "optimizer": optax.adam(schedule),
            "max_epochs": epochs, "patience": None}


def _training_label(args, method: str) -> str:
    if args.schedule == "defaults" and not method.startswith("s"):
        return "ilijax defaults (cosine 1e-3 over 40,000 steps, batch 50)"
    if args.schedule == "constant" or method.startswith("s"):
        return (f"constant lr {args.lr if args.schedule == 'constant' else 5e-4:g}, batch "
                f"{args.batch_size}, patience {args.patience}")
    return f"cosine lr {args.lr:g} over {args.steps} steps, batch {args.batch_size}"


def _mcmc_options(args) -> dict[str, Any]:
    if args.sampler == "default":  # what Posterior.sample does without options
        return {}
    return {"method": args.sampler, "num_chains": args.chains, "num_warmup": args.warmup,
            "num_candidates": max(10 * args.chains, 1000)}


def run_amortised(method, task, sims, ensemble, refs, args) -> dict[str, Any]:
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(args.seed), sims), ensemble)
    k_sim, k_fit, k_draw = jax.random.split(key, 3)
    data = ilijax.simulate(k_sim, task.prior, task.simulator, sims, progress=False)
    t0 = time.perf_counter()
    posterior, info = _train(method, k_fit, task, data.theta, data.x, ensemble, args)
    train_s = time.perf_counter() - t0
    x_obs = np.stack([r.observation for r in refs])
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if method == "npe":
        draws = np.asarray(posterior.sample(k_draw, x_obs, args.num_samples))
    else:
        with warnings.catch_warnings(record=True) as caught:  # R-hat warnings: kept in the row
            warnings.simplefilter("always")
            draws, si = posterior.sample(k_draw, x_obs, args.num_samples, return_info=True,
                                         **_mcmc_options(args))
        for w in caught:
            print(f"    warning: {w.message}", flush=True)
        draws = np.asarray(draws)
        extra = {"rhat_max": np.asarray(si.rhat).max(axis=-1).round(4).tolist(),
                 "sampler": {"method": si.method, "num_chains": int(si.num_chains),
                             **_mcmc_options(args)},
                 "sampler_warnings": [str(w.message) for w in caught]}
    sample_s = time.perf_counter() - t0
    fit = {"epochs": np.asarray(info.epochs).tolist(),
           "best_validation_loss": np.asarray(info.best_validation_loss).round(4).tolist(),
           "weights": np.asarray(posterior.weights).round(4).tolist(),
           "compile_s": round(float(info.compile_time), 2)}
    return {"draws": draws, "train_s": train_s, "sample_s": sample_s, "fit": fit, **extra}


def run_sequential(method, task, sims, ensemble, refs, args) -> dict[str, Any]:
    base = method[1:]
    rounds = args.rounds
    per_round = sims // rounds
    draws, train_s, sample_s, fits = [], 0.0, 0.0, []
    opts = {} if base == "npe" else {"proposal_samples_options": _mcmc_options(args)}
    if base == "nle":
        opts["estimator"] = ilijax.estimators.maf(hidden=50, transforms=5)
    elif base == "nre":
        opts["classifier"] = ilijax.estimators.classifier(kind="resnet", hidden=50, blocks=2)
    else:
        opts["estimator"] = ilijax.estimators.nsf(hidden=50, transforms=5)
    for i, ref in enumerate(refs):
        key = jax.random.fold_in(jax.random.key(args.seed), 1000 + ref.num_observation)
        k_fit, k_draw = jax.random.split(key)
        t0 = time.perf_counter()
        post, rinfo = ilijax.sequential(
            k_fit, task.simulator, task.prior, ref.observation, method=base, rounds=rounds,
            simulations_per_round=per_round, ensemble=ensemble, progress=False,
            # a fixed-step schedule does not fit rounds of growing size: constant rate, stopping
            batch_size=args.batch_size, learning_rate=5e-4, max_epochs=args.max_epochs,
            patience=args.patience, **opts)
        train_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        kw = {} if base == "npe" else _mcmc_options(args)
        draws.append(np.asarray(post.sample(k_draw, ref.observation, args.num_samples, **kw)))
        sample_s += time.perf_counter() - t0
        fits.append([int(np.max(r.info.epochs)) for r in rinfo])
        print(f"      obs {i + 1}: {rounds} rounds, {time.perf_counter() - t0:.0f} s sampling",
              flush=True)
    return {"draws": np.stack(draws), "train_s": train_s, "sample_s": sample_s,
            "fit": {"epochs_per_round": fits}}


def run_cell(task, method, sims, ensemble, refs, args, pub) -> dict[str, Any]:
    print(f"  {task.name} {method} {sims} ensemble={ensemble}", flush=True)
    t_cell = time.perf_counter()
    runner = run_sequential if method.startswith("s") else run_amortised
    res = runner(method, task, sims, ensemble, refs, args)
    draws = res.pop("draws")
    if not np.isfinite(draws).all():
        bad = int((~np.isfinite(draws)).any(axis=-1).sum())
        raise RuntimeError(f"{task.name} {method}: {bad} non-finite posterior draws")
    t0 = time.perf_counter()
    accs, epochs = [], []
    k_c2st = jax.random.key(args.seed + 7)
    for i, ref in enumerate(refs):
        # sbibm's order: reference first (its statistics z-score both sets), then the method
        out = c2st(jax.random.fold_in(k_c2st, ref.num_observation), ref.samples, draws[i],
                   epochs=args.c2st_epochs)
        accs.append(float(out.accuracy))
        epochs.append(np.asarray(out.epochs).tolist())
    c2st_s = time.perf_counter() - t0
    a = np.asarray(accs)
    p = pub.get((task.name, method, sims))
    row = {
        "task": task.name, "method": method, "sims": sims, "ensemble": ensemble,
        "weighting": args.weighting,
        "space": resolve_space(args.space, task.prior) if method.endswith("npe") else None,
        "quick": bool(args.quick),
        "observations": [r.num_observation for r in refs],
        "reference_source": sorted({r.source for r in refs}),
        "num_samples": args.num_samples,
        "training": _training_label(args, method),
        "c2st_mean": float(a.mean()),
        "c2st_std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "c2st_min": float(a.min()), "c2st_max": float(a.max()),
        "c2st_per_observation": [round(v, 4) for v in accs],
        "c2st_classifier_epochs": epochs, "c2st_epoch_cap": args.c2st_epochs,
        "published_mean": None if p is None else p["mean"],
        "published_std": None if p is None else p["std"],
        # same observations only: the published mean over the observations run here
        "published_mean_same_obs": None if p is None else _mean_same(p, refs),
        "train_s": round(res.pop("train_s"), 1), "sample_s": round(res.pop("sample_s"), 1),
        "c2st_s": round(c2st_s, 1), "cell_s": round(time.perf_counter() - t_cell, 1),
        "loadavg_end": list(os.getloadavg()),
        **res,
    }
    print("    C2ST " + " ".join(f"{v:.3f}" for v in accs)
          + f"  mean {a.mean():.3f}; published "
          + ("-" if p is None else f"{row['published_mean_same_obs']:.3f}")
          + f"; {row['cell_s']:.0f} s", flush=True)
    return row


def _mean_same(p: dict[str, Any], refs) -> float | None:
    return _mean_same_numbers(p, [r.num_observation for r in refs])


def _mean_same_numbers(p: dict[str, Any], numbers: list[int]) -> float | None:
    vals = [p["per_observation"][k - 1] for k in numbers]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def _refresh(rows: list[dict[str, Any]], pub) -> list[dict[str, Any]]:
    """The rows with their published numbers taken again from the data file."""
    for r in rows:
        p = pub.get((r["task"], r["method"], r["sims"]))
        r["published_mean"] = None if p is None else p["mean"]
        r["published_std"] = None if p is None else p["std"]
        r["published_mean_same_obs"] = None if p is None else _mean_same_numbers(
            p, r["observations"])
        r["difference_se"] = None if p is None else _paired_se(p, r)
        r["published_rt"] = None if p is None else p["rt"]
    return rows


def restrict(row: dict[str, Any], numbers: list[int]) -> dict[str, Any]:
    """``row`` scored on the observations in ``numbers`` only (e.g. the ones a default was not
    chosen on); its per-observation C2ST and summary recomputed from them."""
    keep = [i for i, k in enumerate(row["observations"]) if k in numbers]
    if not keep:
        raise ValueError(f"row {_row_key(row)} has none of the observations {numbers}")
    a = np.asarray(row["c2st_per_observation"])[keep]
    return {**row, "observations": [row["observations"][i] for i in keep],
            "c2st_per_observation": a.tolist(), "c2st_mean": float(a.mean()),
            "c2st_std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "c2st_min": float(a.min()), "c2st_max": float(a.max())}


def _paired_se(p: dict[str, Any], row: dict[str, Any]) -> float | None:
    """Standard error of (ilijax - published) mean C2ST, paired by observation (the same
    observations and references on both sides)."""
    d = [a - p["per_observation"][k - 1]
         for a, k in zip(row["c2st_per_observation"], row["observations"], strict=True)
         if p["per_observation"][k - 1] is not None]
    return float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None


def verdict(row: dict[str, Any]) -> str:
    """``win`` / ``loss`` when the difference from the published mean exceeds its paired
    standard error, ``tie`` otherwise (issue 14's rule)."""
    pub, se = row.get("published_mean_same_obs"), row.get("difference_se")
    if pub is None or se is None:
        return "-"
    diff = row["c2st_mean"] - pub
    return "win" if diff < -se else "loss" if diff > se else "tie"


def table(rows: list[dict[str, Any]]) -> str:
    """The printed table: one line per cell, sorted by task, method, budget and ensemble."""
    head = (f"{'task':<24} {'method':<6} {'sims':>6} {'ens':>3} {'ilijax C2ST':>16} "
            f"{'published':>9} {'diff':>7} {'obs':>3} {'train s':>8} {'sample s':>8} "
            f"{'C2ST s':>7}")
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r["task"], METHODS.index(r["method"]), r["sims"],
                                         r["ensemble"], r.get("weighting", "softmax"))):
        pub = r.get("published_mean_same_obs")
        pub_s = "-" if pub is None else f"{pub:.3f}"
        diff = "-" if pub is None else f"{r['c2st_mean'] - pub:+.3f}"
        generated = not any(s.startswith("sbibm") for s in r["reference_source"])
        lines.append(
            f"{r['task']:<24} {r['method']:<6} {r['sims']:>6} {r['ensemble']:>3} "
            f"{r['c2st_mean']:>8.3f} ± {r['c2st_std']:.3f} {pub_s:>9} {diff:>7} "
            f"{len(r['observations']):>3} {r['train_s']:>8.1f} {r['sample_s']:>8.1f} "
            f"{r['c2st_s']:>7.1f}" + ("  (quick)" if r.get("quick") else "")
            + ("  (generated references)" if generated else "")
        )
    lines.append("C2ST: mean ± std over observations (0.5 is perfect). published: sbibm re-run "
                 "(sbi > 0.23), mean over the same observations. diff < 0: ilijax better.")
    return "\n".join(lines)


def _obs_label(numbers: list[int]) -> str:
    if len(numbers) > 2 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}-{numbers[-1]}"
    return ",".join(map(str, numbers))


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as markdown (for the README), one line per cell."""
    lines = ["| task | method | sims | members | weights | sampler | obs | ilijax C2ST "
             "(mean ± sd) | published | difference ± se | verdict | train s | sample s | "
             "sbibm rt |",
             "|---|---|---:|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["task"], METHODS.index(r["method"]), r["sims"],
                                         r["ensemble"], r.get("weighting", "softmax"))):
        pub = r.get("published_mean_same_obs")
        win = pub is not None and r["c2st_mean"] <= pub
        c = f"{r['c2st_mean']:.3f} ± {r['c2st_std']:.3f}"
        lines.append(
            f"| {r['task']} | {r['method'].upper()} | {r['sims']} | {r['ensemble']} | "
            f"{r.get('weighting', 'softmax')} | {r.get('sampler', {}).get('method', 'direct')}"
            + (" (theta space)" if r.get("space") == "theta" else "") + " | "
            f"{_obs_label(r['observations'])} | "
            + (f"**{c}**" if win else c) + " | "
            + ("-" if pub is None else f"{pub:.3f}") + " | "
            + ("-" if pub is None else f"{r['c2st_mean'] - pub:+.3f}")
            + ("" if r.get("difference_se") is None else f" ± {r['difference_se']:.3f}")
            + f" | {verdict(r)} | {r['train_s']:.0f} | {r['sample_s']:.0f} | "
            + ("-" if r.get("published_rt") is None else f"{r['published_rt']:.1f}") + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=FIVE_TASKS)
    ap.add_argument("--methods", nargs="+", default=["npe", "nle", "nre"], choices=METHODS)
    ap.add_argument("--sims", nargs="+", type=int, default=[10_000])
    ap.add_argument("--ensemble", nargs="+", type=int, default=[1])
    ap.add_argument("--weighting", default="softmax", choices=["softmax", "uniform", "stacking"],
                    help="ensemble weights (npe/nle/nre)")
    ap.add_argument("--space", default="auto", choices=["auto", "unconstrained", "theta"],
                    help="npe: auto (the default of npe: theta space for a bounded prior), the "
                         "prior support's unconstrained space, or theta space truncated to the "
                         "support by rejection (sbi's way); rows record the space that ran")
    ap.add_argument("--num-obs", type=int, default=10, help="sbibm observations 1..num_obs")
    ap.add_argument("--obs", nargs="+", type=int, default=None,
                    help="these sbibm observations instead (e.g. 6 7 8 9 10: score on the "
                         "ones defaults were not chosen on)")
    ap.add_argument("--num-samples", type=int, default=10_000)
    ap.add_argument("--schedule", default="defaults", choices=["defaults", "cosine", "constant"],
                    help="defaults: no training options (ilijax.fit's defaults, what a user "
                         "gets); cosine: learning rate --lr decayed to 1%% over --steps "
                         "steps, every "
                         "epoch run, best-validation parameters kept; constant: --lr with early "
                         "stopping after --patience epochs (ilijax's defaults: 5e-4, 20)")
    ap.add_argument("--steps", type=int, default=40_000, help="optimizer steps (cosine)")
    ap.add_argument("--lr", type=float, default=None,
                    help="peak (cosine, default 1e-3) or constant (default 5e-4) learning rate")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--max-epochs", type=int, default=1000, help="epoch cap (constant)")
    ap.add_argument("--patience", type=int, default=20, help="early stopping (constant)")
    ap.add_argument("--sampler", default="default",
                    choices=["default", "nuts", "hmc", "mala", "slice"],
                    help="MCMC of the nle/nre cells with --chains and --warmup (sbibm used "
                         "slice sampling); default: Posterior.sample's own choice, no options")
    ap.add_argument("--chains", type=int, default=100, help="MCMC chains per observation")
    ap.add_argument("--warmup", type=int, default=500, help="NUTS warm-up steps per chain")
    ap.add_argument("--rounds", type=int, default=10, help="rounds of the sequential methods")
    ap.add_argument("--c2st-epochs", type=int, default=10_000,
                    help="epoch cap of the classifier (sbibm: max_iter 10,000, i.e. run to "
                         "convergence; the row records the folds that hit it)")
    ap.add_argument("--reference", default="auto", choices=["auto", "sbibm", "ilijax"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="two tasks, NPE, 10^4 simulations, 3 observations (< 15 min)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default benchmarks/results/accuracy.json (--quick: accuracy_quick.json)")
    ap.add_argument("--table", action="store_true",
                    help="only print the table of the rows in --out (published numbers refreshed)")
    ap.add_argument("--markdown", action="store_true", help="with --table: as markdown")
    args = ap.parse_args(argv)
    if args.lr is None:
        args.lr = 5e-4 if args.schedule == "constant" else 1e-3
    if args.table:
        out = args.out or DEFAULT_OUT
        rows = _load_rows(out)
        if args.obs is not None:  # the rows' scores on these observations only
            rows = [restrict(r, args.obs) for r in rows]
        rows = _refresh(rows, published())
        print(markdown(rows) if args.markdown else table(rows))
        return 0
    if args.quick:
        args.tasks, args.methods = QUICK["tasks"], QUICK["methods"]
        args.sims, args.num_obs = QUICK["sims"], QUICK["num_obs"]
    if args.out is None:
        args.out = DEFAULT_OUT.with_name("accuracy_quick.json") if args.quick else DEFAULT_OUT
    for t in args.tasks:
        if t not in ilijax.tasks.references.SBIBM_TASKS:
            ap.error(f"--tasks: expected names in {ilijax.tasks.references.SBIBM_TASKS}; "
                     f"got {t!r}")
    if args.obs is not None and not all(1 <= k <= 10 for k in args.obs):
        ap.error(f"--obs: expected numbers in 1..10; got {args.obs}")
    if not 1 <= args.num_obs <= 10:
        ap.error(f"--num-obs: expected 1..10; got {args.num_obs}")
    pub = published()
    meta = {
        "benchmark": "accuracy",
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "ilijax": ilijax.__version__, "jax": jax.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "devices": [str(d) for d in jax.devices()],
        "loadavg_start": list(os.getloadavg()),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "published_source": json.loads(PUBLISHED_FILE.read_text())["source"],
        "c2st": ("ilijax.diagnostics.c2st with sbibm's settings (z-scored by the reference, "
                 "MLP 2 x 10*dim ReLU, Adam 1e-3, batch 200, L2 1e-4, 5 folds), epoch cap "
                 f"{args.c2st_epochs}"),
    }
    rows = [r for r in _load_rows(args.out)]
    t_all = time.perf_counter()
    for name in args.tasks:
        task = ilijax.tasks.get(name)
        t0 = time.perf_counter()
        refs = [load_reference(task, k, source=args.reference, num_samples=args.num_samples,
                               seed=args.seed)
                for k in (args.obs or range(1, args.num_obs + 1))]
        print(f"{name}: {len(refs)} references ({refs[0].source}) in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        for method in args.methods:
            for sims in args.sims:
                for ens in args.ensemble:
                    row = run_cell(task, method, sims, ens, refs, args, pub)
                    rows = [r for r in rows if _row_key(r) != _row_key(row)] + [row]
                    _write_atomic(args.out, {**meta, "rows": rows})
    rows = _refresh(rows, pub)  # rows of earlier runs included
    meta["total_s"] = round(time.perf_counter() - t_all, 1)
    meta["loadavg_end"] = list(os.getloadavg())
    _write_atomic(args.out, {**meta, "rows": rows})
    print()
    print(table(rows))
    print(f"\nwrote {args.out} ({meta['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
