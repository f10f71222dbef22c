"""The typed configuration of a pipeline run: data -> inference -> validation.

A run is described by one YAML file with the three sections ``data``, ``inference`` and
``validation``, or by several files that each hold some of them (later files override earlier
ones, key by key). ltu-ili's own data / inference / validation YAML files are recognised and
translated by :mod:`ilijax.pipeline.ltu_ili`, so they run unchanged. Command-line overrides
``key.sub=value`` (the value is parsed as YAML) are applied last.

Every section is a pydantic model that forbids unknown keys. Errors are raised as
:class:`ConfigError` (a ``ValueError``) and name the field, what was expected and what was got;
an unknown key comes with the nearest valid key.

Relative paths in a native config file are resolved against the folder of that file, so a
config and its data can be moved together; paths given on the command line are resolved against
the current folder (ltu-ili files, too, are resolved against the current folder, as ltu-ili
does).
"""

from __future__ import annotations

import copy
import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EmbeddingConfig",
    "InferenceConfig",
    "NetConfig",
    "PriorConfig",
    "TrainConfig",
    "ValidationConfig",
    "apply_overrides",
    "load_config",
    "parse_override",
]


class ConfigError(ValueError):
    """A configuration that cannot run: unknown key, wrong type, missing file, mismatch."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------------------- data


class NumpySource(_Strict):
    """``.npy`` files in one folder (ltu-ili's ``StaticNumpyLoader`` fields)."""

    in_dir: str = "."
    x_file: str
    theta_file: str
    xobs_file: str | None = None
    thetafid_file: str | None = None


class NpzSource(_Strict):
    """One ``.npz`` archive."""

    path: str
    theta_key: str = "theta"
    x_key: str = "x"
    xobs_key: str | None = None
    thetafid_key: str | None = None


class Hdf5Source(_Strict):
    """Datasets of one HDF5 file (paths may name groups, e.g. ``sims/theta``)."""

    path: str
    theta_dataset: str = "theta"
    x_dataset: str = "x"
    xobs_dataset: str | None = None
    thetafid_dataset: str | None = None


class NetcdfSource(_Strict):
    """An xarray dataset of summaries (``.nc``); the first dimension indexes simulations."""

    path: str
    x_variable: str = "x"
    theta_variable: str | None = "theta"
    theta_variables: list[str] | None = None
    xobs_variable: str | None = None
    flatten: bool = True


class SimulatorSource(_Strict):
    """A simulator given by import path, run on ``num_simulations`` prior draws.

    ``function`` is ``"package.module:name"`` (or ``"package.module.name"``, or
    ``"path/to/file.py:name"``, relative to the config file). It is either the
    simulator itself (JAX ``(key, theta) -> x`` or numpy ``(theta_batch) -> x_batch``), or, with
    ``factory: true``, a function called with ``args`` that returns one.
    """

    function: str
    num_simulations: int = Field(gt=0)
    kind: Literal["auto", "jax", "numpy"] = "auto"
    factory: bool = False
    args: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(default=1000, gt=0)
    x_obs: list[float] | None = None


class TaskSource(_Strict):
    """One of ilijax's embedded tasks (``ilijax.tasks``), simulated on ``num_simulations`` prior
    draws; its prior is used when ``inference.prior`` is not given."""

    name: str
    num_simulations: int = Field(gt=0)
    args: dict[str, Any] = Field(default_factory=dict)
    observation: bool = False  # also simulate one x_obs at a prior draw theta_fid (for demos)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from ilijax.tasks import TASKS

        if v not in TASKS:
            raise ValueError(f"expected one of {sorted(TASKS)}, got {v!r}")
        return v


SOURCES = ("numpy", "npz", "hdf5", "netcdf", "simulator", "task")


class DataConfig(_Strict):
    """Where the ``(theta, x)`` pairs come from, and how many are held out for validation.

    Exactly one source among ``numpy``, ``npz``, ``hdf5``, ``netcdf``, ``simulator``, ``task``
    (or in-memory arrays passed to :func:`ilijax.pipeline.run`).
    """

    numpy: NumpySource | None = None
    npz: NpzSource | None = None
    hdf5: Hdf5Source | None = None
    netcdf: NetcdfSource | None = None
    simulator: SimulatorSource | None = None
    task: TaskSource | None = None
    test_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    nan_policy: Literal["drop", "raise"] = "drop"

    @model_validator(mode="after")
    def _one_source(self):
        given = [s for s in SOURCES if getattr(self, s) is not None]
        if len(given) > 1:
            raise ValueError(f"expected at most one data source, got {given}")
        return self

    @property
    def source(self) -> str | None:
        for s in SOURCES:
            if getattr(self, s) is not None:
                return s
        return None


# ------------------------------------------------------------------------------------ inference

PRIORS = ("uniform", "normal", "multivariate_normal", "log_uniform", "truncated_normal",
          "independent")


class PriorConfig(_Strict):
    """A prior from :mod:`ilijax.priors`: ``{name: uniform, args: {low: [...], high: [...]}}``,
    or ``{name: independent, parts: [...]}`` for a product of per-parameter priors."""

    name: Literal["uniform", "normal", "multivariate_normal", "log_uniform", "truncated_normal",
                  "independent"]
    args: dict[str, Any] = Field(default_factory=dict)
    parts: list[PriorConfig] | None = None

    @model_validator(mode="after")
    def _parts(self):
        if (self.name == "independent") != (self.parts is not None):
            raise ValueError("'parts' is required with name 'independent' and only with it")
        return self


class EmbeddingConfig(_Strict):
    """An embedding network from :mod:`ilijax.nn` (``fcn``, ``cnn1d``, ``cnn2d``, ``deepset``,
    ``gnn``) with its constructor arguments; ``share: true`` gives every ensemble member the same
    embedding instead of one each."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    share: bool = False


DENSITY_MODELS = ("maf", "nsf", "nsf_autoregressive", "mdn", "made", "realnvp")
CLASSIFIER_MODELS = ("mlp", "resnet")


class NetConfig(_Strict):
    """One ensemble entry (ltu-ili's ``nets`` item): ``repeats`` members of one architecture."""

    model: Literal["maf", "nsf", "nsf_autoregressive", "mdn", "made", "realnvp", "mlp", "resnet"]
    hidden_features: int = Field(default=50, gt=0)
    num_transforms: int = Field(default=5, gt=0)
    num_components: int = Field(default=10, gt=0)
    num_bins: int = Field(default=10, gt=0)
    num_blocks: int = Field(default=2, gt=0)
    activation: str | None = None
    signature: str = ""
    repeats: int = Field(default=1, gt=0)


OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "lamb", "lion")


class TrainConfig(_Strict):
    """Training options, with ltu-ili's names (sbi's ``train_args``).

    ``schedule`` is ``ilijax.fit``'s: ``cosine`` (its default for npe/nle/nre: rate 1e-3
    decayed along a cosine over a fixed run, best-validation params kept) or ``constant``
    (sbi's and ltu-ili's: 5e-4 with early stopping after ``stop_after_epochs``; the default of
    the sequential methods). Left out, it is ``constant`` when the file sets ``learning_rate``
    or ``stop_after_epochs`` (their ltu-ili meaning), and the method's default otherwise;
    converted ltu-ili files say ``constant``. Unset ``learning_rate``, ``stop_after_epochs`` and
    ``max_epochs`` take the schedule's defaults (see :func:`ilijax.fit`); the first two and
    ``schedule`` are filled in when the config is read, so the written config says what ran.
    ``stop_after_epochs: null`` set in a file means no early stopping."""

    training_batch_size: int = Field(default=50, gt=0)
    schedule: Literal["cosine", "constant"] | None = None
    learning_rate: float | None = Field(default=None, gt=0)
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    stop_after_epochs: int | None = Field(default=None, gt=0)
    clip_max_norm: float | None = Field(default=5.0, gt=0)
    max_epochs: int | None = Field(default=None, gt=0)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop", "lamb", "lion"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0)
    num_round: int = Field(default=2, gt=0)
    simulations_per_round: int | None = Field(default=None, gt=0)
    checkpoint_every: int = Field(default=10, gt=0)


METHODS = ("npe", "nle", "nre", "snpe", "snle", "snre")


class InferenceConfig(_Strict):
    """What is trained: prior, optional embedding, method, ensemble, training options; plus the
    run's seed, output folder and name (output files are prefixed ``{name}_``)."""

    prior: PriorConfig | None = None
    embedding: EmbeddingConfig | None = None
    method: Literal["npe", "nle", "nre", "snpe", "snle", "snre"] = "npe"
    nets: list[NetConfig] | None = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    weighting: Literal["softmax", "uniform", "stacking"] = "softmax"
    space: Literal["auto", "unconstrained", "theta"] = "auto"
    nre_variant: Literal["a", "b", "c", "bnre"] = "b"
    num_atoms: int = Field(default=10, ge=2)
    seed: int = 0
    out_dir: str = "ilijax-run"
    name: str = ""

    @field_validator("nets")
    @classmethod
    def _nonempty(cls, v):
        if v is not None and not v:
            raise ValueError("expected at least one net, got an empty list")
        return v

    @model_validator(mode="after")
    def _nets_fit_method(self):
        if self.nets is None:
            return self
        ratio = self.method in ("nre", "snre")
        for i, net in enumerate(self.nets):
            if ratio and net.model not in CLASSIFIER_MODELS:
                raise ValueError(f"nets[{i}].model: method {self.method!r} trains classifiers, "
                                 f"expected one of {CLASSIFIER_MODELS}, got {net.model!r}")
            if not ratio and net.model not in DENSITY_MODELS:
                raise ValueError(f"nets[{i}].model: method {self.method!r} trains density "
                                 f"estimators, expected one of {DENSITY_MODELS}, got "
                                 f"{net.model!r}")
        return self

    @model_validator(mode="after")
    def _space_is_npe(self):
        if self.space == "theta" and self.method not in ("npe", "snpe"):
            raise ValueError(f"space: {self.space!r} is for npe/snpe (the flow over theta); "
                             f"method is {self.method!r}")
        return self

    @model_validator(mode="after")
    def _resolve_schedule(self):
        # Resolved here, not in the runner, so the written {name}_config.yaml says what ran and
        # reads back as the same run (its every key is then "set").
        t = self.train
        if t.schedule is None:
            ltu_ili_keys = {"learning_rate", "stop_after_epochs"} & t.model_fields_set
            t.schedule = ("constant" if ltu_ili_keys or self.method.startswith("s")
                          else "cosine")
        if "stop_after_epochs" not in t.model_fields_set:
            t.stop_after_epochs = 20 if t.schedule == "constant" else None
        if t.learning_rate is None:
            t.learning_rate = 5e-4 if t.schedule == "constant" else 1e-3
        return self

    @property
    def prefix(self) -> str:
        return f"{self.name}_" if self.name else ""


# ----------------------------------------------------------------------------------- validation

VALIDATION_METRICS = ("sbc", "coverage", "tarp", "log_prob", "predictions", "predictive")


class SamplerConfig(_Strict):
    """How posterior draws are made: ``method`` (``direct`` for NPE; ``nuts``, ``hmc``,
    ``mala``, ``slice``, ``aies``, ``ess``, ``vi``; default: direct for NPE, NUTS otherwise) and
    the sampler's options (``num_chains``, ``num_warmup``, ``thin``, ...)."""

    method: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ValidationConfig(_Strict):
    """Which diagnostics run on the held-out test set, with how many draws and which sampler."""

    metrics: list[Literal["sbc", "coverage", "tarp", "log_prob", "predictions", "predictive"]] = (
        Field(default_factory=lambda: ["sbc", "coverage", "tarp", "log_prob", "predictions"]))
    num_samples: int = Field(default=1000, gt=0)
    max_test: int | None = Field(default=None, gt=1)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    labels: list[str] | None = None
    ensemble_mode: bool = True
    plots: bool = True
    style_path: str | None = None
    corner_index: int = Field(default=0, ge=0)
    # Draws at the observation x_obs (when the data has one); 0 skips them. For MCMC samplers
    # one observation is a separate compiled program from the test batch.
    xobs_samples: int = Field(default=1000, ge=0)


class Config(_Strict):
    """A whole run. Each stage reads the sections it needs."""

    data: DataConfig = Field(default_factory=DataConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)

    def to_dict(self) -> dict:
        """The resolved config as plain YAML-able data (defaults filled in)."""
        return self.model_dump(mode="json")


SECTIONS = ("data", "inference", "validation")

# Fields that hold paths, resolved against the folder of the file that sets them.
_PATH_FIELDS = {
    ("data", "numpy", "in_dir"), ("data", "npz", "path"), ("data", "hdf5", "path"),
    ("data", "netcdf", "path"), ("inference", "out_dir"), ("validation", "style_path"),
    ("data", "simulator", "function"),
}
_FUNCTION_FIELD = ("data", "simulator", "function")


# ------------------------------------------------------------------------------------- errors


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``Model``, ``Model | None``, ``list[Model]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, list, Sequence):
        for a in typing.get_args(annotation):
            m = _model_of(a)
            if m is not None:
                return m
    return None


