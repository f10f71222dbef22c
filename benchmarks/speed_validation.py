"""Speed benchmark: the full validation of an NPE ensemble posterior, ilijax vs sbi (PyTorch).

"The full validation" of a 5-member NSF ensemble on ``--test-obs`` test pairs with ``--samples``
posterior draws each: the draws for every test observation, SBC marginal ranks (with KS tests),
expected coverage of HPD regions, TARP, and the log-posterior of the true parameters.

- ilijax: one call ``ilijax.diagnostics.validate(key, posterior, theta_test, x_test,
  metrics=("sbc", "coverage", "tarp", "log_prob"), num_samples=S, out_dir=None)``; the first call
  (which compiles) and a second one (warm, another key) are both reported, with validate's own
  per-step timings. A third call with the default metrics and ``out_dir`` also writes
  metrics.json, the PNG plots, the draws and a netCDF file; its time is reported apart.
- sbi: its own diagnostics (ltu-ili is not on PyPI; its validation runs sbi's): the draws as
  ``run_sbc`` / ``run_tarp`` get them (``get_posterior_samples_on_batch``, batched sampling, on
  chunks of ``--sbi-chunk-obs`` observations) once, shared by the SBC ranks (``run_sbc``'s rank
  loop), ``check_sbc``'s KS test and C2STs, expected coverage (``run_sbc``'s loop with
  ``reduce_fns = -posterior.log_prob``, as sbi's docs compute it), TARP (``run_tarp``'s
  defaults + ``check_tarp``) and the log-prob of the truths; see ``_sbi_validation_peer.py``.
  ``--sbi-mode public`` calls ``run_sbc`` and ``run_tarp`` themselves instead (each draws).

Both sides get the same simulations (``ilijax.tasks.toy()``: theta ~ U(0,1)^3, x in R^20, via
``ilijax.simulate``), the same fresh test pairs, and ensembles of the same architecture (NSF,
hidden 50, 5 transforms, 10 bins) trained the same number of epochs; training is not timed for
the comparison. torch runs with one thread (its best on a small CPU); JAX gets one CPU device per
core.

Tested peer: sbi 0.27.0 with torch 2.13.0 (CPU). Install into the same venv with
``pip install torch==2.13.0`` then ``pip install sbi==0.27.0``.

Usage:
    python benchmarks/speed_validation.py                 # full size (~15-20 min on 2 cores)
    python benchmarks/speed_validation.py --quick         # smoke run, a few minutes
    python benchmarks/speed_validation.py --skip-sbi      # ilijax only

Writes ``benchmarks/results/speed_validation.json`` (``speed_validation_quick.json`` with
``--quick``) atomically, and validate's files under ``--out-dir``.
"""

from __future__ import annotations

import os

# One XLA CPU device per core, set before jax is imported (as speed_npe.py).
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count()}")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from speed_npe import _box_bounds, _fmt, _ratio, write_json  # noqa: E402

ARCH = {"hidden": 50, "transforms": 5, "bins": 10}
METRICS = ("sbc", "coverage", "tarp", "log_prob")
QUICK = {
    "test_obs": 100,
    "samples": 200,
    "members": 2,
    "num_sims": 2000,
    "epochs": 3,
    "sbi_norm_probe_obs": 5,
}
FULL = {
    "test_obs": 1000,
    "samples": 1000,
    "members": 5,
    "num_sims": 10_000,
    "epochs": 20,
    "sbi_norm_probe_obs": 20,
}


# ----------------------------------------------------------------------------------------------
# data


def make_data(num_sims: int, test_obs: int, seed: int) -> dict[str, Any]:
    """Training simulations and a fresh test set from ``ilijax.tasks.toy()``, simulated once;
    both peers get these very arrays (float32)."""
    import jax

    import ilijax

    task = ilijax.tasks.toy()
    k_train, k_test = jax.random.split(jax.random.key(seed))
    train = ilijax.simulate(k_train, task.prior, task.simulator, num_sims, progress=False)
    test = ilijax.simulate(k_test, task.prior, task.simulator, test_obs, progress=False)
    low, high = _box_bounds(task.prior)
    return {
        "task": task,
        "theta": np.asarray(train.theta, np.float32),
        "x": np.asarray(train.x, np.float32),
        "theta_test": np.asarray(test.theta, np.float32),
        "x_test": np.asarray(test.x, np.float32),
        "low": low,
        "high": high,
        "source": "ilijax.tasks.toy() via ilijax.simulate",
    }


