"""Command line: ``ilijax run | train | validate | sweep | convert | demo``.

This module and ``ilijax.pipeline`` are the only places that print or write files.
"""

from __future__ import annotations

import argparse
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
    """A full three-stage run (data -> inference -> validation) on the embedded toy task."""
    _use_all_cores()
    from ilijax import pipeline

    raw = {
        "data": {"task": {"name": "toy", "num_simulations": args.simulations,
                          "observation": True},
                 "test_fraction": args.test / (args.simulations + args.test)},
        "inference": {
            "method": "npe",
            "nets": [{"model": "nsf", "hidden_features": args.hidden,
                      "num_transforms": args.transforms, "repeats": args.ensemble,
                      "signature": "nsf"}],
            # only what was asked for: otherwise fit's default (cosine) training
            "train": {k: v for k, v in (("max_epochs", args.max_epochs),
                                        ("stop_after_epochs", args.patience)) if v is not None},
            "seed": args.seed, "out_dir": str(Path(args.out).resolve()),
        },
        "validation": {"num_samples": args.test_samples, "xobs_samples": args.samples},
    }
    # the test pairs come on top of the training simulations
    raw["data"]["task"]["num_simulations"] = args.simulations + args.test
    cfg = pipeline.validate_config(pipeline.config.apply_overrides(raw, args.override,
                                                                   Path.cwd()))
    import ilijax

    print(f"ilijax {ilijax.__version__} demo: NPE ensemble on the toy task (ltu-ili's quadratic "
          f"toy), data -> inference -> validation")
    t0 = time.perf_counter()
    result = pipeline.run(cfg, force=args.force, log=None if args.quiet else print,
                          progress=not args.quiet)
    seconds = time.perf_counter() - t0
    _print_observation(result, cfg)
    if args.quiet and result.report is not None:
        print(result.report.summary())
    _print_outputs(result, seconds)
    return 0


def _print_observation(result, cfg) -> None:
    """The posterior at the demo's observation against the truth and the exact posterior."""
    import jax
    import numpy as np

    import ilijax

    val = result.out_dir / f"{cfg.inference.prefix}validation"
    sims = result.out_dir / f"{cfg.inference.prefix}simulations.npz"
    if not (val / "xobs_samples.npy").exists() or not sims.exists():
        return
    draws = np.load(val / "xobs_samples.npy")
    with np.load(sims) as z:
        theta_true, x_obs = z["theta_fid"], z["x_obs"]
    task = ilijax.tasks.get(cfg.data.task.name)
    lo, hi = np.percentile(draws, [16, 84], axis=0)
    print(f"\nposterior at the observation ({draws.shape[0]} draws):")
    print(f"  {'parameter':<10} {'true':>8} {'mean':>8} {'68% interval':>20}  inside")
    for i, name in enumerate(task.labels):
        inside = "yes" if lo[i] <= theta_true[i] <= hi[i] else "no"
        print(f"  {name:<10} {theta_true[i]:8.3f} {draws[:, i].mean():8.3f}    "
              f"[{lo[i]:7.3f}, {hi[i]:7.3f}]  {inside}")
    if task.sample_posterior is not None:
        ref = np.asarray(task.sample_posterior(jax.random.key(0), x_obs, draws.shape[0]))
        print("  exact posterior mean: " + ", ".join(f"{m:.3f}" for m in ref.mean(0)))


def _print_outputs(result, seconds: float) -> None:
    out = result.out_dir
    names = sorted({str(Path(p).relative_to(out)) for p in result.files.values()
                    if Path(p).is_relative_to(out)})
    ran = ", ".join(result.ran) or "nothing"
    reused = f"; reused: {', '.join(result.reused)}" if result.reused else ""
    print(f"\nran: {ran}{reused} in {seconds:.1f} s. Wrote {out}/:")
    for n in names:
        print(f"  {n}")


def _load(args):
    from ilijax import pipeline

    return pipeline.load_config(args.config, overrides=args.override)


def run_cmd(args: argparse.Namespace, stages) -> int:
    """``ilijax run`` / ``train`` / ``validate CONFIG``: the pipeline's stages."""
    _use_all_cores()
    from ilijax import pipeline

    cfg = _load(args)
    t0 = time.perf_counter()
    result = pipeline.run(cfg, stages=stages, force=args.force,
                          log=None if args.quiet else print, progress=not args.quiet)
    _print_outputs(result, time.perf_counter() - t0)
    return 0