def _check_keys(model: type[BaseModel], data: Any, where: str) -> None:
    """Raises on the first unknown key, with the nearest valid one (pydantic's message only
    says 'extra inputs are not permitted')."""
    if not isinstance(data, Mapping):
        return
    fields = model.model_fields
    for key, value in data.items():
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            if not near:  # maybe it belongs one level down (e.g. inference.train.learning_rate)
                nested = _nested_keys(model)
                close = difflib.get_close_matches(str(key), [k.rsplit(".", 1)[-1] for k in
                                                             nested], n=1, cutoff=0.75)
                near = [k for k in nested if close and k.rsplit(".", 1)[-1] == close[0]][:1]
            hint = f"; did you mean '{where}{near[0]}'?" if near else ""
            raise ConfigError(
                f"{where}{key}: unknown key{hint} (valid keys here: {', '.join(fields)})")
        sub = _model_of(fields[key].annotation)
        if sub is None:
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                _check_keys(sub, item, f"{where}{key}[{i}].")
        else:
            _check_keys(sub, value, f"{where}{key}.")


def _nested_keys(model: type[BaseModel], prefix: str = "", seen: tuple = ()) -> list[str]:
    out = []
    for name, f in model.model_fields.items():
        sub = _model_of(f.annotation)
        if sub is not None:
            if sub not in seen and sub is not model:
                out += _nested_keys(sub, f"{prefix}{name}.", seen + (model,))
        elif prefix:
            out.append(f"{prefix}{name}")
    return out


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e["loc"])
        loc = loc.replace(".[", "[")
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        got = "" if e["type"] in ("missing",) or "got" in msg else f"; got {_describe(e['input'])}"
        if e["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{loc or '<config>'}: {msg}{got}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def validate_config(raw: Mapping[str, Any]) -> Config:
    """Checks plain data (e.g. loaded YAML) against the schema and returns a :class:`Config`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"expected a mapping of sections {SECTIONS}, got {_describe(raw)}")
    _check_keys(Config, raw, "")
    try:
        return Config.model_validate(dict(raw))
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e)) from None


# ---------------------------------------------------------------------------- files, overrides


def deep_merge(base: dict, update: Mapping) -> dict:
    """``update`` merged into a copy of ``base``, recursively for mappings."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"inference.train.learning_rate=1e-3"`` -> ``(["inference", "train",
    "learning_rate"], 0.001)``; the value is parsed as YAML (so ``[1, 2]``, ``true``, ``null``
    work) and stays a string if it does not parse."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key part in {key!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    # YAML 1.1 reads 1e-3 as a string; numbers are what people mean.
    if isinstance(parsed, str):
        try:
            parsed = float(parsed) if any(c in parsed for c in ".eE") else int(parsed)
        except ValueError:
            pass
    return parts, parsed


