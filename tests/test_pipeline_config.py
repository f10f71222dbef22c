"""The pipeline's config layer: schema errors, overrides, paths and the ltu-ili translation.

Nothing here trains; the end-to-end runs are in test_pipeline_run.py.
"""

from pathlib import Path

import numpy as np
import pytest
import yaml

from ilijax import pipeline
from ilijax.pipeline import ConfigError, config, ltu_ili

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LTU = EXAMPLES / "ltu-ili" / "configs"


def _write(path: Path, obj) -> Path:
    path.write_text(yaml.safe_dump(obj) if not isinstance(obj, str) else obj)
    return path


def _toy_files(tmp_path: Path, theta_cols: int = 3) -> Path:
    d = tmp_path / "toy"
    d.mkdir()
    rng = np.random.default_rng(0)
    np.save(d / "theta.npy", rng.uniform(size=(40, theta_cols)).astype(np.float32))
    np.save(d / "x.npy", rng.normal(size=(40, 10)).astype(np.float32))
    return d


# A table of broken configs: each must fail with a message naming the field, what was expected
# and what was got (or the nearest valid key).
BROKEN = [
    ("unknown key", {"inference": {"lerning_rate": 1e-3}},
     ["inference.lerning_rate", "unknown key", "inference.train.learning_rate"]),
    ("unknown nested key", {"inference": {"nets": [{"model": "maf", "hiden_features": 3}]}},
     ["inference.nets[0].hiden_features", "did you mean", "hidden_features"]),
    ("unknown section", {"validaton": {}}, ["validaton", "did you mean 'validation'"]),
    ("wrong type", {"inference": {"train": {"learning_rate": "fast"}}},
     ["inference.train.learning_rate", "valid number", "'fast' (str)"]),
    ("wrong type int", {"validation": {"num_samples": [1, 2]}},
     ["validation.num_samples", "integer", "[1, 2] (list)"]),
    ("out of range", {"data": {"test_fraction": 1.5}},
     ["data.test_fraction", "less than 1", "1.5"]),
    ("bad choice", {"inference": {"method": "abc"}},
     ["inference.method", "'npe'", "'abc'"]),
    ("net for the wrong method", {"inference": {"method": "nre", "nets": [{"model": "maf"}]}},
     ["nets[0].model", "classifiers", "'maf'"]),
    ("two sources", {"data": {"npz": {"path": "a.npz"}, "hdf5": {"path": "b.h5"}}},
     ["data", "at most one data source", "npz", "hdf5"]),
    ("missing field", {"data": {"numpy": {"x_file": "x.npy"}}},
     ["data.numpy.theta_file", "missing"]),
    ("unknown task", {"data": {"task": {"name": "moons", "num_simulations": 10}}},
     ["data.task.name", "two_moons", "'moons'"]),
]