# ----------------------------------------------------------------------------------------------
# ilijax side


def ilijax_available() -> tuple[bool, str]:
    try:
        import ilijax
        from ilijax.diagnostics import validate  # noqa: F401

        _ = (ilijax.npe, ilijax.estimators.nsf)
    except (ImportError, AttributeError) as e:
        return False, f"ilijax validate/npe not available ({type(e).__name__}: {e})"
    return True, ""


def ilijax_train(data: dict, *, members: int, batch_size: int, epochs: int, seed: int):
    import jax

    import ilijax

    t0 = time.perf_counter()
    post, info = ilijax.npe(
        jax.random.key(seed),
        data["theta"],
        data["x"],
        prior=data["task"].prior,
        estimator=ilijax.estimators.nsf(**ARCH),
        ensemble=members,
        batch_size=batch_size,
        max_epochs=epochs,
        patience=None,
        validation_fraction=0.1,
        progress=False,
    )
    return post, {
        "wall_s": time.perf_counter() - t0,
        "epochs": np.atleast_1d(np.asarray(info.epochs)).tolist(),
    }


def _ilijax_sanity(metrics: dict) -> dict[str, Any]:
    sbc, cov = metrics.get("sbc", {}), metrics.get("coverage", {})
    tarp, lp = metrics.get("tarp", {}), metrics.get("log_prob", {})
    return {
        "sbc": {"ks_pvalue": list(sbc.get("ks_pvalue", {}).values())},
        "coverage": {
            k: cov.get(k) for k in ("error", "bias", "ks_pvalue", "method", "levels", "empirical")
        },
        "tarp": {
            "atc": tarp.get("atc"),  # sbi's definition (times d-alpha) on both sides
            "ks_pvalue": tarp.get("ks_pvalue"),
        },
        "log_prob": {"mean": lp.get("mean"), "sem": lp.get("sem"), "method": lp.get("method")},
    }


def run_ilijax(
    posterior: Any,
    theta_test: np.ndarray,
    x_test: np.ndarray,
    num_samples: int,
    seed: int,
    out_dir: Path | None,
) -> dict[str, Any]:
    """Times ``ilijax.diagnostics.validate``: first call (incl. compile), second call (warm,
    another key), and, if ``out_dir``, a call with the default metrics that writes its files."""
    import jax

    from ilijax.diagnostics import validate

    def call(key_seed: int, **kw):
        t0 = time.perf_counter()
        rep = validate(
            jax.random.key(key_seed),
            posterior,
            theta_test,
            x_test,
            num_samples=num_samples,
            progress=False,
            **kw,
        )
        jax.block_until_ready(rep.samples)
        return rep, time.perf_counter() - t0

    rep1, first = call(seed, metrics=METRICS, out_dir=None)
    rep2, second = call(seed + 1, metrics=METRICS, out_dir=None)
    expect = (len(x_test), num_samples)
    if tuple(rep2.samples.shape[:2]) != expect:
        raise RuntimeError(f"ilijax samples: expected {expect} leading; got {rep2.samples.shape}")
    out: dict[str, Any] = {
        "call": f"validate(key, posterior, theta_test, x_test, metrics={METRICS}, "
        f"num_samples={num_samples}, out_dir=None, progress=False)",
        "first_call_s": first,
        "second_call_s": second,
        "compile_s_estimate": max(0.0, first - second),
        "first_call_steps": dict(rep1.timings),
        "steps": dict(rep2.timings),
        "sanity": _ilijax_sanity(rep2.metrics),
        "metrics": rep2.metrics,
    }
    if out_dir is not None:
        rep3, t_write = call(seed + 2, out_dir=out_dir)
        files = {k: str(v) for k, v in rep3.files.items()}
        out["with_out_dir"] = {
            "call": f"validate(key, posterior, theta_test, x_test, num_samples={num_samples}, "
            f"out_dir={str(out_dir)!r}, progress=False) (default metrics, plots)",
            "wall_s": t_write,
            "steps": dict(rep3.timings),
            "files": files,
            "bytes": {k: os.path.getsize(v) for k, v in files.items() if os.path.isfile(v)},
        }
    return out


