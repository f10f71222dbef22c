"""End-to-end pipeline runs at tiny sizes: every shipped config, resume, reuse, sweeps, the CLI."""

import csv
import json
import runpy
import warnings
from pathlib import Path

import arviz as az
import jax
import numpy as np
import pytest
import yaml

import ilijax
from ilijax import pipeline
from ilijax.cli import main as cli
from ilijax.pipeline import _checkpoint

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
LTU = EXAMPLES / "ltu-ili"

# Tiny sizes for every run; the configs are otherwise used as shipped.
TINY = ["inference.train.max_epochs=2", "validation.num_samples=16", "validation.max_test=6",
        "validation.xobs_samples=16"]
# (the draws at x_obs are skipped: for MCMC they compile a second program; NPE covers them)
MCMC = ["validation.sampler.options.num_warmup=20", "validation.sampler.options.num_chains=2",
        "validation.xobs_samples=0"]


def check_outputs(result, *, x_obs: bool) -> None:
    """Every promised file exists and loads."""
    out, prefix = result.out_dir, result.config.inference.prefix
    cfg = pipeline.validate_config(yaml.safe_load((out / f"{prefix}config.yaml").read_text()))
    assert cfg == result.config
    with np.load(out / f"{prefix}test.npz") as z:
        assert z["theta"].shape[0] == z["x"].shape[0] >= 2
    post = ilijax.load(out / f"{prefix}posterior.npz")
    assert post.method == result.config.inference.method.lstrip("s")
    np.testing.assert_allclose(post.weights, result.posterior.weights, rtol=1e-6)
    summary = json.loads((out / f"{prefix}summary.json").read_text())
    members = post.num_members
    assert len(summary["weights"]) == len(summary["signatures"]) == members
    if "train_loss" in summary:
        assert np.asarray(summary["train_loss"], dtype=float).shape[1] == members
        assert len(summary["epochs"]) == members
    stages = json.loads((out / f"{prefix}stages.json").read_text())
    assert set(stages) == {"data", "inference", "validation"}
    val = out / f"{prefix}validation"
    metrics = json.loads((val / "metrics.json").read_text())
    assert metrics["num_test"] == np.load(val / "samples.npy").shape[0]
    tree = az.from_netcdf(val / "validation.nc")
    assert "posterior" in tree.children and "true_parameters" in tree.children
    if result.config.validation.plots:
        pngs = sorted(val.glob("*.png"))
        assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    if x_obs:
        assert np.load(val / "xobs_samples.npy").shape[-1] == post.theta_dim
        assert (val / "xobs_corner.png").stat().st_size > 1000


@pytest.fixture
def ltu_toy(tmp_path, monkeypatch):
    """ltu-ili's folder layout: the toy data in ./toy, configs run from the current folder."""
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(LTU / "make_toy_data.py"), run_name="not_main")["main"](
        ["--num", "300", "--out", str(tmp_path / "toy")])
    return tmp_path


@pytest.mark.parametrize("engine", ["NPE", "NLE", "NRE"])
@pytest.mark.filterwarnings("ignore:.*R-hat > 1.01:RuntimeWarning")  # 20 warm-up steps here
def test_ltu_ili_configs_run_unchanged(ltu_toy, engine):
    files = [LTU / "configs" / "data" / "toy.yaml",
             LTU / "configs" / "infer" / f"toy_sbi_{engine}.yaml",
             LTU / "configs" / "val" / f"toy_sbi_{engine}.yaml"]
    # tiny nets: the shipped architecture (kinds, ensemble, repeats) at a fraction of the size
    nets = {"NPE": ["inference.nets.0.hidden_features=8", "inference.nets.0.num_transforms=2",
                    "inference.nets.1.hidden_features=8"],
            "NLE": ["inference.nets.0.hidden_features=8", "inference.nets.0.num_transforms=2",
                    "inference.nets.1.hidden_features=8"],
            "NRE": ["inference.nets.0.hidden_features=8", "inference.nets.0.num_blocks=1",
                    "inference.nets.1.hidden_features=8"]}[engine]
    over = TINY + nets + (MCMC if engine != "NPE" else [])
    result = pipeline.run(pipeline.load_config(files, overrides=over), log=None)
    assert result.out_dir == ltu_toy / "toy"
    assert result.ran == ["data", "inference", "validation"]
    # ltu-ili's nets, ensemble and names carried over
    sigs = {"NPE": ["maf_0", "maf_1", "maf_2", "mdn1"], "NLE": ["maf0", "mdn1"],
            "NRE": ["resnet0", "mlp1"]}[engine]
    assert result.summary["signatures"] == sigs
    assert (ltu_toy / "toy" / f"toy_{engine}_posterior.npz").exists()
    check_outputs(result, x_obs=engine == "NPE")


