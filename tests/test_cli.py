"""The `ilijax demo` command at a tiny size: outputs exist, load, and agree with the print."""

import json

import jax
import numpy as np

import ilijax
from ilijax.cli import main


def test_demo_writes_loadable_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--simulations", "400", "--ensemble", "2",
               "--hidden", "8", "--transforms", "2", "--max-epochs", "2", "--samples", "300",
               "--test", "60", "--test-samples", "50", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "68% interval" in printed and str(out) in printed
    for name in ("posterior.npz", "history.json", "summary.json", "corner.png", "losses.png"):
        assert (out / name).stat().st_size > 0, name
    for png in ("corner.png", "losses.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((out / "history.json").read_text())
    assert np.asarray(history["train_loss"], dtype=float).shape == (2, 2)
    summary = json.loads((out / "summary.json").read_text())
    assert [r["parameter"] for r in summary["posterior"]] == ["offset", "slope", "curvature"]
    assert all(0.0 <= r["q16"] <= r["median"] <= r["q84"] <= 1.0 for r in summary["posterior"])
    post = ilijax.load(out / "posterior.npz")
    x_obs = np.asarray(summary["x_obs"], dtype=np.float32)
    draws = np.asarray(post.sample(jax.random.key(0), x_obs, 4000))
    # The saved posterior reproduces the printed summary up to Monte Carlo error.
    for i, row in enumerate(summary["posterior"]):
        se = draws[:, i].std() * np.sqrt(1 / 4000 + 1 / 300)
        assert abs(draws[:, i].mean() - row["mean"]) < 4 * se
    assert not list(out.glob(".*.tmp"))
    # the validation stage: its numbers are printed and written
    metrics = json.loads((out / "validation" / "metrics.json").read_text())
    assert metrics["num_test"] == 60 and metrics["num_samples"] == 50
    assert f"{metrics['coverage']['error']:.3f}" in printed
    for name in ("coverage.png", "ranks.png", "tarp.png", "validation.nc", "samples.npy"):
        assert (out / "validation" / name).stat().st_size > 0, name


def test_validate_command_on_a_saved_posterior(tmp_path, capsys):
    task = ilijax.tasks.gaussian_linear(dim=2)
    data = ilijax.simulate(jax.random.key(0), task.prior, task.simulator, 500, progress=False)
    post, _ = ilijax.npe(jax.random.key(1), data.theta, data.x, prior=task.prior,
                         estimator=ilijax.estimators.mdn(components=1, hidden=8),
                         max_epochs=3, progress=False)
    ilijax.save(post, tmp_path / "post.npz")
    test = ilijax.simulate(jax.random.key(2), task.prior, task.simulator, 80, progress=False)
    np.savez(tmp_path / "test.npz", params=np.asarray(test.theta), data=np.asarray(test.x))
    out = tmp_path / "val"
    rc = main(["validate", str(tmp_path / "post.npz"), "--data", str(tmp_path / "test.npz"),
               "--theta-key", "params", "--x-key", "data", "--out", str(out),
               "--num-samples", "40", "--max-test", "70", "--metrics", "sbc", "coverage",
               "--no-plots", "--quiet"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_test"] == 70 and set(metrics) >= {"sbc", "coverage"}
    assert "tarp" not in metrics and not list(out.glob("*.png"))
    assert "HPD coverage" in capsys.readouterr().out