# ----------------------------------------------------------------------------------------------
# reporting


def _steps_rows(res: dict) -> list[tuple[str, float | None, float | None]]:
    """(name, sbi seconds, ilijax seconds). ilijax's per-step numbers are validate's own
    timings of the warm call; its log-prob evaluation (draws and truths) serves both the
    coverage and the log-prob metric and is charged to coverage here."""
    sb = (res.get("sbi") or {}).get("validation")
    il = res.get("ilijax")
    ss = sb["steps"] if sb else {}
    it = il["steps"] if il else {}

    def s(*keys):
        vals = [ss.get(k) for k in keys]
        return None if not sb or any(v is None for v in vals) else float(sum(vals))

    def i(*keys):
        vals = [it.get(k) for k in keys]
        return None if not il or any(v is None for v in vals) else float(sum(vals))

    rows = [
        ("posterior draws", s("sample"), i("samples")),
        ("SBC ranks + KS", s("sbc_ranks", "sbc_ks"), i("sbc")),
        ("expected coverage (HPD)", s("coverage"), i("log_prob_eval", "coverage")),
        ("TARP", s("tarp"), i("tarp")),
        ("log-prob of truths", s("log_prob"), i("log_prob")),
        ("full validation (sbi excl. C2ST)", sb and sb["total_excl_c2st_s"],
         il and il["second_call_s"]),
        ("sbi check_sbc C2STs (ilijax: none)", s("sbc_c2st"), None),
        ("full validation (sbi incl. C2ST)", sb and sb["total_s"], il and il["second_call_s"]),
        ("ilijax first call (incl. compile)", sb and sb["total_excl_c2st_s"],
         il and il["first_call_s"]),
    ]
    if il and "with_out_dir" in il:
        rows.append(("ilijax default metrics + writing files", None,
                     il["with_out_dir"]["wall_s"]))
    return rows


def print_table(res: dict) -> None:
    rows = _steps_rows(res)
    w = max(len(r[0]) for r in rows) + 2
    head = f"{'step':{w}}{'sbi':>11}{'ilijax':>11}{'sbi/ilijax':>12}"
    print(head)
    print("-" * len(head))
    for name, b, a in rows:
        r = _ratio(b, a)
        print(f"{name:{w}}{_fmt(b):>11}{_fmt(a):>11}{(f'{r:10.1f}x' if r else '-'):>12}")
    sb = (res.get("sbi") or {}).get("validation")
    if sb and sb["steps"].get("sample") is None:
        print("(sbi --sbi-mode public: draws are inside run_sbc (SBC row) and run_tarp (TARP))")
    probe = (sb or {}).get("norm_probe")
    if probe:
        print(
            f"(sbi normalised log_prob, the default: coverage would take "
            f"~{probe['coverage_extrapolated_s']:.0f}s and log-prob of truths "
            f"~{probe['log_prob_extrapolated_s']:.0f}s, extrapolated from {probe['obs']} obs)"
        )
    la = res["env"].get("loadavg_start")
    if la and la[0] > (res["env"].get("cpu_count") or 1) + 0.5:
        print(f"WARNING: load average {la[0]:.1f} at start: other processes share the CPU, "
              "timings are noisy")