@pytest.mark.parametrize("what,raw,fragments", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_configs_name_field_expected_and_got(what, raw, fragments):
    with pytest.raises(ConfigError) as e:
        pipeline.validate_config(raw)
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


LTU_BROKEN = [
    ("prior class", {"prior": {"module": "ili.utils", "class": "IndependentVonMises",
                               "args": {"loc": [0], "concentration": [1]}}},
     ["prior", "IndependentVonMises", "no ilijax counterpart"]),
    ("engine", {"model": {"backend": "sbi", "engine": "MCABC"}},
     ["model.engine", "'MCABC'", "no ilijax counterpart"]),
    ("net model", {"model": {"engine": "NPE", "nets": [{"model": "cnf"}]}},
     ["nets[0].model", "'cnf'", "no ilijax counterpart"]),
    ("train arg", {"model": {"engine": "NPE"}, "train_args": {"retrain_from_scratch": True}},
     ["train_args.retrain_from_scratch", "no ilijax counterpart"]),
    ("embedding", {"model": {"engine": "NPE"},
                   "embedding_net": {"module": "ili.embedding", "class": "CNN", "args": {}}},
     ["embedding_net", "CNN", "no ilijax counterpart"]),
    ("proposal", {"model": {"engine": "NPE"},
                  "proposal": {"module": "ili.utils", "class": "Uniform", "args": {}}},
     ["proposal", "no ilijax counterpart"]),
    ("metric class", {"posterior_file": "a_posterior.pkl", "metrics": {
        "r": {"module": "ili.validation.metrics", "class": "PlotRankStatistics", "args": {}}}},
     ["metrics.r", "PlotRankStatistics", "no ilijax counterpart"]),
    ("plot list", {"posterior_file": "a_posterior.pkl", "metrics": {
        "c": {"module": "ili.validation.metrics", "class": "PosteriorCoverage",
              "args": {"plot_list": ["coverage", "corner"]}}}},
     ["plot_list", "'corner'", "no ilijax counterpart"]),
    ("sampler", {"posterior_file": "a_posterior.pkl", "metrics": {
        "c": {"module": "ili.validation.metrics", "class": "PosteriorCoverage",
              "args": {"sample_method": "zeus"}}}},
     ["sample_method", "'zeus'", "no ilijax counterpart"]),
    ("summarizer loader", {"in_dir": ".", "x_root": "summ", "stage": "train",
                           "theta_file": "p.txt", "train_test_split_file": "s.json",
                           "param_names": ["a"]},
     ["SummarizerDatasetLoader", "no ilijax counterpart"]),
    ("data key typo", {"in_dir": ".", "x_file": "x.npy", "theta_fil": "t.npy"},
     ["theta_fil", "did you mean 'theta_file'"]),
]


@pytest.mark.parametrize("what,raw,fragments", LTU_BROKEN, ids=[b[0] for b in LTU_BROKEN])
def test_unsupported_ltu_ili_configs_are_errors(tmp_path, what, raw, fragments):
    path = _write(tmp_path / "c.yaml", raw)
    with pytest.raises(ConfigError) as e:
        pipeline.load_config([path])
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


def test_missing_file_and_prior_dimension_errors(tmp_path):
    d = _toy_files(tmp_path)
    base = {"data": {"numpy": {"in_dir": str(d), "x_file": "x.npy", "theta_file": "nope.npy"}},
            "inference": {"prior": {"name": "uniform", "args": {"low": [0, 0, 0],
                                                              "high": [1, 1, 1]}},
                          "out_dir": str(tmp_path / "out")}}
    with pytest.raises(ConfigError, match=r"data.numpy: .*nope\.npy"):
        pipeline.run(pipeline.validate_config(base), stages=("data",), log=None)
    base["data"]["numpy"]["theta_file"] = "theta.npy"
    base["inference"]["prior"]["args"] = {"low": [0, 0], "high": [1, 1]}
    with pytest.raises(ConfigError, match=r"inference.prior: has dimension 2 but theta has 3"):
        pipeline.run(pipeline.validate_config(base), stages=("data",), log=None)
    with pytest.raises(ConfigError, match="does not exist"):
        pipeline.load_config([tmp_path / "missing.yaml"])


def test_overrides_parse_yaml_values_and_resolve_paths(tmp_path):
    assert config.parse_override("inference.train.learning_rate=1e-3") == (
        ["inference", "train", "learning_rate"], 1e-3)
    assert config.parse_override("validation.labels=[a, b]")[1] == ["a", "b"]
    assert config.parse_override("inference.train.stop_after_epochs=null")[1] is None
    with pytest.raises(ConfigError, match="key.sub=value"):
        config.parse_override("inference.seed")
    sub = tmp_path / "cfgs"
    sub.mkdir()
    path = _write(sub / "run.yaml", {"data": {"npz": {"path": "data/sims.npz"}},
                                     "inference": {"out_dir": "out"}})
    cfg = pipeline.load_config([path], overrides=["inference.seed=3", "inference.name=a"])
    # paths in a file are relative to the file; overrides to the current folder
    assert cfg.data.npz.path == str(sub / "data" / "sims.npz")
    assert cfg.inference.out_dir == str(sub / "out")
    assert (cfg.inference.seed, cfg.inference.name) == (3, "a")
    cfg = pipeline.load_config([path], overrides=["inference.out_dir=elsewhere"])
    assert cfg.inference.out_dir == str(Path.cwd() / "elsewhere")
    # later files override earlier ones key by key
    second = _write(sub / "more.yaml", {"inference": {"seed": 7}})
    cfg = pipeline.load_config([path, second])
    assert (cfg.inference.seed, cfg.inference.out_dir) == (7, str(sub / "out"))


@pytest.mark.parametrize("engine", ["NPE", "NLE", "NRE"])
def test_shipped_ltu_ili_configs_translate(engine, monkeypatch):
    monkeypatch.chdir(LTU.parent)
    files = [LTU / "data" / "toy.yaml", LTU / "infer" / f"toy_sbi_{engine}.yaml",
             LTU / "val" / f"toy_sbi_{engine}.yaml"]
    raw, formats = config.load_raw(files)
    assert formats == ["ltu-ili data", "ltu-ili inference", "ltu-ili validation"]
    cfg = pipeline.validate_config(raw)
    inf = cfg.inference
    assert inf.method == engine.lower()
    assert inf.name == f"toy_{engine}"
    assert inf.out_dir == str(LTU.parent / "toy")       # ltu-ili: relative to the current folder
    assert cfg.data.numpy.in_dir == str(LTU.parent / "toy")
    assert (cfg.data.numpy.xobs_file, cfg.data.numpy.thetafid_file) == ("xobs.npy",
                                                                        "thetafid.npy")
    assert inf.prior.name == "uniform" and inf.prior.args == {"low": [0, 0, 0],
                                                              "high": [1, 1, 1]}
    assert (inf.train.training_batch_size, inf.train.learning_rate) == (32, 0.001)
    assert cfg.validation.labels == ["t1", "t2", "t3"]
    if engine == "NPE":
        assert [(n.model, n.repeats, n.num_transforms, n.signature) for n in inf.nets] == [
            ("maf", 3, 5, "maf"), ("mdn", 1, 5, "")]
        assert inf.nets[1].num_components == 6
        assert cfg.validation.metrics == ["coverage", "sbc", "predictions", "tarp", "log_prob"]
        assert cfg.validation.sampler.method == "direct"
        assert (cfg.validation.num_samples, cfg.validation.xobs_samples) == (100, 1200)
    elif engine == "NRE":
        assert [(n.model, n.num_blocks) for n in inf.nets] == [("resnet", 3), ("mlp", 2)]
    if engine != "NPE":
        assert cfg.validation.sampler.method == "slice"
        assert cfg.validation.sampler.options == {"num_chains": 4, "num_warmup": 100, "thin": 1}
        assert cfg.validation.metrics == ["coverage", "sbc", "predictions", "tarp"]


def test_detect_formats():
    assert ltu_ili.detect({"in_dir": ".", "x_file": "x.npy", "theta_file": "t.npy"}) == "data"
    assert ltu_ili.detect({"model": {"engine": "NPE"}}) == "inference"
    assert ltu_ili.detect({"posterior_file": "a.pkl"}) == "validation"
    assert ltu_ili.detect({"data": {}, "inference": {}}) is None


def test_resolved_config_round_trips(tmp_path):
    cfg = pipeline.load_config([EXAMPLES / "toy_npe.yaml"])
    again = pipeline.validate_config(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg


def test_space_is_an_npe_option():
    cfg = pipeline.validate_config({"inference": {"method": "snpe", "space": "theta"}})
    assert cfg.inference.space == "theta"
    assert pipeline.validate_config({}).inference.space == "auto"
    cfg = pipeline.validate_config({"inference": {"method": "nle", "space": "unconstrained"}})
    assert cfg.inference.space == "unconstrained"
    with pytest.raises(ConfigError, match=r"space: 'theta' is for npe/snpe .* method is 'nle'"):
        pipeline.validate_config({"inference": {"method": "nle", "space": "theta"}})
    with pytest.raises(ConfigError, match=r"inference.space"):
        pipeline.validate_config({"inference": {"space": "logit"}})