def apply_overrides(raw: dict, overrides: Sequence[str], base_dir: str | os.PathLike) -> dict:
    """Applies ``key.sub=value`` overrides to raw config data (paths against ``base_dir``)."""
    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = out
        for p in parts[:-1]:
            if isinstance(node, list):  # an item of a list, e.g. inference.nets.0.repeats
                if not p.isdigit() or int(p) >= len(node):
                    raise ConfigError(f"override {text!r}: {p!r} is not an index of a list of "
                                      f"{len(node)} items")
                node = node[int(p)]
                continue
            if node.get(p) is None:
                node[p] = {}
            elif not isinstance(node[p], dict | list):
                raise ConfigError(f"override {text!r}: {p!r} is a value, not a section")
            node = node[p]
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override {text!r}: {last!r} is not an index of a list of "
                                  f"{len(node)} items")
            node[int(last)] = value
        else:
            node[last] = value
        _resolve_paths(out, base_dir, only=tuple(parts))
    return out


def _resolve_paths(raw: dict, base_dir: str | os.PathLike, only: tuple[str, ...] | None = None):
    for path in _PATH_FIELDS:
        if only is not None and tuple(only) != path:
            continue
        node = raw
        for p in path[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict) and isinstance(node.get(path[-1]), str):
            value = os.path.expanduser(node[path[-1]])
            if path == _FUNCTION_FIELD:  # "file.py:name" is a path; "pkg.mod:name" is not
                file, sep, attr = value.rpartition(":")
                if not file.endswith(".py"):
                    continue
                if not os.path.isabs(file):
                    file = os.path.normpath(os.path.join(base_dir, file))
                node[path[-1]] = f"{file}{sep}{attr}"
                continue
            if not os.path.isabs(value):
                value = os.path.normpath(os.path.join(base_dir, value))
            node[path[-1]] = value