def print_sanity(res: dict) -> None:
    sb = (res.get("sbi") or {}).get("validation")
    il = (res.get("ilijax") or {}).get("sanity")

    def f(v):
        if v is None:
            return "-"
        if isinstance(v, list):
            return "[" + ", ".join(f"{x:.3g}" for x in v) + "]"
        return f"{v:.4g}"

    rows = [
        ("SBC KS p-values", sb and sb["sbc"]["ks_pvalue"], il and il["sbc"]["ks_pvalue"]),
        ("coverage error", sb and sb["coverage"]["error"], il and il["coverage"]["error"]),
        ("coverage bias", sb and sb["coverage"]["bias"], il and il["coverage"]["bias"]),
        ("TARP ATC (sbi's definition)", sb and sb["tarp"]["atc"], il and il["tarp"]["atc"]),
        ("mean log q(theta_true | x)", sb and sb["log_prob"]["mean"],
         il and il["log_prob"]["mean"]),
    ]
    print("\nsanity (different networks and draws: same ballpark expected)")
    for name, b, a in rows:
        print(f"  {name:28}sbi {f(b):>26}   ilijax {f(a):>26}")
    if sb and not sb["log_prob"]["normalized"]:
        print("  (sbi log-prob unnormalised: low by the log in-prior acceptance; see norm_probe)")


# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--test-obs", type=int, help=f"test pairs (default {FULL['test_obs']})")
    p.add_argument("--samples", type=int, help=f"draws per test pair (default {FULL['samples']})")
    p.add_argument("--members", type=int, help=f"ensemble members (default {FULL['members']})")
    p.add_argument(
        "--num-sims", type=int, help=f"training simulations (default {FULL['num_sims']})"
    )
    p.add_argument("--epochs", type=int, help=f"epochs per member (default {FULL['epochs']})")
    p.add_argument("--batch-size", type=int, default=50, help="training batch size (both)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--skip-sbi", action="store_true", help="run the ilijax side only")
    p.add_argument("--skip-ilijax", action="store_true", help="run the sbi side only")
    p.add_argument("--quick", action="store_true", help="100 obs x 200 draws, 2 members, ...")
    p.add_argument(
        "--sbi-mode",
        choices=["shared", "public"],
        default="shared",
        help="shared: one set of draws for every sbi diagnostic (its fastest); public: "
        "run_sbc + run_tarp as a user calls them (each draws)",
    )
    p.add_argument(
        "--sbi-log-prob",
        choices=["unnormalized", "normalized"],
        default="unnormalized",
        help="sbi log_prob with norm_posterior=False (fast) or its default normalisation "
        "(10,000 rejection draws per member and observation; about an hour at full size)",
    )
    p.add_argument("--sbi-chunk-obs", type=int, default=50, help="observations per draw call")
    p.add_argument(
        "--sbi-norm-probe-obs",
        type=int,
        help="time sbi's normalised log_prob on this many obs and extrapolate (0: skip)",
    )
    p.add_argument("--out", type=Path, help="JSON path (default results/speed_validation.json)")
    p.add_argument(
        "--out-dir",
        type=Path,
        default=HERE / "results" / "validation_plots",
        help="where ilijax's validate writes its files (the timed out_dir call)",
    )
    a = p.parse_args(argv)
    base = QUICK if a.quick else FULL
    for k, v in base.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.out is None:
        name = "speed_validation_quick.json" if a.quick else "speed_validation.json"
        a.out = HERE / "results" / name
    if a.epochs < 2:
        p.error(f"--epochs must be >= 2 (sbi's loop cannot run exactly one); got {a.epochs}")
    for k in ("test_obs", "samples", "members", "num_sims", "epochs", "batch_size",
              "sbi_chunk_obs"):
        if getattr(a, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1; got {getattr(a, k)}")
    if a.samples < 2 or a.test_obs < 10:
        p.error("need --samples >= 2 and --test-obs >= 10 (TARP uses test_obs // 10 bins)")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import jax

    run_sbi, run_il = not a.skip_sbi, not a.skip_ilijax
    if run_sbi:
        import _sbi_peer

        ok, msg = _sbi_peer.available()
        if not ok:
            print(f"[speed_validation] {msg}\n[speed_validation] continuing without sbi.")
            run_sbi = False
    if run_il:
        ok, msg = ilijax_available()
        if not ok:
            print(f"[speed_validation] {msg}; running without the ilijax side.")
            run_il = False
    if not (run_sbi or run_il):
        print("[speed_validation] nothing to run.")
        return 1

    import ilijax

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "jax": jax.__version__,
        "ilijax": getattr(ilijax, "__version__", "?"),
        "jax_devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "loadavg_start": list(os.getloadavg()),
    }
    if run_sbi:
        env.update(_sbi_peer.versions())
        env["torch_threads"] = _sbi_peer.setup_threads(a.torch_threads)
        import _sbi_validation_peer

    data = make_data(a.num_sims, a.test_obs, a.seed)
    print(
        f"[speed_validation] data: {data['source']}: theta {data['theta'].shape}, "
        f"x {data['x'].shape}, test {data['x_test'].shape}; members={a.members} "
        f"epochs={a.epochs} samples={a.samples}",
        flush=True,
    )
    res: dict[str, Any] = {
        "benchmark": "speed_validation",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "quick": a.quick,
        "config": {
            "test_obs": a.test_obs,
            "samples": a.samples,
            "members": a.members,
            "num_sims": a.num_sims,
            "epochs": a.epochs,
            "batch_size": a.batch_size,
            "seed": a.seed,
            "architecture": {"model": "nsf (coupling)", **ARCH},
            "ilijax_metrics": list(METRICS),
            "sbi_mode": a.sbi_mode,
            "sbi_log_prob": a.sbi_log_prob,
            "sbi_chunk_obs": a.sbi_chunk_obs,
            "sbi_norm_probe_obs": a.sbi_norm_probe_obs,
            "torch_threads": a.torch_threads,
            "data": data["source"],
            "prior": {"low": data["low"].tolist(), "high": data["high"].tolist()},
        },
        "env": env,
    }

    if run_sbi:
        print(f"[speed_validation] sbi: training {a.members} members (not compared) ...",
              flush=True)
        ens, train = _sbi_peer.train_ensemble(
            data["theta"], data["x"], data["low"], data["high"], members=a.members,
            batch_size=a.batch_size, epochs=a.epochs, seed=a.seed, **ARCH,
        )
        print(f"[speed_validation] sbi: validating {a.test_obs} x {a.samples} ...", flush=True)
        val = _sbi_validation_peer.run_validation(
            ens, data["theta_test"], data["x_test"], a.samples, a.seed + 10,
            mode=a.sbi_mode, chunk_obs=a.sbi_chunk_obs, log_prob=a.sbi_log_prob,
            norm_probe_obs=a.sbi_norm_probe_obs,
        )
        res["sbi"] = {"training": train, "validation": val}
        print(f"[speed_validation]   sbi steps: "
              f"{ {k: round(v, 2) for k, v in val['steps'].items() if v is not None} }, "
              f"total {val['total_s']:.1f}s", flush=True)
        write_json(a.out, res)  # partial results survive a crash

    if run_il:
        print(f"[speed_validation] ilijax: training {a.members} members (not compared) ...",
              flush=True)
        post, train = ilijax_train(
            data, members=a.members, batch_size=a.batch_size, epochs=a.epochs, seed=a.seed
        )
        print(f"[speed_validation] ilijax: validating {a.test_obs} x {a.samples} ...",
              flush=True)
        il = run_ilijax(
            post, data["theta_test"], data["x_test"], a.samples, a.seed + 10, a.out_dir
        )
        il["training"] = train
        res["ilijax"] = il
        print(f"[speed_validation]   ilijax: first {il['first_call_s']:.2f}s, warm "
              f"{il['second_call_s']:.2f}s", flush=True)

    if run_sbi and run_il:
        sb, il = res["sbi"]["validation"], res["ilijax"]
        res["speedup"] = {
            "warm_vs_sbi_excl_c2st": _ratio(sb["total_excl_c2st_s"], il["second_call_s"]),
            "warm_vs_sbi_incl_c2st": _ratio(sb["total_s"], il["second_call_s"]),
            "first_call_vs_sbi_excl_c2st": _ratio(sb["total_excl_c2st_s"], il["first_call_s"]),
        }
    env["loadavg_end"] = list(os.getloadavg())
    write_json(a.out, res)
    print()
    print_table(res)
    print_sanity(res)
    print(f"[speed_validation] wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
