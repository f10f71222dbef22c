"""Command line: ``ilijax demo`` and ``ilijax validate`` (more come with the pipeline).

This module and ``ilijax.pipeline`` are the only places that print or write files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _use_all_cores() -> int:
    """One XLA CPU device per core, so ensemble members run in parallel (must run before jax
    initialises its backend; harmless when it already has)."""
    import jax

    n = os.cpu_count() or 1
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except Exception:  # noqa: BLE001  backend already initialised, or an accelerator
        pass
    return n


def _atomic_write_text(path: Path, text: str) -> None:
    from ilijax._files import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def demo(args: argparse.Namespace) -> int:
    """Trains an NPE ensemble on the embedded toy task and writes its outputs."""
    _use_all_cores()
    import jax
    import numpy as np

    import ilijax
    from ilijax.plots import plot_corner, plot_losses

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = ilijax.tasks.toy()
    key = jax.random.key(args.seed)
    k_sim, k_fit, k_obs, k_sample = jax.random.split(key, 4)
    print(f"ilijax {ilijax.__version__} demo: task '{task.name}' ({task.theta_dim} parameters, "
          f"x of length {task.x_dim}); {jax.device_count()} CPU device(s)")
    t0 = time.perf_counter()
    data = ilijax.simulate(k_sim, task.prior, task.simulator, args.simulations, progress=False)
    print(f"simulated {data.theta.shape[0]} pairs in {time.perf_counter() - t0:.1f} s")

    estimator = ilijax.estimators.nsf(hidden=args.hidden, transforms=args.transforms)
    posterior, info = ilijax.npe(
        k_fit, data.theta, data.x, prior=task.prior, estimator=estimator,
        ensemble=args.ensemble, max_epochs=args.max_epochs, patience=args.patience,
        labels=task.labels, progress=not args.quiet,
    )
    print(f"trained {args.ensemble} NSF members together: compile {info.compile_time:.1f} s, "
          f"training {info.train_time:.1f} s, epochs per member {info.epochs.tolist()}, "
          f"weights {np.round(posterior.weights, 3).tolist()}")

    theta_true = task.prior.sample(k_obs)
    x_obs = task.simulator(jax.random.fold_in(k_obs, 1), theta_true)
    t0 = time.perf_counter()
    draws = np.asarray(posterior.sample(k_sample, x_obs, args.samples))
    sample_time = time.perf_counter() - t0
    lo, med, hi = np.percentile(draws, [16, 50, 84], axis=0)
    print(f"\nposterior for one observation ({args.samples} draws in {sample_time:.2f} s, "
          f"compile included):")
    print(f"  {'parameter':<10} {'true':>8} {'mean':>8} {'68% interval':>20}  inside")
    rows = []
    for i, name in enumerate(task.labels):
        inside = bool(lo[i] <= theta_true[i] <= hi[i])
        print(f"  {name:<10} {float(theta_true[i]):8.3f} {draws[:, i].mean():8.3f} "
              f"   [{lo[i]:7.3f}, {hi[i]:7.3f}]  {'yes' if inside else 'no'}")
        rows.append({"parameter": name, "true": float(theta_true[i]),
                     "mean": float(draws[:, i].mean()), "median": float(med[i]),
                     "q16": float(lo[i]), "q84": float(hi[i])})
    if task.sample_posterior is not None:
        ref = np.asarray(task.sample_posterior(k_sample, x_obs, args.samples))
        print("  exact posterior mean: " + ", ".join(f"{m:.3f}" for m in ref.mean(0)))
    else:
        ref = None

    path = ilijax.save(posterior, out / "posterior.npz")
    history = {
        "train_loss": np.where(np.isnan(info.train_loss), None, info.train_loss).tolist(),
        "validation_loss": np.where(np.isnan(info.validation_loss), None,
                                    info.validation_loss).tolist(),
        "best_validation_loss": info.best_validation_loss.tolist(),
        "epochs": info.epochs.tolist(),
        "compile_time_s": info.compile_time,
        "train_time_s": info.train_time,
    }
    _atomic_write_text(out / "history.json", json.dumps(history, indent=1))
    _atomic_write_text(out / "summary.json", json.dumps(
        {"task": task.name, "theta_true": np.asarray(theta_true).tolist(),
         "x_obs": np.asarray(x_obs).tolist(), "posterior": rows,
         "weights": posterior.weights.tolist()}, indent=1))
    fig = plot_corner(draws, truth=np.asarray(theta_true), labels=task.labels, reference=ref,
                      limits=[(0.0, 1.0)] * task.theta_dim,
                      title="toy: NPE ensemble (blue) vs exact posterior (black)")
    fig.savefig(out / "corner.png", dpi=110)
    fig = plot_losses(info, title="NPE training")
    fig.savefig(out / "losses.png", dpi=110)

    # validation: calibration of the posterior over a fresh test set, all in one pass
    k_test, k_val = jax.random.split(jax.random.fold_in(key, 7))
    test = ilijax.simulate(k_test, task.prior, task.simulator, args.test, progress=False)
    t0 = time.perf_counter()
    report = ilijax.validate(k_val, posterior, test.theta, test.x,
                             num_samples=args.test_samples, out_dir=out / "validation",
                             progress=not args.quiet)
    print(f"\n{report.summary()}")
    print(f"  ({time.perf_counter() - t0:.1f} s, compile and plots included)")
    print(f"\nwrote {out}/: {path.name}, history.json, summary.json, corner.png, losses.png, "
          f"validation/ ({', '.join(sorted(Path(f).name for f in report.files.values()))})")
    return 0


def validate(args: argparse.Namespace) -> int:
    """Validates a saved posterior on a test set from an ``.npz`` file."""
    _use_all_cores()
    import jax

    import ilijax

    posterior = ilijax.load(args.posterior)
    test = ilijax.data.load_npz(args.data, args.theta_key, args.x_key, nan_policy="raise",
                                min_rows=2)
    if args.max_test is not None:
        test = ilijax.Dataset(test.theta[: args.max_test], test.x[: args.max_test])
    print(f"validating {posterior!r} on {test.theta.shape[0]} test pairs x "
          f"{args.num_samples} draws")
    report = ilijax.validate(
        jax.random.key(args.seed), posterior, test.theta, test.x, metrics=args.metrics,
        num_samples=args.num_samples, out_dir=args.out, plots=not args.no_plots,
        progress=not args.quiet)
    print(report.summary())
    print(f"wrote {args.out}/: " + ", ".join(sorted(Path(f).name for f in report.files.values())))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ilijax`` console command."""
    parser = argparse.ArgumentParser(prog="ilijax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train an NPE ensemble on an embedded toy task")
    p.add_argument("--out", default="ilijax-demo", help="output folder (default: ./ilijax-demo)")
    p.add_argument("--simulations", type=int, default=5000)
    p.add_argument("--ensemble", type=int, default=4)
    p.add_argument("--hidden", type=int, default=50)
    p.add_argument("--transforms", type=int, default=5)
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test", type=int, default=300, help="test pairs for the validation")
    p.add_argument("--test-samples", type=int, default=500, help="draws per test pair")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    from ilijax.diagnostics.report import DEFAULT_METRICS

    v = sub.add_parser("validate", help="validate a saved posterior on a test set")
    v.add_argument("posterior", help="a posterior written by ilijax.save (.npz)")
    v.add_argument("--data", required=True, help=".npz file with the test set")
    v.add_argument("--theta-key", default="theta", help="name of theta in --data")
    v.add_argument("--x-key", default="x", help="name of x in --data")
    v.add_argument("--out", default="ilijax-validation", help="output folder")
    v.add_argument("--num-samples", type=int, default=1000, help="draws per test pair")
    v.add_argument("--max-test", type=int, default=None, help="use the first N test pairs")
    v.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                   choices=["sbc", "coverage", "tarp", "log_prob", "predictions"])
    v.add_argument("--no-plots", action="store_true", help="numbers and samples only")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args)
    if args.command == "validate":
        return validate(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