def read_yaml(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None


def load_raw(paths: Sequence[str | os.PathLike]) -> tuple[dict, list[str]]:
    """Reads and merges config files (native or ltu-ili) into raw native data.

    Returns:
        ``(raw, formats)`` with one format (``"ilijax"`` or ``"ltu-ili <stage>"``) per file.
    """
    from ilijax.pipeline import ltu_ili

    raw: dict = {}
    formats = []
    if not paths:
        raise ConfigError("expected at least one config file, got none")
    for p in paths:
        data = read_yaml(p)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(p)!r}: expected a mapping, got "
                              f"{_describe(data)}")
        kind = ltu_ili.detect(data)
        if kind is None:
            section = {k: v for k, v in data.items()}
            if section and not set(section) <= set(SECTIONS):
                unknown = [k for k in section if k not in SECTIONS]
                near = difflib.get_close_matches(str(unknown[0]), SECTIONS, n=1, cutoff=0.5)
                hint = f"; did you mean '{near[0]}'?" if near else ""
                raise ConfigError(
                    f"config file {str(p)!r}: {unknown[0]}: unknown section{hint} Expected the "
                    f"sections {', '.join(SECTIONS)} (or an ltu-ili data, inference or "
                    f"validation file)")
            section = copy.deepcopy(section)
            _resolve_paths(section, Path(p).resolve().parent)
            formats.append("ilijax")
        else:
            section = ltu_ili.convert(kind, data, source=str(p))
            _resolve_paths(section, Path.cwd())
            formats.append(f"ltu-ili {kind}")
        raw = deep_merge(raw, section)
    return raw, formats


def load_config(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    overrides: Sequence[str] = (),
) -> Config:
    """Loads config files (native or ltu-ili; merged in order), applies ``key.sub=value``
    overrides and validates the result.

    Raises:
        ConfigError: With the field, the expected and the given value, or the unknown key with
            the nearest valid one.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    raw, _ = load_raw(list(paths))
    raw = apply_overrides(raw, overrides, Path.cwd())
    return validate_config(raw)
