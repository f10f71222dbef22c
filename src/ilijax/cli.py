"""Command line: ``ilijax demo`` (more commands come with the pipeline).

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
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
    fig = plot_losses(info.train_loss, info.validation_loss, title="NPE training")
    fig.savefig(out / "losses.png", dpi=110)
    print(f"\nwrote {out}/: {path.name}, history.json, summary.json, corner.png, losses.png")
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