def sweep_cmd(args: argparse.Namespace) -> int:
    """``ilijax sweep``: every combination of the grid."""
    _use_all_cores()
    from ilijax import pipeline
    from ilijax.pipeline import sweep as sweep_mod

    if args.collect:
        cfg = _load(args)
        path = sweep_mod.collect(Path(cfg.inference.out_dir) / "sweep")
    else:
        if not args.grid:
            raise pipeline.ConfigError("sweep: expected at least one --grid key=v1,v2")
        path = pipeline.sweep(args.config, args.grid, overrides=args.override, trial=args.trial,
                              force=args.force, log=None if args.quiet else print)
    print(f"\nwrote {path}:\n{Path(path).read_text()}")
    return 0


def convert_cmd(args: argparse.Namespace) -> int:
    """``ilijax convert``: ltu-ili (or ilijax) config files -> one resolved ilijax config."""
    import yaml

    cfg = _load(args)
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    if args.output:
        _atomic_write_text(Path(args.output), text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
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


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="+", help="config files (ilijax or ltu-ili YAML), merged "
                   "in order")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. inference.train.learning_rate=1e-3 "
                   "(repeatable)")
    p.add_argument("--force", action="store_true", help="rerun stages whose outputs exist")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ilijax`` console command."""
    parser = argparse.ArgumentParser(
        prog="ilijax", description="JAX-native implicit likelihood inference: run the "
        "data -> inference -> validation pipeline from YAML configs (ilijax's or ltu-ili's).")
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run data -> inference -> validation from config files")
    _config_args(r)
    t = sub.add_parser("train", help="run the data and inference stages only")
    _config_args(t)
    s = sub.add_parser("sweep", help="run every combination of a grid of config values")
    _config_args(s)
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a swept key and its values (repeatable)")
    s.add_argument("--trial", type=int, default=None,
                   help="run only trial i (0-based; one task of a cluster job array)")
    s.add_argument("--collect", action="store_true",
                   help="only rebuild sweep.csv from the finished trials")
    c = sub.add_parser("convert", help="write ltu-ili config files as one ilijax config")
    c.add_argument("config", nargs="+", help="config files, merged in order")
    c.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--output", default=None, help="output YAML file (default: print)")

    p = sub.add_parser("demo", help="a full three-stage run on the embedded toy task")
    p.add_argument("--out", default="ilijax-demo", help="output folder (default: ./ilijax-demo)")
    p.add_argument("--simulations", type=int, default=5000, help="training simulations")
    p.add_argument("--ensemble", type=int, default=4)
    p.add_argument("--hidden", type=int, default=50)
    p.add_argument("--transforms", type=int, default=5)
    p.add_argument("--max-epochs", type=int, default=None,
                   help="epochs (default: ilijax.fit's cosine run, 40,000 steps)")
    p.add_argument("--patience", type=int, default=None,
                   help="early stopping after this many epochs (switches to a constant rate)")
    p.add_argument("--samples", type=int, default=5000, help="draws at the observation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test", type=int, default=300, help="test pairs for the validation")
    p.add_argument("--test-samples", type=int, default=500, help="draws per test pair")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--force", action="store_true", help="rerun stages whose outputs exist")
    p.add_argument("--quiet", action="store_true", help="no progress output")

    from ilijax.diagnostics.report import DEFAULT_METRICS

    v = sub.add_parser("validate", help="validate a trained posterior: the pipeline's "
                       "validation stage (config files), or a saved POSTERIOR.npz with --data")
    v.add_argument("config", nargs="+", help="config files, or one posterior .npz with --data")
    v.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    v.add_argument("--force", action="store_true", help="rerun even if outputs exist")
    v.add_argument("--data", default=None, help=".npz file with the test set (with a .npz "
                   "posterior)")
    v.add_argument("--theta-key", default="theta", help="name of theta in --data")
    v.add_argument("--x-key", default="x", help="name of x in --data")
    v.add_argument("--out", default="ilijax-validation", help="output folder (with --data)")
    v.add_argument("--num-samples", type=int, default=1000, help="draws per test pair")
    v.add_argument("--max-test", type=int, default=None, help="use the first N test pairs")
    v.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                   choices=["sbc", "coverage", "tarp", "log_prob", "predictions"])
    v.add_argument("--no-plots", action="store_true", help="numbers and samples only")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)

    from ilijax.pipeline import ConfigError

    try:
        if args.command == "demo":
            return demo(args)
        if args.command == "run":
            return run_cmd(args, ("data", "inference", "validation"))
        if args.command == "train":
            return run_cmd(args, ("data", "inference"))
        if args.command == "sweep":
            return sweep_cmd(args)
        if args.command == "convert":
            return convert_cmd(args)
        if args.command == "validate":
            if args.data is not None or (len(args.config) == 1
                                         and args.config[0].endswith(".npz")):
                if args.data is None:
                    raise ConfigError("validate POSTERIOR.npz: expected --data test.npz")
                args.posterior = args.config[0]
                return validate(args)
            return run_cmd(args, ("validation",))
    except ConfigError as e:
        print(f"ilijax {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
