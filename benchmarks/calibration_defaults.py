"""Calibration of what a new user runs first, at the library's defaults (issue 14, item 7).

Three runs, each exactly as a user meets it:

* ``quickstart``: the README's Python quickstart verbatim (two_moons, 10^4 simulations, a
  5-member NPE ensemble, every option at its default; 500 test pairs). Checked: the expected
  coverage of the HPD regions, KS p > 0.01 and |bias| < 0.03.
* ``demo``: ``ilijax demo`` at its defaults (the toy task, 5,000 simulations, 4 NSF members,
  300 test pairs). Checked: SBC rank KS p > 0.01 for every parameter, and the share of test
  truths inside the marginal 68% / 95% intervals within the 99% binomial interval of 300 pairs.
* ``toy_npe``: ``ilijax run examples/toy_npe.yaml`` (3 NSF + 1 MDN with the file's own
  ltu-ili-style training: constant 5e-4, stop after 20 epochs). Reported with the demo's checks;
  it is a config that sets its own training, so the defaults do not reach it.

Every check is printed beside its bound; the JSON holds the numbers. Usage::

    python benchmarks/calibration_defaults.py                   # all three (about 15 min, 2 cores)
    python benchmarks/calibration_defaults.py --runs demo

Writes ``benchmarks/results/calibration_defaults.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "calibration_defaults.json"
RUNS = ("quickstart", "demo", "toy_npe")


def binomial_band(p: float, n: int, level: float = 0.99) -> tuple[float, float]:
    """The central ``level`` interval of the share of ``n`` Bernoulli(``p``) successes."""
    lo, hi = stats.binom.interval(level, n, p)
    return float(lo / n), float(hi / n)


def quickstart(tmp: Path) -> dict[str, Any]:
    import jax

    import ilijax

    # The README's quickstart, verbatim but for the output folder.
    task = ilijax.tasks.two_moons()
    data = ilijax.simulate(jax.random.key(0), task.prior, task.simulator, 10_000)
    t0 = time.perf_counter()
    posterior, info = ilijax.npe(jax.random.key(1), data.theta, data.x, prior=task.prior,
                                 ensemble=5)
    train_s = time.perf_counter() - t0
    test = ilijax.simulate(jax.random.key(2), task.prior, task.simulator, 500)
    report = ilijax.validate(jax.random.key(4), posterior, test.theta, test.x,
                             out_dir=tmp / "validation")
    print(report.summary())
    m = report.metrics
    cov = m["coverage"]
    checks = {
        "coverage KS p > 0.01": (cov["ks_pvalue"], cov["ks_pvalue"] > 0.01),
        "|coverage bias| < 0.03": (cov["bias"], abs(cov["bias"]) < 0.03),
    }
    return {"train_s": round(train_s, 1), "epochs": np.asarray(info.epochs).tolist(),
            "weights": np.asarray(posterior.weights).round(4).tolist(),
            "metrics": _headline(m, 500), "checks": _checks(checks)}


def _pipeline_metrics(folder: Path) -> dict:
    return json.loads(next(folder.rglob("metrics.json")).read_text())


def _interval_checks(m: dict, n: int) -> dict:
    checks = {}
    for k, p in m["sbc"]["ks_pvalue"].items():
        checks[f"SBC KS p > 0.01 ({k})"] = (p, p > 0.01)
    for level, key in ((0.68, "inside68"), (0.95, "inside95")):
        lo, hi = binomial_band(level, n)
        for k, v in m["predictions"][key].items():
            checks[f"{key} in [{lo:.3f}, {hi:.3f}] ({k})"] = (v, lo <= v <= hi)
    return checks


def demo(tmp: Path) -> dict[str, Any]:
    from ilijax.cli import main

    out = tmp / "demo"
    t0 = time.perf_counter()
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    seconds = time.perf_counter() - t0
    m = _pipeline_metrics(out)
    n = int(m["num_test"])
    return {"run_s": round(seconds, 1), "metrics": _headline(m, n),
            "checks": _checks(_interval_checks(m, n))}


def toy_npe(tmp: Path) -> dict[str, Any]:
    from ilijax.cli import main

    out = tmp / "toy"
    t0 = time.perf_counter()
    assert main(["run", str(ROOT / "examples" / "toy_npe.yaml"), "-o",
                 f"inference.out_dir={out}", "--quiet"]) == 0
    seconds = time.perf_counter() - t0
    m = _pipeline_metrics(out)
    n = int(m["num_test"])
    return {"run_s": round(seconds, 1), "metrics": _headline(m, n),
            "checks": _checks(_interval_checks(m, n))}


def _headline(m: dict, n: int) -> dict:
    keep = {"num_test": n}
    if "sbc" in m:
        keep["sbc_ks_pvalue"] = m["sbc"]["ks_pvalue"]
    if "coverage" in m:
        keep["coverage"] = {k: m["coverage"][k] for k in ("error", "bias", "ks_pvalue")}
    if "predictions" in m:
        keep["inside68"] = m["predictions"]["inside68"]
        keep["inside95"] = m["predictions"]["inside95"]
    return keep


def _checks(checks: dict) -> dict:
    return {k: {"value": float(v), "pass": bool(ok)} for k, (v, ok) in checks.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    import ilijax

    results: dict[str, Any] = {
        "benchmark": "calibration_defaults",
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "ilijax": ilijax.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "runs": {},
    }
    if args.out.exists():  # keep the runs not redone
        results["runs"] = json.loads(args.out.read_text()).get("runs", {})
    with tempfile.TemporaryDirectory() as d:
        for name in args.runs:
            print(f"== {name}", flush=True)
            results["runs"][name] = {"quickstart": quickstart, "demo": demo,
                                     "toy_npe": toy_npe}[name](Path(d))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(results, indent=1))
            os.replace(tmp, args.out)
    print(f"\n{'run':<11} {'check':<44} {'value':>9}  pass")
    for name, r in results["runs"].items():
        for k, c in r["checks"].items():
            print(f"{name:<11} {k:<44} {c['value']:9.4f}  {'yes' if c['pass'] else 'NO'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
