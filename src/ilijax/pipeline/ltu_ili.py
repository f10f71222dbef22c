"""Reads ltu-ili's YAML files (data, inference, validation) and maps them onto ilijax's schema.

ltu-ili (Ho et al. 2024) describes a run with three files:

- data: ``StaticNumpyLoader`` fields (``in_dir``, ``x_file``, ``theta_file``, ``xobs_file``,
  ``thetafid_file``);
- inference: ``prior`` and ``embedding_net`` as ``{module, class, args}``, ``model`` with
  ``backend`` / ``engine`` / ``name`` / ``nets``, ``train_args``, ``device``, ``out_dir``
  (and the older ``model: {module, class}`` / ``output_path`` form);
- validation: ``posterior_file``, ``out_dir``, ``labels``, ``ensemble_mode``, ``style_path`` and
  ``metrics`` (``PlotSinglePosterior``, ``PosteriorCoverage`` with ``plot_list``,
  ``PosteriorSamples``).

:func:`convert` turns each into the matching section of an ilijax config. Whatever has no
counterpart in ilijax (an unsupported prior, flow or metric class, a proposal, ABC engines) is
an error that says so and what to use instead; display-only options are dropped with a warning
that names them. Nothing is skipped silently.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any

from ilijax.pipeline.config import ConfigError

__all__ = ["convert", "detect"]

DATA_KEYS = {"in_dir", "x_file", "theta_file", "xobs_file", "thetafid_file"}
SIMULATOR_KEYS = {"num_simulations", "save_simulated", "simulator"}
SUMMARIZER_KEYS = {"stage", "x_root", "train_test_split_file", "param_names"}
INFER_KEYS = {"prior", "embedding_net", "model", "train_args", "device", "out_dir",
              "output_path", "proposal"}
VAL_KEYS = {"posterior_file", "posterior_path", "out_dir", "output_path", "style_path", "labels",
            "ensemble_mode", "metrics", "device"}


def detect(data: dict) -> str | None:
    """``"data"``, ``"inference"`` or ``"validation"`` for an ltu-ili file, None otherwise."""
    keys = set(data)
    if not keys or keys <= {"data", "inference", "validation"}:
        return None
    if keys & {"posterior_file", "posterior_path"} or (
        isinstance(data.get("metrics"), dict)
        and any(isinstance(v, dict) and "class" in v for v in data["metrics"].values())
    ):
        return "validation"
    if isinstance(data.get("model"), dict) or "train_args" in keys or (
        isinstance(data.get("prior"), dict) and "class" in data["prior"]
    ):
        return "inference"
    if keys & (DATA_KEYS | SUMMARIZER_KEYS):
        return "data"
    return None


def convert(kind: str, data: dict, source: str = "<config>") -> dict:
    """Maps one ltu-ili file (of the ``kind`` :func:`detect` returned) onto ilijax sections."""
    return {"data": _data, "inference": _inference, "validation": _validation}[kind](data, source)


def _unknown(where: str, key: str, valid: set[str]) -> ConfigError:
    near = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.5)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    return ConfigError(f"{where}{key}: unknown ltu-ili key{hint} Valid keys: "
                       f"{', '.join(sorted(valid))}")


def _obj(where: str, spec: Any) -> tuple[str, str, dict]:
    if not isinstance(spec, dict) or "class" not in spec:
        raise ConfigError(f"{where}: expected an ltu-ili object {{module, class, args}}, got "
                          f"{spec!r}")
    extra = set(spec) - {"module", "class", "args"}
    if extra:
        raise _unknown(f"{where}.", sorted(extra)[0], {"module", "class", "args"})
    args = spec.get("args") or {}
    if not isinstance(args, dict):
        raise ConfigError(f"{where}.args: expected a mapping, got {args!r}")
    return str(spec.get("module", "")), str(spec["class"]), dict(args)


# ------------------------------------------------------------------------------------------ data


def _data(d: dict, source: str) -> dict:
    if set(d) & SUMMARIZER_KEYS:
        raise ConfigError(
            f"{source}: ltu-ili's SummarizerDatasetLoader (per-node xarray files with a "
            f"train/test split JSON) has no ilijax counterpart; merge the nodes into one .nc "
            f"file and use data.netcdf, or use the Python API")
    if set(d) & SIMULATOR_KEYS:
        raise ConfigError(
            f"{source}: ltu-ili's SBISimulator takes its simulator from Python "
            f"(set_simulator); in ilijax give it as data.simulator.function (an import path "
            f"'package.module:function') with data.simulator.num_simulations, or pass "
            f"simulator= to ilijax.pipeline.run")
    for k in d:
        if k not in DATA_KEYS:
            raise _unknown(f"{source}: ", k, DATA_KEYS)
    if "x_file" not in d or "theta_file" not in d:
        raise ConfigError(f"{source}: an ltu-ili data file needs x_file and theta_file; got "
                          f"keys {sorted(d)}")
    numpy = {"in_dir": d.get("in_dir", "."), "x_file": d["x_file"], "theta_file": d["theta_file"]}
    for k in ("xobs_file", "thetafid_file"):
        if d.get(k):
            numpy[k] = d[k]
    return {"data": {"numpy": numpy}}


# ------------------------------------------------------------------------------------- inference

_PRIOR_CLASSES = {
    "Uniform": ("uniform", {"low": "low", "high": "high"}),
    "IndependentUniform": ("uniform", {"low": "low", "high": "high"}),
    "BoxUniform": ("uniform", {"low": "low", "high": "high"}),
    "IndependentNormal": ("normal", {"loc": "loc", "scale": "scale"}),
    "MultivariateNormal": ("multivariate_normal", {"loc": "loc", "covariance_matrix": "cov"}),
    "IndependentTruncatedNormal": ("truncated_normal", {"loc": "loc", "scale": "scale",
                                                        "low": "low", "high": "high",
                                                        "a": "low", "b": "high"}),
}
_PRIOR_MODULES = {"ili.utils", "ili.utils.distributions_pt", "ili.utils.distributions_tf",
                  "sbi.utils", ""}

_ENGINES = {"NPE": "npe", "NLE": "nle", "NRE": "nre", "SNPE": "snpe", "SNLE": "snle",
            "SNRE": "snre", "SNPE_C": "snpe", "SNLE_A": "snle", "SNRE_B": "snre"}

# ltu-ili / sbi / lampe model names -> ilijax's.
_NETS = {"maf": "maf", "nsf": "nsf", "mdn": "mdn", "made": "made", "maf_rqs": "nsf_autoregressive",
         "nvp": "realnvp", "realnvp": "realnvp", "mlp": "mlp", "resnet": "resnet"}
_NET_KEYS = {"model", "hidden_features", "num_transforms", "num_components", "num_bins",
             "num_blocks", "signature", "repeats"}

_TRAIN_KEYS = {
    "training_batch_size": "training_batch_size", "learning_rate": "learning_rate",
    "validation_fraction": "validation_fraction", "stop_after_epochs": "stop_after_epochs",
    "clip_max_norm": "clip_max_norm", "max_epochs": "max_epochs",
    "max_num_epochs": "max_epochs", "num_round": "num_round",
}
_TRAIN_DISPLAY = {"show_train_summary"}

_EMBEDDINGS = {"FCN": "fcn"}


def _prior(p: Any, source: str) -> dict:
    module, cls, args = _obj(f"{source}: prior", p)
    if module not in _PRIOR_MODULES or cls not in _PRIOR_CLASSES:
        raise ConfigError(
            f"{source}: prior: {module}.{cls} has no ilijax counterpart in the config schema; "
            f"supported: {', '.join(sorted(_PRIOR_CLASSES))} (for other families build the "
            f"prior with ilijax.priors in Python)")
    name, names = _PRIOR_CLASSES[cls]
    out = {}
    for k, v in args.items():
        if k == "device":
            continue  # ltu-ili injects the torch device; JAX places arrays itself
        if k not in names:
            raise _unknown(f"{source}: prior.args.", k, set(names) | {"device"})
        out[names[k]] = v
    return {"name": name, "args": out}


def _embedding(e: Any, source: str) -> dict:
    module, cls, args = _obj(f"{source}: embedding_net", e)
    if module not in ("ili.embedding", "ili.embedding.fcn", "") or cls not in _EMBEDDINGS:
        raise ConfigError(
            f"{source}: embedding_net: {module}.{cls} has no ilijax counterpart; ltu-ili ships "
            f"only ili.embedding.FCN. Use an ilijax config with inference.embedding.name one "
            f"of fcn, cnn1d, cnn2d, deepset, gnn")
    out = {}
    for k, v in args.items():
        if k == "n_hidden":
            out["n_hidden"] = [int(h) for h in v]
        elif k == "act_fn":
            out["act_fn"] = str(v).lower()
        elif k == "n_input":
            continue  # inferred from the data
        else:
            raise _unknown(f"{source}: embedding_net.args.", k, {"n_hidden", "act_fn", "n_input"})
    return {"name": "fcn", "args": out}


def _inference(d: dict, source: str) -> dict:
    for k in d:
        if k not in INFER_KEYS:
            raise _unknown(f"{source}: ", k, INFER_KEYS)
    if d.get("proposal") is not None:
        raise ConfigError(
            f"{source}: proposal: a single-round proposal different from the prior has no "
            f"ilijax counterpart; use method snpe/snle/snre (multi-round) instead")
    out: dict[str, Any] = {}
    if "prior" in d:
        out["prior"] = _prior(d["prior"], source)
    if d.get("embedding_net") is not None:
        out["embedding"] = _embedding(d["embedding_net"], source)
    model = d.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{source}: model: expected a mapping, got {model!r}")
    valid_model = {"backend", "engine", "name", "nets", "module", "class"}
    for k in model:
        if k not in valid_model:
            raise _unknown(f"{source}: model.", k, valid_model)
    engine = model.get("engine") or model.get("class") or "NPE"
    backend = model.get("backend", "sbi")
    if backend not in ("sbi", "lampe", "pydelfi"):
        raise ConfigError(f"{source}: model.backend: expected sbi, lampe or pydelfi, got "
                          f"{backend!r}")
    if backend == "pydelfi":
        engine = "NLE"  # ltu-ili forces pydelfi to NLE
    if engine not in _ENGINES:
        raise ConfigError(
            f"{source}: model.engine: {engine!r} has no ilijax counterpart; expected one of "
            f"{', '.join(sorted(_ENGINES))} (ABC engines such as MCABC are not provided)")
    method = _ENGINES[engine]
    if backend == "lampe" and method != "npe":
        raise ConfigError(f"{source}: model.engine: ltu-ili's lampe backend runs NPE only, got "
                          f"{engine!r}")
    out["method"] = method
    if model.get("name"):
        out["name"] = str(model["name"])
    nets = model.get("nets")
    if nets is not None:
        if not isinstance(nets, list):
            raise ConfigError(f"{source}: model.nets: expected a list, got {nets!r}")
        out["nets"] = [_net(i, n, source) for i, n in enumerate(nets)]
    train = d.get("train_args") or {}
    if not isinstance(train, dict):
        raise ConfigError(f"{source}: train_args: expected a mapping, got {train!r}")
    tr = {}
    for k, v in train.items():
        if k in _TRAIN_DISPLAY:
            warnings.warn(f"{source}: train_args.{k} is a display option of sbi and is ignored "
                          f"(ilijax writes the training summary to summary.json)", UserWarning,
                          stacklevel=4)
            continue
        if k not in _TRAIN_KEYS:
            raise ConfigError(
                f"{source}: train_args.{k} has no ilijax counterpart; supported: "
                f"{', '.join(sorted(_TRAIN_KEYS))}")
        tr[_TRAIN_KEYS[k]] = v
    # ltu-ili trains as sbi does (Adam at a constant rate, early stopping), with or without
    # train_args: a converted file keeps that rather than ilijax's cosine default.
    tr.setdefault("schedule", "constant")
    out["train"] = tr
    if "device" in d and d["device"] not in ("cpu", "cuda", "gpu", None) and not str(
            d["device"]).startswith("cuda"):
        raise ConfigError(f"{source}: device: expected 'cpu' or 'cuda', got {d['device']!r}")
    # 'device' needs no mapping: JAX runs on its default backend (a GPU when one is present).
    out_dir = d.get("out_dir", d.get("output_path"))
    if out_dir is not None:
        out["out_dir"] = str(out_dir)
    return {"inference": out}


def _net(i: int, n: Any, source: str) -> dict:
    where = f"{source}: model.nets[{i}]"
    if not isinstance(n, dict) or "model" not in n:
        raise ConfigError(f"{where}: expected a mapping with 'model', got {n!r}")
    out = {}
    for k, v in n.items():
        if k not in _NET_KEYS:
            raise ConfigError(f"{where}.{k} has no ilijax counterpart; supported keys: "
                              f"{', '.join(sorted(_NET_KEYS))}")
        if k == "model":
            if v not in _NETS:
                raise ConfigError(
                    f"{where}.model: {v!r} has no ilijax counterpart; supported: "
                    f"{', '.join(sorted(_NETS))}")
            v = _NETS[v]
        out[k] = v
    return out


# ------------------------------------------------------------------------------------ validation

_METRIC_MODULES = {"ili.validation.metrics", "ili.validation", ""}
_PLOTS = {"coverage": "coverage", "histogram": "sbc", "predictions": "predictions",
          "tarp": "tarp", "logprob": "log_prob"}
_SAMPLERS = {"direct": "direct", "slice_np": "slice", "slice_np_vectorized": "slice",
             "emcee": "aies", "pyro": "nuts", "nuts": "nuts", "hmc": "hmc", "vi": "vi",
             "slice": "slice"}


def _sampler(where: str, args: dict) -> dict | None:
    method = args.get("sample_method")
    if method is None:
        return None
    if method not in _SAMPLERS:
        raise ConfigError(f"{where}.sample_method: {method!r} has no ilijax counterpart; "
                          f"supported: {', '.join(sorted(_SAMPLERS))}")
    options: dict[str, Any] = {}
    params = args.get("sample_params") or {}
    dropped = []
    for k, v in params.items():
        if k == "num_chains":
            if v is not None and int(v) > 0:
                options["num_chains"] = int(v)
        elif k == "burn_in":
            options["num_warmup"] = int(v)
        elif k == "thin":
            options["thin"] = int(v)
        elif k == "learning_rate" and _SAMPLERS[method] == "vi":
            options["learning_rate"] = float(v)
        elif k in ("dist", "n_particles") and _SAMPLERS[method] == "vi":
            dropped.append(k)
        else:
            raise ConfigError(f"{where}.sample_params.{k} has no ilijax counterpart for "
                              f"sample_method {method!r}")
    if dropped:
        warnings.warn(f"{where}.sample_params: {dropped} ignored; ilijax's VI fits its own flow "
                      f"family (see ilijax.samplers.vi)", UserWarning, stacklevel=5)
    if _SAMPLERS[method] in ("direct",):
        options = {}
    return {"method": _SAMPLERS[method], "options": options}


def _validation(d: dict, source: str) -> dict:
    for k in d:
        if k not in VAL_KEYS:
            raise _unknown(f"{source}: ", k, VAL_KEYS)
    val: dict[str, Any] = {}
    inf: dict[str, Any] = {}
    post = d.get("posterior_file") or d.get("posterior_path")
    if post:
        stem = str(post).replace("\\", "/").rsplit("/", 1)[-1]
        for suffix in ("_posterior.pkl", "posterior.pkl", ".pkl"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        inf["name"] = stem
    out_dir = d.get("out_dir", d.get("output_path"))
    if out_dir is not None:
        inf["out_dir"] = str(out_dir)
    if d.get("labels") is not None:
        val["labels"] = [str(v) for v in d["labels"]]
    if "ensemble_mode" in d:
        val["ensemble_mode"] = bool(d["ensemble_mode"])
    if d.get("style_path"):
        val["style_path"] = str(d["style_path"])
    metrics = d.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise ConfigError(f"{source}: metrics: expected a mapping, got {metrics!r}")
    chosen: list[str] = []
    samplers = []
    for key, spec in metrics.items():
        where = f"{source}: metrics.{key}"
        module, cls, args = _obj(where, spec)
        if module not in _METRIC_MODULES:
            raise ConfigError(f"{where}: module {module!r} has no ilijax counterpart")
        common = {"num_samples", "sample_method", "sample_params", "labels", "out_dir",
                  "backend", "seed"}
        if cls == "PlotSinglePosterior":
            allowed = common | {"save_samples"}
            if "num_samples" in args:
                val["xobs_samples"] = int(args["num_samples"])
        elif cls == "PosteriorCoverage":
            allowed = common | {"plot_list", "save_samples"}
            plots = args.get("plot_list", list(_PLOTS))
            for p in plots:
                if p not in _PLOTS:
                    raise ConfigError(f"{where}.args.plot_list: {p!r} has no ilijax "
                                      f"counterpart; supported: {', '.join(_PLOTS)}")
                if _PLOTS[p] not in chosen:
                    chosen.append(_PLOTS[p])
            if "num_samples" in args:
                val["num_samples"] = int(args["num_samples"])
        elif cls == "PosteriorSamples":
            allowed = common  # ilijax always writes the test-set draws (samples.npy)
            if "num_samples" in args and "num_samples" not in val:
                val["num_samples"] = int(args["num_samples"])
        else:
            raise ConfigError(
                f"{where}: class {cls!r} has no ilijax counterpart; supported: "
                f"PlotSinglePosterior, PosteriorCoverage, PosteriorSamples")
        for k in args:
            if k not in allowed:
                raise _unknown(f"{where}.args.", k, allowed)
        s = _sampler(f"{where}.args", args)
        if s is not None:
            samplers.append((cls, s))
    if chosen:
        val["metrics"] = chosen
    if samplers:
        # One sampler serves every metric (the draws are shared); the coverage metric's wins.
        pick = next((s for c, s in samplers if c == "PosteriorCoverage"), samplers[0][1])
        if any(s != pick for _, s in samplers):
            warnings.warn(f"{source}: metrics use different samplers; ilijax draws once for all "
                          f"metrics with {pick['method']!r} {pick['options']}", UserWarning,
                          stacklevel=4)
        val["sampler"] = pick
    out: dict[str, Any] = {"validation": val}
    if inf:
        out["inference"] = inf
    return out
