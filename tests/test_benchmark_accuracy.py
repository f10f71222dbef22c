"""Smoke run of ``benchmarks/accuracy.py`` at toy sizes (the full run is in the issue note).

Checks the wiring, not the accuracy: one cell per method family (direct sampling for NPE, NUTS
for NRE) on sbibm's first two two_moons observations; the JSON rows carry the published numbers
for the same observations, and the table prints every row.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("ilijax_bench_accuracy",
                                                  ROOT / "benchmarks" / "accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_accuracy_benchmark_smoke(tmp_path, capsys):
    acc = _module()
    out = tmp_path / "acc.json"
    rc = acc.main(["--tasks", "two_moons", "--methods", "npe", "nre", "--sims", "1000",
                   "--num-obs", "2", "--num-samples", "400", "--schedule", "cosine",
                   "--steps", "40",
                   "--c2st-epochs", "5", "--sampler", "nuts", "--chains", "2", "--warmup", "10",
                   "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    rows = {r["method"]: r for r in data["rows"]}
    assert set(rows) == {"npe", "nre"}
    pub = acc.published()
    for method, r in rows.items():
        assert r["observations"] == [1, 2] and r["reference_source"] == ["sbibm-1.1.0 wheel"]
        # The summary is of the per-observation accuracies (rounded to 4 digits in the row).
        acc_obs = np.asarray(r["c2st_per_observation"])
        assert acc_obs.shape == (2,)
        np.testing.assert_allclose(r["c2st_mean"], acc_obs.mean(), rtol=0, atol=5e-5)
        np.testing.assert_allclose([r["c2st_min"], r["c2st_max"]],
                                   [acc_obs.min(), acc_obs.max()], rtol=0, atol=5e-5)
        p = pub[("two_moons", method, 1000)]
        assert np.isclose(r["published_mean_same_obs"], np.mean(p["per_observation"][:2]))
        assert np.isclose(r["published_mean"], p["mean"])
    assert len(rows["nre"]["rhat_max"]) == 2
    printed = capsys.readouterr().out
    assert "two_moons" in printed and "published" in printed
    assert printed.count("two_moons                npe") == 1


def test_published_table_is_complete():
    """The data file holds the cells the issue asks for, each with 10 observations."""
    pub = _module().published()
    for task in ("two_moons", "slcp", "gaussian_linear", "gaussian_mixture", "bernoulli_glm",
                 "gaussian_linear_uniform"):
        for method in ("npe", "nle", "nre"):
            for sims in (1000, 10_000, 100_000):
                p = pub[(task, method, sims)]
                # mean and sd (ddof 1) are those of the 10 per-observation values, to the
                # 5th digit the file rounds them to
                per = np.asarray(p["per_observation"], dtype=float)
                assert p["n"] == 10 and per.shape == (10,) and np.isfinite(per).all()
                np.testing.assert_allclose(p["mean"], per.mean(), rtol=0, atol=1e-5)
                np.testing.assert_allclose(p["std"], per.std(ddof=1), rtol=0, atol=1e-5)
