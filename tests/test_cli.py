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
    assert "ran: data, inference, validation" in printed
    for name in ("posterior.npz", "summary.json", "config.yaml", "test.npz", "stages.json",
                 "simulations.npz"):
        assert (out / name).stat().st_size > 0, name
    val = out / "validation"
    for png in ("corner.png", "coverage.png", "ranks.png", "tarp.png", "xobs_corner.png"):
        assert (val / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    summary = json.loads((out / "summary.json").read_text())
    assert np.asarray(summary["train_loss"], dtype=float).shape == (2, 2)
    assert summary["num_train"] == 400 and summary["num_test"] == 60
    # the draws at the observation come from the saved posterior (same spread, Monte Carlo)
    post = ilijax.load(out / "posterior.npz")
    with np.load(out / "simulations.npz") as z:
        x_obs = z["x_obs"]
    saved = np.load(val / "xobs_samples.npy")
    assert saved.shape == (300, 3)
    draws = np.asarray(post.sample(jax.random.key(0), x_obs, 4000))
    se = draws.std(0) * np.sqrt(1 / 4000 + 1 / 300)
    assert np.all(np.abs(draws.mean(0) - saved.mean(0)) < 4.5 * se)
    assert not list(out.rglob(".*.tmp"))
    # the validation stage: its numbers are printed and written
    metrics = json.loads((val / "metrics.json").read_text())
    assert metrics["num_test"] == 60 and metrics["num_samples"] == 50
    assert f"{metrics['coverage']['error']:.3f}" in printed
    for name in ("validation.nc", "samples.npy"):
        assert (val / name).stat().st_size > 0, name


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
