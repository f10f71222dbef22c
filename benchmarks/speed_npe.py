"""Speed benchmark: a 5-member NSF NPE ensemble, ilijax (one vmapped JAX program) vs sbi (PyTorch).

Tested peer range: sbi 0.27.0 with torch 2.13.0 (CPU, Python 3.12). Install the peer into the
same venv with ``pip install torch==2.13.0`` (first; a bare ``torch`` may pull another build)
then ``pip install sbi==0.27.0`` and check that torch is still 2.13.0.

Both peers get the same simulations (numpy float32 arrays; sbi gets them as torch tensors and a
BoxUniform prior with the same bounds), the same architecture (neural spline coupling flow:
hidden 50, 5 transforms, 10 bins), the same number of epochs (no early stopping), the same batch
size, Adam lr 5e-4, gradient clipping at norm 5 and a 10% validation split. torch runs with one
thread (its best setting on a small CPU); JAX gets one CPU device per core.

  (a) training: ilijax trains the ensemble in one ``ilijax.npe(..., ensemble=K)`` call; sbi trains
      K NPEs one after another. Reported: wall time, time per ensemble epoch, ilijax's compile time
      separately, and the sbi/ilijax ratios.
  (b) sampling: ``--samples`` posterior draws for each of ``--test-obs`` observations. ilijax: one
      ``posterior.sample(key, x_test, n)`` call (first call compiles; the second is timed). sbi:
      its EnsemblePosterior, per observation in a loop or with ``sample_batched``, whichever is
      faster (the JSON says which).

Usage:
    python benchmarks/speed_npe.py                 # full size (10-20 minutes on 2 CPU cores)
    python benchmarks/speed_npe.py --quick         # smoke run, under 2 minutes
    python benchmarks/speed_npe.py --skip-sbi      # ilijax only

Writes ``benchmarks/results/speed_npe.json`` (atomically: temp file + rename).
"""

from __future__ import annotations

import os

# One XLA CPU device per core, set before jax is imported (ensemble members can be sharded).
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count()}")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ARCH = {"hidden": 50, "transforms": 5, "bins": 10}
TARGETS = {"train": 10.0, "sample": 30.0}
QUICK = {
    "epochs": 2,
    "num_sims": 1000,
    "members": 2,
    "batch_sizes": [256],
    "test_obs": 20,
    "samples": 100,
}
FULL = {
    "epochs": 20,
    "num_sims": 10_000,
    "members": 5,
    "batch_sizes": [50, 256],
    "test_obs": 1000,
    "samples": 1000,
}


# ----------------------------------------------------------------------------------------------
# data