def test_native_example_runs_and_cli(tmp_path, capsys):
    out = tmp_path / "toy_out"
    code = cli(["run", str(EXAMPLES / "toy_npe.yaml"), "--quiet", "-o",
                f"inference.out_dir={out}", "-o", "data.task.num_simulations=400",
                "-o", "data.test_fraction=0.1"] + sum((["-o", t] for t in TINY + [
                    "inference.nets.0.hidden_features=8", "inference.nets.0.num_transforms=2",
                    "inference.nets.1.hidden_features=8"]), []))
    assert code == 0
    text = capsys.readouterr().out
    assert "ran: data, inference, validation" in text and "toy_posterior.npz" in text
    cfg = pipeline.load_config([out / "toy_config.yaml"])
    result = pipeline.run(cfg, log=None)      # same config again: everything reused
    assert result.ran == [] and result.reused == ["inference", "validation"]
    check_outputs(result, x_obs=True)
    # convert: ltu-ili files -> one ilijax config that loads back to the same thing
    assert cli(["convert", str(EXAMPLES / "toy_npe.yaml"), "--output",
                str(tmp_path / "c.yaml")]) == 0
    assert pipeline.load_config([tmp_path / "c.yaml"]) == pipeline.load_config(
        [EXAMPLES / "toy_npe.yaml"])
    # a config error is a message and exit status 2, not a traceback
    assert cli(["run", str(EXAMPLES / "toy_npe.yaml"), "-o", "inference.methd=npe"]) == 2
    assert "did you mean 'inference.method'" in capsys.readouterr().err


NATIVE = {
    "slcp_nle.yaml": ["data.task.num_simulations=300", "data.test_fraction=0.05",
                      "inference.nets.0.hidden_features=8", "inference.nets.0.num_transforms=2"]
    + MCMC,
    "maps_cnn.yaml": ["data.simulator.num_simulations=300", "data.test_fraction=0.05",
                      "inference.embedding.args.channels=[4]",
                      "inference.embedding.args.out_features=4",
                      "inference.embedding.args.hidden=[8]",
                      "inference.nets.0.hidden_features=8", "inference.nets.0.num_transforms=1"],
}


@pytest.mark.parametrize("name", sorted(NATIVE))
@pytest.mark.filterwarnings("ignore:.*R-hat > 1.01:RuntimeWarning")
def test_native_examples_run(tmp_path, name):
    over = TINY + NATIVE[name] + [f"inference.out_dir={tmp_path / 'out'}"]
    result = pipeline.run(pipeline.load_config([EXAMPLES / name], overrides=over), log=None)
    assert result.ran == ["data", "inference", "validation"]
    check_outputs(result, x_obs=False)
    if name == "maps_cnn.yaml":   # the maps keep their shape through training and saving
        post = ilijax.load(result.files["posterior"])
        assert post.x_shape == (16, 16)


def _small_toy(tmp_path, **extra) -> list[str]:
    base = {"data": {"task": {"name": "toy", "num_simulations": 300}, "test_fraction": 0.1},
            "inference": {"nets": [{"model": "maf", "hidden_features": 8,
                                    "num_transforms": 2, "repeats": 2}],
                          "out_dir": str(tmp_path / "run"), "name": "t"},
            "validation": {"num_samples": 16, "max_test": 6, "plots": False}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(base))
    return [str(path)]


def test_killed_run_resumes_from_checkpoint(tmp_path, monkeypatch):
    paths = _small_toy(tmp_path)
    over = ["inference.train.max_epochs=6", "inference.train.checkpoint_every=2",
            "inference.train.stop_after_epochs=null"]
    cfg = pipeline.load_config(paths, overrides=over)
    seen = []
    real = _checkpoint.writer

    def killing_writer(path, h):
        save = real(path, h)

        def wrapped(state):
            save(state)
            seen.append(int(state.epoch))
            if int(state.epoch) == 4 and len(seen) == 2:
                raise KeyboardInterrupt  # the job is killed right after its epoch-4 checkpoint
        return wrapped

    monkeypatch.setattr(_checkpoint, "writer", killing_writer)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(cfg, log=None)
    ckpt = Path(cfg.inference.out_dir) / "t_checkpoint.npz"
    assert ckpt.exists() and seen == [2, 4]
    result = pipeline.run(cfg, log=None)
    assert result.resumed_from_epoch == 4
    assert seen[2:] == [6]                   # only epochs 5 and 6 ran the second time
    assert result.summary["epochs"] == [6, 6] and result.summary["resumed_from_epoch"] == 4
    assert not ckpt.exists()                  # removed once training finished
    check_outputs(result, x_obs=False)
    # a checkpoint made with another config is not resumed from
    np.savez(ckpt, epoch=np.asarray(4), __pipeline_config_hash__=np.asarray("another"))
    msgs = []
    assert _checkpoint.load(ckpt, "this-config", msgs.append) == (None, 0)
    assert "another config" in msgs[0]


