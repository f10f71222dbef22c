"""Speed benchmark: NPE in theta space (truncated to the prior box by rejection) against NPE in
the unconstrained space, for direct sampling and ``log_prob`` (issue 14, item 2).

One NPE per space is trained at the library's defaults (``npe(space=...)``, sbibm's NSF: hidden
50, 5 transforms, 10 bins) on ``--sims`` simulations of an sbibm task with a box prior, then:

  (a) ``posterior.sample(key, x_obs, n)`` for sbibm's 10 observations in one call, first call
      (compilation included, as a user meets it) and a second call with another key;
  (b) for theta space, the same draws by the per-draw rejection loop the Posterior used before
      (``bundle.sample`` vmapped over keys: under ``vmap`` every lane runs until the slowest
      accepts) against the batch-level loop it uses now (``TruncationParts.sample_many``);
  (c) ``posterior.log_prob`` of ``--theta`` points per observation (theta space draws the 4,096
      points of its mass estimate per member and observation);
  (d) the accepted fraction ``Z_hat(x)`` per observation.

The peer here is ilijax's own unconstrained space (what the default was); sbi's leakage-
corrected rejection is not timed (its DirectPosterior rejects in a Python loop per observation).

Usage:
    python benchmarks/speed_theta.py                    # slcp, 10^4 simulations, 10^4 draws
    python benchmarks/speed_theta.py --task two_moons --samples 1000
    python benchmarks/speed_theta.py --quick            # smoke run, about a minute

Writes ``benchmarks/results/speed_theta.json`` (atomically).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count()}")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent


def _timed(fn, *args):
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def run(args) -> dict:
    import jax
    import jax.numpy as jnp

    import ilijax
    from ilijax.estimators._support import truncation_parts
    from ilijax.tasks.references import load_reference

    task = ilijax.tasks.get(args.task)
    data = ilijax.simulate(jax.random.key(args.seed), task.prior, task.simulator, args.sims,
                           progress=False)
    x_obs = jnp.stack([jnp.asarray(load_reference(task, k).observation)
                       for k in range(1, args.num_obs + 1)])
    est = ilijax.estimators.nsf(hidden=50, transforms=5, bins=10)
    train = {"max_epochs": args.epochs, "schedule": "constant"} if args.epochs else {}
    out = {"task": args.task, "sims": args.sims, "samples": args.samples,
           "num_obs": int(x_obs.shape[0]), "cells": {}}

    def one(space):
        t0 = time.perf_counter()
        post, _ = ilijax.npe(jax.random.key(args.seed + 1), data.theta, data.x,
                             prior=task.prior, space=space, estimator=est, progress=False,
                             **train)
        train_s = time.perf_counter() - t0
        k1, k2 = jax.random.key(10), jax.random.key(11)
        _, first = _timed(lambda k: post.sample(k, x_obs, args.samples), k1)
        draws, second = _timed(lambda k: post.sample(k, x_obs, args.samples), k2)
        theta = draws[:, :args.theta]
        _, lp_first = _timed(post.log_prob, theta, x_obs)
        _, lp_second = _timed(post.log_prob, theta + 0.0, x_obs)
        cell = {"train_s": round(train_s, 1), "sample_first_s": round(first, 2),
                "sample_s": round(second, 2), "log_prob_first_s": round(lp_first, 2),
                "log_prob_s": round(lp_second, 3)}
        if space == "theta":
            mass, _ = post.support_mass(x_obs)
            cell["accepted_fraction"] = [round(float(m), 3) for m in np.asarray(mass)]
            # The per-draw loop of the earlier Posterior: one while_loop per draw, vmapped.
            g = post.groups[0]
            bundle = g.estimator
            params0 = jax.tree.map(lambda a: a[0], g.params)

            @jax.jit
            def per_draw(key, x):
                keys = jax.random.split(key, x.shape[0] * args.samples)
                keys = keys.reshape(x.shape[0], args.samples)
                one = jax.vmap(bundle.sample, in_axes=(None, 0, None))
                return jax.vmap(one, in_axes=(None, 0, 0))(params0, keys, x)

            @jax.jit
            def batch(key, x):
                many = truncation_parts(bundle).sample_many
                keys = jax.random.split(key, x.shape[0])
                return jax.vmap(lambda k, xo: many(params0, k, xo, args.samples))(keys, x)

            for name, fn in (("per_draw", per_draw), ("batch", batch)):
                _, f = _timed(fn, k1, x_obs)
                d, s = _timed(fn, k2, x_obs)
                cell[f"{name}_first_s"], cell[f"{name}_s"] = round(f, 2), round(s, 2)
                cell[f"{name}_nan"] = int(np.isnan(np.asarray(d)).any(-1).sum())
        return cell

    for space in ("unconstrained", "theta"):
        out["cells"][space] = one(space)
        print(space, json.dumps(out["cells"][space]), flush=True)
    return out


def table(res: dict) -> str:
    u, t = res["cells"]["unconstrained"], res["cells"]["theta"]
    rows = [
        ("sample, first call (s)", u["sample_first_s"], t["sample_first_s"]),
        ("sample, second call (s)", u["sample_s"], t["sample_s"]),
        ("log_prob, first call (s)", u["log_prob_first_s"], t["log_prob_first_s"]),
        ("log_prob, second call (s)", u["log_prob_s"], t["log_prob_s"]),
        ("training (s)", u["train_s"], t["train_s"]),
    ]
    lines = [f"{res['task']}, {res['sims']} simulations, {res['num_obs']} observations x "
             f"{res['samples']} draws",
             "| | unconstrained | theta | theta / unconstrained |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {a} | {b} | {b / a:.1f} |" for n, a, b in rows]
    lines += ["", "| theta-space rejection | first call (s) | second call (s) | NaN draws |",
              "|---|---:|---:|---:|"]
    for name in ("per_draw", "batch"):
        lines.append(f"| {name} | {t[f'{name}_first_s']} | {t[f'{name}_s']} | "
                     f"{t[f'{name}_nan']} |")
    lines.append(f"\naccepted fraction per observation: {t['accepted_fraction']}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="slcp")
    ap.add_argument("--sims", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--num-obs", type=int, default=10)
    ap.add_argument("--theta", type=int, default=1000, help="log_prob points per observation")
    ap.add_argument("--epochs", type=int, default=0,
                    help="train a fixed number of epochs (constant rate); 0: the defaults")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "speed_theta.json")
    args = ap.parse_args()
    if args.quick:
        args.task, args.sims, args.samples = "two_moons", 1000, 500
        args.num_obs, args.theta = 3, 100
        args.epochs = 3
        if args.out == HERE / "results" / "speed_theta.json":
            args.out = HERE / "results" / "speed_theta_quick.json"
    import jax

    res = run(args)
    res.update(date=_dt.date.today().isoformat(), backend=jax.default_backend(),
               devices=jax.device_count(), cpu_count=os.cpu_count(),
               loadavg_end=list(os.getloadavg()))
    print()
    print(table(res))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.out.parent, delete=False) as f:
        json.dump(res, f, indent=1)
    os.replace(f.name, args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