def _toy_fallback(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """ltu-ili-style toy: theta ~ U[0,1]^3, x (20,) = 3 t0 sin(t) + t1 t^2/10 - 2 t2 t + N(0,1)."""
    theta = rng.uniform(0.0, 1.0, size=(n, 3))
    t = np.linspace(0.0, 10.0, 20)
    x = (
        3.0 * theta[:, :1] * np.sin(t)
        + theta[:, 1:2] * t**2 / 10.0
        - 2.0 * theta[:, 2:3] * t
        + rng.standard_normal((n, 20))
    )
    return theta.astype(np.float32), x.astype(np.float32)


def _box_bounds(prior: Any) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of a numpyro box-uniform prior (``Uniform(low, high).to_event(1)``)."""
    base = prior
    while hasattr(base, "base_dist"):
        base = base.base_dist
    return np.asarray(base.low, np.float32).reshape(-1), np.asarray(base.high, np.float32).reshape(
        -1
    )


def make_data(n_train: int, n_test: int, seed: int) -> dict[str, Any]:
    """Simulates once; both peers get these very arrays. Uses ``ilijax.tasks.toy()`` if present."""
    import jax

    try:
        from ilijax import tasks

        task = tasks.toy()
    except (ImportError, AttributeError):
        task = None
    if task is not None:
        key_p, key_s = jax.random.split(jax.random.key(seed))
        n = n_train + n_test
        theta = task.prior.sample(key_p, (n,))
        x = _simulate(task, key_s, theta)
        theta, x = np.asarray(theta, np.float32), np.asarray(x, np.float32)
        low, high = _box_bounds(task.prior)
        source = "ilijax.tasks.toy()"
    else:
        rng = np.random.default_rng(seed)
        theta, x = _toy_fallback(rng, n_train + n_test)
        low, high = np.zeros(3, np.float32), np.ones(3, np.float32)
        source = "benchmarks fallback toy (U[0,1]^3 -> R^20)"
    return {
        "theta": theta[:n_train],
        "x": x[:n_train],
        "theta_test": theta[n_train:],
        "x_test": x[n_train:],
        "low": low,
        "high": high,
        "source": source,
    }


def _simulate(task: Any, key: Any, theta: Any) -> Any:
    """``task.simulator`` is ``(key, theta) -> x`` for one parameter vector: vmap it."""
    import jax

    keys = jax.random.split(key, theta.shape[0])
    return jax.jit(jax.vmap(task.simulator))(keys, theta)


# ----------------------------------------------------------------------------------------------
# ilijax side


def _ilijax_api() -> tuple[Any, Any]:
    """(npe, nsf): the public ``ilijax.npe`` / ``ilijax.estimators.nsf``, or their modules' own."""
    import types

    import ilijax

    npe = getattr(ilijax, "npe", None)
    if npe is None or isinstance(npe, types.ModuleType):
        from ilijax.inference.npe import npe
    from ilijax import estimators

    nsf = getattr(estimators, "nsf", None)
    if nsf is None or isinstance(nsf, types.ModuleType):
        from ilijax.estimators.nsf import nsf
    return npe, nsf


def ilijax_available() -> tuple[bool, str]:
    try:
        _ilijax_api()
    except (ImportError, AttributeError) as e:
        return False, f"ilijax NPE API not available yet ({type(e).__name__}: {e})"
    return True, ""


def _prior(low: np.ndarray, high: np.ndarray) -> Any:
    try:
        from ilijax import priors

        return priors.uniform(low, high)
    except (ImportError, AttributeError):
        import numpyro.distributions as dist

        return dist.Uniform(low, high).to_event(1)


def ilijax_train(
    data: dict, *, members: int, batch_size: int, epochs: int, seed: int, shard: bool | None = None
):
    import jax

    npe, nsf = _ilijax_api()
    prior = _prior(data["low"], data["high"])
    est = nsf(**ARCH)
    t0 = time.perf_counter()
    post, info = npe(
        jax.random.key(seed),
        data["theta"],
        data["x"],
        prior=prior,
        estimator=est,
        ensemble=members,
        batch_size=batch_size,
        max_epochs=epochs,
        patience=None,
        validation_fraction=0.1,
        progress=False,
        **({} if shard is None else {"shard": shard}),
    )
    wall = time.perf_counter() - t0
    ep = np.atleast_1d(np.asarray(info.epochs))
    compile_s = float(info.compile_time)
    train_s = float(info.train_time)
    return post, {
        "wall_s": wall,
        "compile_s": compile_s,
        "train_s": train_s,
        "other_s": wall - compile_s - train_s,
        "epochs": ep.tolist(),
        "time_per_ensemble_epoch_s": train_s / max(1.0, float(ep.mean())),
        "sharded": [bool(v) for v in getattr(info, "sharded", ())],
        "shard_option": shard,
    }


def ilijax_sample(post: Any, x_test: np.ndarray, num_samples: int, seed: int) -> dict:
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(x_test)
    t0 = time.perf_counter()
    s = jax.block_until_ready(post.sample(jax.random.key(seed), x, num_samples))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = jax.block_until_ready(post.sample(jax.random.key(seed + 1), x, num_samples))
    second = time.perf_counter() - t0
    expect = (len(x_test), num_samples)
    if tuple(s.shape[:2]) != expect:
        raise RuntimeError(f"ilijax samples: expected leading shape {expect}; got {s.shape}")
    return {
        "method": "posterior.sample(key, x_test, n) (one call)",
        "wall_s": second,
        "first_call_s": first,
        "compile_s": max(0.0, first - second),
        "finite": bool(np.isfinite(np.asarray(s)).all()),
    }


# ----------------------------------------------------------------------------------------------
# reporting


def _fmt(v: float | None, unit: str = "s") -> str:
    if v is None:
        return "-"
    return f"{v:8.2f}{unit}" if v >= 0.1 else f"{v * 1e3:7.1f}ms"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def print_table(res: dict) -> None:
    rows = []
    for r in res["training"]:
        il, sb = r.get("ilijax"), r.get("sbi")
        bs = r["batch_size"]
        rows.append(
            (
                f"train bs={bs}: wall (ilijax incl. compile)",
                il and il["wall_s"],
                sb and sb["wall_s"],
            )
        )
        rows.append(
            (f"train bs={bs}: wall excl. compile", il and il["train_s"], sb and sb["wall_s"])
        )
        rows.append(
            (
                f"train bs={bs}: per ensemble epoch",
                il and il["time_per_ensemble_epoch_s"],
                sb and sb["time_per_ensemble_epoch_s"],
            )
        )
        rows.append((f"train bs={bs}: ilijax compile", il and il["compile_s"], None))
    smp = res.get("sampling") or {}
    il, sb = smp.get("ilijax"), smp.get("sbi")
    if il or sb:
        rows.append(("sample: steady (ilijax 2nd call)", il and il["wall_s"], sb and sb["wall_s"]))
        rows.append(("sample: ilijax first call (compile+run)", il and il["first_call_s"], None))
    w = max(len(r[0]) for r in rows) + 2
    head = f"{'':{w}}{'ilijax':>11}{'sbi':>11}{'sbi/ilijax':>12}"
    print(head)
    print("-" * len(head))
    for name, a, b in rows:
        r = _ratio(b, a)
        print(f"{name:{w}}{_fmt(a):>11}{_fmt(b):>11}{(f'{r:10.1f}x' if r else '-'):>12}")
    if sb:
        print(f"(sbi sampling method: {sb['method']})")
    la = res["env"].get("loadavg_start")
    if la and la[0] > (res["env"].get("cpu_count") or 1) + 0.5:
        print(f"WARNING: load average {la[0]:.1f} at start: other processes share the CPU, "
              "timings are noisy")


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, help=f"epochs per member (default {FULL['epochs']})")
    p.add_argument(
        "--num-sims", type=int, help=f"training simulations (default {FULL['num_sims']})"
    )
    p.add_argument("--members", type=int, help=f"ensemble members (default {FULL['members']})")
    p.add_argument("--batch-sizes", type=int, nargs="+", help="default 50 256")
    p.add_argument("--test-obs", type=int, help=f"test observations (default {FULL['test_obs']})")
    p.add_argument("--samples", type=int, help=f"draws per observation (default {FULL['samples']})")
    p.add_argument("--skip-sbi", action="store_true", help="run the ilijax side only")
    p.add_argument("--skip-ilijax", action="store_true", help="run the sbi side only")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (< 2 min)")
    p.add_argument(
        "--sbi-sampling",
        choices=["auto", "loop", "batched"],
        default="auto",
        help="sbi sampling: per-observation loop, sample_batched, or auto (the faster)",
    )
    p.add_argument(
        "--ilijax-shard",
        choices=["auto", "on", "off"],
        default="auto",
        help="shard ensemble members over the CPU devices (auto: ilijax's default)",
    )
    p.add_argument(
        "--sbi-chunk-obs",
        type=int,
        default=50,
        help="observations per sbi sample_batched call (one call on 1,000 is ~4x slower)",
    )
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "speed_npe.json")
    a = p.parse_args(argv)
    base = QUICK if a.quick else FULL
    for k, v in base.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.epochs < 2:
        p.error(f"--epochs must be >= 2 (sbi's loop cannot run exactly one); got {a.epochs}")
    for k in ("epochs", "num_sims", "members", "test_obs", "samples"):
        if getattr(a, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1; got {getattr(a, k)}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import jax

    run_sbi, run_il = not a.skip_sbi, not a.skip_ilijax
    if run_sbi:
        import _sbi_peer

        ok, msg = _sbi_peer.available()
        if not ok:
            print(f"[speed_npe] {msg}\n[speed_npe] continuing without sbi (as --skip-sbi).")
            run_sbi = False
    if run_il:
        ok, msg = ilijax_available()
        if not ok:
            print(f"[speed_npe] {msg}; running without the ilijax side.")
            run_il = False
    if not (run_sbi or run_il):
        print("[speed_npe] nothing to run.")
        return 1

    data = make_data(a.num_sims, a.test_obs, a.seed)
    print(
        f"[speed_npe] data: {data['source']}: theta {data['theta'].shape}, x {data['x'].shape}, "
        f"test {data['x_test'].shape}; epochs={a.epochs} members={a.members} "
        f"batch_sizes={a.batch_sizes} samples={a.samples}"
    )
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        # Other processes on the machine distort timings: the 1/5/15-min load averages.
        "loadavg_start": list(os.getloadavg()),
    }
    if run_il:
        import ilijax

        env["ilijax"] = getattr(ilijax, "__version__", "?")
    if run_sbi:
        env.update(_sbi_peer.versions())
        env["torch_threads"] = _sbi_peer.setup_threads(a.torch_threads)

    res: dict[str, Any] = {
        "benchmark": "speed_npe",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "quick": a.quick,
        "config": {
            "epochs": a.epochs,
            "num_sims": a.num_sims,
            "members": a.members,
            "batch_sizes": a.batch_sizes,
            "test_obs": a.test_obs,
            "samples": a.samples,
            "architecture": {"model": "nsf (coupling)", **ARCH},
            "optimizer": "adam lr 5e-4, clip norm 5",
            "validation_fraction": 0.1,
            "early_stopping": False,
            "ilijax_shard": a.ilijax_shard,
            "torch_threads": a.torch_threads,
            "data": data["source"],
            "prior": {"low": data["low"].tolist(), "high": data["high"].tolist()},
        },
        "env": env,
        "targets": {"train_speedup": TARGETS["train"], "sample_speedup": TARGETS["sample"]},
        "training": [],
        "sampling": {},
    }
    post_il = ens_sbi = None
    for bs in a.batch_sizes:
        row: dict[str, Any] = {"batch_size": bs}
        if run_il:
            print(f"[speed_npe] ilijax: training {a.members} members, bs={bs} ...", flush=True)
            post, row["ilijax"] = ilijax_train(
                data,
                members=a.members,
                batch_size=bs,
                epochs=a.epochs,
                seed=a.seed,
                shard={"auto": None, "on": True, "off": False}[a.ilijax_shard],
            )
            print(f"[speed_npe]   {row['ilijax']}", flush=True)
            if post_il is None:
                post_il = post
        if run_sbi:
            print(f"[speed_npe] sbi: training {a.members} members, bs={bs} ...", flush=True)
            ens, row["sbi"] = _sbi_peer.train_ensemble(
                data["theta"],
                data["x"],
                data["low"],
                data["high"],
                members=a.members,
                batch_size=bs,
                epochs=a.epochs,
                seed=a.seed,
                **ARCH,
            )
            print(f"[speed_npe]   {row['sbi']}", flush=True)
            if ens_sbi is None:
                ens_sbi = ens
        if run_il and run_sbi:
            il, sb = row["ilijax"], row["sbi"]
            row["speedup"] = {
                "wall_incl_compile": _ratio(sb["wall_s"], il["wall_s"]),
                "wall_excl_compile": _ratio(sb["wall_s"], il["train_s"]),
                "per_epoch": _ratio(
                    sb["time_per_ensemble_epoch_s"], il["time_per_ensemble_epoch_s"]
                ),
            }
        res["training"].append(row)
        write_json(a.out, res)  # partial results survive a crash, still written atomically

    # (b) sampling, with the ensembles trained at the first batch size (ltu-ili's default, 50).
    smp: dict[str, Any] = {"trained_with_batch_size": a.batch_sizes[0]}
    if post_il is not None:
        print(f"[speed_npe] ilijax: sampling {a.samples} x {a.test_obs} ...", flush=True)
        smp["ilijax"] = ilijax_sample(post_il, data["x_test"], a.samples, a.seed + 10)
        print(f"[speed_npe]   {smp['ilijax']}", flush=True)
    if ens_sbi is not None:
        print(f"[speed_npe] sbi: sampling {a.samples} x {a.test_obs} ...", flush=True)
        smp["sbi"] = _sbi_peer.time_sampling(
            ens_sbi, data["x_test"], a.samples, mode=a.sbi_sampling, chunk_obs=a.sbi_chunk_obs
        )
        print(f"[speed_npe]   {smp['sbi']}", flush=True)
    if "ilijax" in smp and "sbi" in smp:
        smp["speedup"] = _ratio(smp["sbi"]["wall_s"], smp["ilijax"]["wall_s"])
        smp["speedup_incl_compile"] = _ratio(smp["sbi"]["wall_s"], smp["ilijax"]["first_call_s"])
    res["sampling"] = smp

    if run_il and run_sbi:
        tr = [r["speedup"]["wall_incl_compile"] for r in res["training"]]
        res["targets_met"] = {
            "train": bool(min(tr) >= TARGETS["train"]),
            "sample": bool(smp["speedup"] >= TARGETS["sample"]),
        }
    env["loadavg_end"] = list(os.getloadavg())
    write_json(a.out, res)
    print()
    print_table(res)
    if "targets_met" in res:
        print(f"targets (train >= {TARGETS['train']:g}x incl. compile, sample >= "
              f"{TARGETS['sample']:g}x): {res['targets_met']}")
    print(f"[speed_npe] wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