def test_killed_sequential_run_resumes_at_the_next_round(tmp_path, monkeypatch):
    paths = _small_toy(tmp_path)
    over = ["data.task.observation=true", "inference.method=snpe",
            "inference.train.num_round=3", "inference.train.simulations_per_round=120",
            "inference.train.max_epochs=3", "inference.nets.0.repeats=1"]
    cfg = pipeline.load_config(paths, overrides=over)
    seen = []
    real = _checkpoint.writer

    def killing_writer(path, h, to_arrays=None):
        save = real(path, h, to_arrays)

        def wrapped(state):
            save(state)
            seen.append(int(state.rounds_done))
            if seen == [1, 2]:
                raise KeyboardInterrupt  # killed right after round 2 was written
        return wrapped

    monkeypatch.setattr(_checkpoint, "writer", killing_writer)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(cfg, log=None)
    ckpt = Path(cfg.inference.out_dir) / "t_rounds.npz"
    assert ckpt.exists()
    result = pipeline.run(cfg, log=None)
    assert seen == [1, 2, 3]  # only round 3 ran the second time
    assert result.resumed_from_round == 2 and result.summary["resumed_from_round"] == 2
    assert [r["round"] for r in result.summary["rounds"]] == [1, 2, 3]
    assert not ckpt.exists()
    # The same run uninterrupted, in a fresh folder, ends with the same posterior.
    fresh = pipeline.load_config(paths, overrides=[*over,
                                                   f"inference.out_dir={tmp_path / 'fresh'}"])
    again = pipeline.run(fresh, log=None)
    for a, b in zip(jax.tree.leaves(result.posterior), jax.tree.leaves(again.posterior),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sweep_over_two_learning_rates(tmp_path):
    paths = _small_toy(tmp_path)
    csv_path = pipeline.sweep(paths, ["inference.train.learning_rate=1e-3,5e-4"],
                              overrides=["inference.train.max_epochs=2"], log=None)
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [r["trial"] for r in rows] == ["0", "1"]
    assert [float(r["inference.train.learning_rate"]) for r in rows] == [1e-3, 5e-4]
    trials = []
    for r, lr in zip(rows, [1e-3, 5e-4], strict=True):
        out = Path(r["out_dir"])
        # The trial ran with its grid value: its resolved config holds it, and differs from the
        # other trial's in that key (and its out_dir) only.
        cfg = pipeline.validate_config(yaml.safe_load((out / "t_config.yaml").read_text()))
        assert cfg.inference.train.learning_rate == lr
        dump = cfg.model_dump()
        dump["inference"]["train"].pop("learning_rate")
        dump["inference"].pop("out_dir")
        summary = json.loads((out / "t_summary.json").read_text())
        metrics = json.loads((out / "t_validation" / "metrics.json").read_text())
        trials.append((dump, summary))
        # The row holds the trial's own results.
        assert float(r["best_validation_loss"]) == pytest.approx(
            min(summary["best_validation_loss"]), rel=1e-12)
        assert float(r["coverage_error"]) == pytest.approx(metrics["coverage"]["error"],
                                                           rel=1e-12)
        assert float(r["tarp_atc"]) == pytest.approx(metrics["tarp"]["atc"], rel=1e-12)
    (dump0, s0), (dump1, s1) = trials
    assert dump0 == dump1
    # Same data, seed and initialisation, other learning rate: every member's loss history
    # differs between the trials (each epoch's mean training loss, all 2 x 2 of them).
    assert s0["epochs"] == s1["epochs"] == [2, 2]
    l0, l1 = np.asarray(s0["train_loss"]), np.asarray(s1["train_loss"])
    assert l0.shape == l1.shape == (2, 2) and np.all(np.abs(l0 - l1) > 1e-6), (l0, l1)
    # one trial of a job array rebuilds the table from every finished trial
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = pipeline.sweep(paths, ["inference.train.learning_rate=1e-3,5e-4"],
                               overrides=["inference.train.max_epochs=2"], trial=1, log=None)
    with open(again) as f:
        assert len(list(csv.DictReader(f))) == 2
