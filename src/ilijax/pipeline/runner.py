"""The three-stage runner: data -> inference -> validation, from a :class:`Config`.

Every stage writes into ``inference.out_dir`` (file names prefixed ``{name}_`` when the run has
a name, so several runs can share one folder, as in ltu-ili):

==============================  ==============================================================
``{name}_config.yaml``          the resolved config (defaults filled in, paths absolute)
``{name}_simulations.npz``      the simulated pairs (only for ``simulator`` / ``task`` data)
``{name}_test.npz``             the held-out test set (``theta``, ``x``) used by validation
``{name}_posterior.npz``        the trained posterior (:func:`ilijax.save`; load with
                                :func:`ilijax.load`)
``{name}_summary.json``         losses per epoch per member, epochs, weights, member
                                signatures, timings
``{name}_checkpoint.npz``       training state every ``train.checkpoint_every`` epochs
                                (removed when training ends); a rerun resumes from it
``{name}_rounds.npz``           snpe/snle/snre: the state after every round (removed when
                                the last round ends); a rerun resumes at the next round
``{name}_validation/``          metrics.json, samples.npy, validation.nc, PNGs (per member in
                                ``member_<k>/`` when ``ensemble_mode`` is false)
``{name}_stages.json``          a hash of the config each finished stage ran with
==============================  ==============================================================

A stage whose outputs exist and were made with the same config (same hash) is reused, unless
``force``; a stage whose config changed is rerun, and the stages after it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ilijax._files import atomic_write
from ilijax.pipeline.config import Config, ConfigError, InferenceConfig, NetConfig, PriorConfig

__all__ = ["RunResult", "StageData", "build_nets", "build_prior", "run"]

STAGES = ("data", "inference", "validation")


class StageData(NamedTuple):
    """The data stage's output: training pairs, the held-out test set, and the observation."""

    theta: np.ndarray
    x: np.ndarray
    theta_test: np.ndarray
    x_test: np.ndarray
    x_obs: np.ndarray | None
    theta_fid: np.ndarray | None
    simulator: Callable | None
    prior: Any
    labels: tuple[str, ...] | None


@dataclass
class RunResult:
    """What :func:`run` did and wrote.

    Attributes:
        config: The resolved config.
        out_dir: The output folder.
        files: Output name -> path of everything written or reused.
        ran: Stages that ran; ``reused``: stages whose outputs were reused.
        posterior: The trained (or loaded) posterior, if the inference stage was part of the run.
        fit_info: The :class:`ilijax.FitInfo` (None when reused or for sequential methods).
        report: The :class:`ilijax.ValidationReport` (a list, one per member, when
            ``ensemble_mode`` is false), if validation ran.
        summary: The contents of ``summary.json``.
        resumed_from_epoch: Epoch of the checkpoint training resumed from (0: from scratch).
        resumed_from_round: Sequential methods: rounds done in the checkpoint the run resumed
            from (0: from scratch).
    """

    config: Config
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    posterior: Any = None
    fit_info: Any = None
    report: Any = None
    summary: dict = field(default_factory=dict)
    resumed_from_epoch: int = 0
    resumed_from_round: int = 0
    progress: bool = True


# ----------------------------------------------------------------------------------- builders


def build_prior(cfg: PriorConfig):
    """The numpyro prior described by ``cfg`` (see :mod:`ilijax.priors`)."""
    from ilijax import priors

    if cfg.name == "independent":
        return priors.independent([build_prior(p) for p in cfg.parts])
    fn = getattr(priors, cfg.name)
    try:
        return fn(**cfg.args)
    except TypeError as e:
        import inspect

        expected = list(inspect.signature(fn).parameters)
        raise ConfigError(f"inference.prior.args: {cfg.name} expects {expected}, got "
                          f"{sorted(cfg.args)} ({e})") from None
    except ValueError as e:
        raise ConfigError(f"inference.prior: {e}") from None


def _net_bundle(net: NetConfig, method: str):
    from ilijax import estimators

    act = {"activation": net.activation} if net.activation else {}
    m = net.model
    if m == "maf":
        return estimators.maf(hidden=net.hidden_features, transforms=net.num_transforms, **act)
    if m == "nsf":
        return estimators.nsf(hidden=net.hidden_features, transforms=net.num_transforms,
                              bins=net.num_bins, **act)
    if m == "nsf_autoregressive":
        return estimators.nsf(hidden=net.hidden_features, transforms=net.num_transforms,
                              bins=net.num_bins, variant="autoregressive", **act)
    if m == "mdn":
        return estimators.mdn(hidden=net.hidden_features, components=net.num_components, **act)
    if m == "made":
        return estimators.made(hidden=net.hidden_features, components=net.num_components, **act)
    if m == "realnvp":
        return estimators.realnvp(hidden=net.hidden_features, transforms=net.num_transforms,
                                  **act)
    return estimators.classifier(kind=m, hidden=net.hidden_features, blocks=net.num_blocks,
                                 **act)


def default_nets(method: str) -> list[NetConfig]:
    """sbi's defaults: NSF for NPE, MAF for NLE, a ResNet classifier for NRE."""
    if method in ("nre", "snre"):
        return [NetConfig(model="resnet")]
    return [NetConfig(model="nsf" if method in ("npe", "snpe") else "maf")]


def build_nets(inf: InferenceConfig) -> tuple[list, list[int], list[str]]:
    """``(bundles, members per bundle, one signature per member)`` from ``inference.nets``."""
    nets = inf.nets or default_nets(inf.method)
    bundles, counts, signatures = [], [], []
    for i, net in enumerate(nets):
        bundles.append(_net_bundle(net, inf.method))
        counts.append(net.repeats)
        base = net.signature or f"{net.model}{i}"
        signatures += [base] if net.repeats == 1 else [f"{base}_{r}" for r in range(net.repeats)]
    return bundles, counts, signatures


def build_optimizer(inf: InferenceConfig):
    """The configured optimizer as a function of the learning rate (a float or an optax
    schedule), which ``ilijax.fit`` calls with its schedule's rate."""
    import optax

    t = inf.train
    wd = t.weight_decay

    def make(lr):
        if t.optimizer == "adamw":
            return optax.adamw(lr, weight_decay=wd)
        if t.optimizer == "lion":
            return optax.lion(lr, weight_decay=wd)
        base = {"adam": optax.adam, "sgd": optax.sgd, "rmsprop": optax.rmsprop,
                "lamb": optax.lamb}[t.optimizer](lr)
        # Decoupled weight decay (Loshchilov and Hutter 2019) before optimizers without it.
        return optax.chain(optax.add_decayed_weights(wd), base) if wd > 0 else base

    return make


def _import(path: str):
    mod, _, attr = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not mod or not attr:
        raise ConfigError(f"data.simulator.function: expected 'package.module:function', got "
                          f"{path!r}")
    if mod.endswith(".py"):
        if not Path(mod).is_file():
            raise ConfigError(f"data.simulator.function: file {mod!r} does not exist")
        spec = importlib.util.spec_from_file_location(Path(mod).stem, mod)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not hasattr(module, attr):
            raise ConfigError(f"data.simulator.function: {mod!r} has no {attr!r}")
        return getattr(module, attr)
    try:
        module = importlib.import_module(mod)
    except ImportError as e:
        raise ConfigError(f"data.simulator.function: cannot import module {mod!r} ({e})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"data.simulator.function: module {mod!r} has no {attr!r}") from None


# -------------------------------------------------------------------------------------- hashing


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_hashes(cfg: Config) -> dict[str, str]:
    """A hash per stage over the settings that change its outputs (and the stages before)."""
    d = cfg.to_dict()
    inf = dict(d["inference"])
    for k in ("out_dir", "name"):
        inf.pop(k, None)
    inf["train"] = {k: v for k, v in inf.get("train", {}).items() if k != "checkpoint_every"}
    h_data = _hash({"data": d["data"], "prior": inf.get("prior"), "seed": inf["seed"]})
    h_inf = _hash({"data": h_data, "inference": inf})
    h_val = _hash({"inference": h_inf, "validation": d["validation"]})
    return {"data": h_data, "inference": h_inf, "validation": h_val}


# -------------------------------------------------------------------------------------- stages


def _write_json(path: Path, obj: Any) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1)))


def _savez(path: Path, **arrays) -> Path:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **{k: v for k, v in arrays.items() if v is not None})

    return atomic_write(path, write)


def _save_npy(path, a) -> None:
    with open(path, "wb") as f:
        np.save(f, a)


def _json_float(v):
    v = float(v)
    return v if np.isfinite(v) else None


def _read_files(d, src, simulator):
    from ilijax import loaders

    if src == "numpy":
        s = d.numpy
        out = loaders.load_numpy(s.in_dir, s.x_file, s.theta_file, s.xobs_file, s.thetafid_file)
    elif src == "npz":
        s = d.npz
        out = loaders.load_npz(s.path, s.theta_key, s.x_key, s.xobs_key, s.thetafid_key)
    elif src == "hdf5":
        s = d.hdf5
        out = loaders.load_hdf5(s.path, s.theta_dataset, s.x_dataset, s.xobs_dataset,
                                s.thetafid_dataset)
    elif src == "netcdf":
        s = d.netcdf
        out = loaders.load_netcdf(
            s.path, x_variable=s.x_variable,
            theta_variable=None if s.theta_variables else s.theta_variable,
            theta_variables=s.theta_variables, xobs_variable=s.xobs_variable, flatten=s.flatten)
    return out.theta, out.x, out.x_obs, out.theta_fid, simulator


def _load_source(cfg: Config, prior, key, data, simulator, log, progress=True) -> tuple:
    """``(theta, x, x_obs, theta_fid, simulator)`` from the configured source."""
    import jax

    from ilijax import simulate, tasks

    d = cfg.data
    src = d.source
    if data is not None:
        if src is not None:
            raise ConfigError(f"data: arrays were passed to run() and data.{src} is set; give "
                              f"one of them")
        if isinstance(data, dict):
            theta, x = data.get("theta"), data.get("x")
            x_obs, theta_fid = data.get("x_obs"), data.get("theta_fid")
        else:
            theta, x = data[0], data[1]
            x_obs = data[2] if len(data) > 2 else None
            theta_fid = data[3] if len(data) > 3 else None
        if theta is None or x is None:
            raise ConfigError("data: expected arrays 'theta' and 'x'")
        return np.asarray(theta, np.float32), np.asarray(x, np.float32), x_obs, theta_fid, \
            simulator
    if src is None:
        raise ConfigError(
            "data: expected one source among numpy, npz, hdf5, netcdf, simulator, task (or "
            "arrays passed to ilijax.pipeline.run); got none")
    if src in ("numpy", "npz", "hdf5", "netcdf"):
        try:
            return _read_files(d, src, simulator)
        except ConfigError:
            raise
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"data.{src}: {e}") from None
    if src == "task":
        task = tasks.TASKS[d.task.name](**d.task.args)
        sim, n, kind, bs, x_obs_cfg = task.simulator, d.task.num_simulations, "jax", 1000, None
    else:
        s = d.simulator
        sim = simulator if simulator is not None else _import(s.function)
        if s.factory:
            sim = sim(**s.args)
        elif s.args:
            raise ConfigError("data.simulator.args: only used with factory: true")
        n, kind, bs, x_obs_cfg = s.num_simulations, s.kind, s.batch_size, s.x_obs
    log(f"simulating {n} pairs ({src})")
    t0 = time.perf_counter()
    ds = simulate(jax.random.fold_in(key, 1), prior, sim, n, batch_size=bs, kind=kind,
                  nan_policy=cfg.data.nan_policy, progress=progress)
    log(f"  {ds.theta.shape[0]} pairs in {time.perf_counter() - t0:.1f} s")
    x_obs = None if x_obs_cfg is None else np.asarray(x_obs_cfg, np.float32)
    theta_fid = None
    if src == "task" and d.task.observation:
        theta_fid = np.asarray(prior.sample(jax.random.fold_in(key, 5)), np.float32)
        x_obs = np.asarray(sim(jax.random.fold_in(key, 6), theta_fid), np.float32)
    return np.asarray(ds.theta), np.asarray(ds.x), x_obs, theta_fid, sim




def _prior_for(cfg: Config):
    if cfg.inference.prior is not None:
        return build_prior(cfg.inference.prior)
    if cfg.data.task is not None:
        from ilijax import tasks

        return tasks.TASKS[cfg.data.task.name](**cfg.data.task.args).prior
    raise ConfigError("inference.prior: required field is missing (only a data.task brings its "
                      "own prior)")


def _data_stage(cfg: Config, out: Path, prefix: str, hashes, done, force, data, simulator, log,
                files, progress=True) -> StageData:
    import jax

    prior = _prior_for(cfg)
    labels = None
    if cfg.data.task is not None:
        from ilijax import tasks

        labels = tasks.TASKS[cfg.data.task.name](**cfg.data.task.args).labels
    key = jax.random.key(cfg.inference.seed)
    cache = out / f"{prefix}simulations.npz"
    simulated = cfg.data.source in ("simulator", "task")
    sim = simulator
    if simulated and cache.exists() and not force and done.get("data") == hashes["data"]:
        with np.load(cache) as z:
            theta, x = z["theta"], z["x"]
            x_obs = z["x_obs"] if "x_obs" in z else None
            theta_fid = z["theta_fid"] if "theta_fid" in z else None
        log(f"data: reusing {cache.name} ({theta.shape[0]} pairs)")
        if cfg.data.task is not None:
            from ilijax import tasks

            sim = tasks.TASKS[cfg.data.task.name](**cfg.data.task.args).simulator
        elif simulator is None:
            s = cfg.data.simulator
            sim = _import(s.function)
            sim = sim(**s.args) if s.factory else sim
        files["simulations"] = cache
    else:
        theta, x, x_obs, theta_fid, sim = _load_source(cfg, prior, key, data, simulator, log,
                                                       progress)
        if simulated:
            files["simulations"] = _savez(cache, theta=theta, x=x, x_obs=x_obs,
                                          theta_fid=theta_fid)
    theta = np.asarray(theta, np.float32)
    x = np.asarray(x, np.float32)
    if theta.ndim == 1:
        theta = theta[:, None]
    if theta.shape[0] != x.shape[0]:
        raise ConfigError(f"data: expected theta and x with the same number of rows, got "
                          f"{theta.shape[0]} and {x.shape[0]}")
    dim = int(prior.event_shape[0]) if prior.event_shape else 1
    if theta.shape[1] != dim:
        raise ConfigError(f"inference.prior: has dimension {dim} but theta has {theta.shape[1]} "
                          f"columns (data shape {theta.shape})")
    n = theta.shape[0]
    n_test = int(round(cfg.data.test_fraction * n))
    if cfg.data.test_fraction > 0:
        n_test = max(n_test, 2)
    if n - n_test < 2:
        raise ConfigError(f"data: {n} pairs leave {n - n_test} for training after "
                          f"test_fraction={cfg.data.test_fraction}")
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, 2), n))
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    files["test"] = _savez(out / f"{prefix}test.npz", theta=theta[test_idx], x=x[test_idx])
    if x_obs is not None:
        x_obs = np.asarray(x_obs, np.float32)
    return StageData(theta[train_idx], x[train_idx], theta[test_idx], x[test_idx], x_obs,
                     None if theta_fid is None else np.asarray(theta_fid, np.float32), sim,
                     prior, labels)


def _fit_options(cfg: Config) -> dict:
    t = cfg.inference.train
    # schedule, learning_rate and stop_after_epochs were resolved when the config was read.
    return dict(optimizer=build_optimizer(cfg.inference), schedule=t.schedule,
                batch_size=t.training_batch_size, max_epochs=t.max_epochs,
                learning_rate=t.learning_rate, patience=t.stop_after_epochs,
                clip_norm=t.clip_max_norm)


def with_embedding(cfg: Config, bundles: list) -> list:
    """``bundles`` behind the configured embedding network (each member gets its own, or one
    shared with ``embedding.share``)."""
    e = cfg.inference.embedding
    if e is None:
        return bundles
    from ilijax.estimators import embedded

    if cfg.inference.method in ("nle", "snle"):
        raise ConfigError(f"inference.embedding: {cfg.inference.method} models x itself, so an "
                          f"embedding of x has no place in it; use npe or nre, or remove it")
    try:
        return [embedded(b, {"name": e.name, "config": dict(e.args)}, share_embedding=e.share)
                for b in bundles]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"inference.embedding: {err}") from None


def _inference_stage(cfg: Config, out: Path, prefix: str, sd: StageData, log, files,
                     result: RunResult):
    import jax

    import ilijax
    from ilijax.pipeline import _checkpoint

    inf = cfg.inference
    labels = tuple(cfg.validation.labels) if cfg.validation.labels else sd.labels
    if labels is not None and len(labels) != sd.theta.shape[1]:
        raise ConfigError(f"validation.labels: expected {sd.theta.shape[1]} labels (one per "
                          f"parameter), got {len(labels)}")
    bundles, counts, signatures = build_nets(inf)
    key = jax.random.fold_in(jax.random.key(inf.seed), 3)
    t0 = time.perf_counter()
    info = None
    rounds = None
    bundles = with_embedding(cfg, bundles)
    if inf.method in ("npe", "nle", "nre"):
        ckpt = out / f"{prefix}checkpoint.npz"
        resume, resumed_epoch = _checkpoint.load(ckpt, stage_hashes(cfg)["inference"], log)
        opts = _fit_options(cfg)
        opts.update(progress=result.progress, checkpoint_every=inf.train.checkpoint_every,
                    on_checkpoint=_checkpoint.writer(ckpt, stage_hashes(cfg)["inference"]),
                    resume=resume)
        common = dict(prior=sd.prior, ensemble=counts, weighting=inf.weighting,
                      nan_policy=cfg.data.nan_policy, labels=labels,
                      validation_fraction=inf.train.validation_fraction, **opts)
        log(f"inference: {inf.method.upper()} with {sum(counts)} member(s) "
            f"({', '.join(signatures)}) on {sd.theta.shape[0]} pairs"
            + (f", resuming from epoch {resumed_epoch}" if resumed_epoch else ""))
        if inf.method == "npe":
            posterior, info = ilijax.npe(key, sd.theta, sd.x, estimator=bundles,
                                         space=inf.space, **common)
        elif inf.method == "nle":
            posterior, info = ilijax.nle(key, sd.theta, sd.x, estimator=bundles, **common)
        else:
            posterior, info = ilijax.nre(key, sd.theta, sd.x, classifier=bundles,
                                         variant=inf.nre_variant, num_atoms=inf.num_atoms,
                                         **common)
        ckpt.unlink(missing_ok=True)
        result.resumed_from_epoch = resumed_epoch
    else:
        if sd.simulator is None:
            raise ConfigError(f"inference.method: {inf.method} simulates in every round; "
                              f"expected data.simulator or data.task, got data.{cfg.data.source}")
        if sd.x_obs is None:
            raise ConfigError(f"inference.method: {inf.method} needs the observation x_obs "
                              f"(data xobs_file / xobs_key / simulator.x_obs); got none")
        from ilijax.inference.sequential import state_to_arrays

        per_round = inf.train.simulations_per_round or max(sd.theta.shape[0], 2)
        ckpt = out / f"{prefix}rounds.npz"
        config_hash = stage_hashes(cfg)["inference"]
        resume, rounds_done = _checkpoint.load(ckpt, config_hash, log, count="rounds")
        log(f"inference: {inf.method.upper()}, {inf.train.num_round} rounds x {per_round} "
            f"simulations" + (f", resuming after round {rounds_done}" if rounds_done else ""))
        bundle_key = "classifier" if inf.method == "snre" else "estimator"
        posterior, rounds = ilijax.sequential(
            key, sd.simulator, sd.prior, sd.x_obs, method=inf.method[1:],
            rounds=inf.train.num_round, simulations_per_round=per_round,
            ensemble=counts, labels=labels, nan_policy=cfg.data.nan_policy,
            progress=result.progress, **{bundle_key: bundles},
            **({"space": inf.space} if inf.method == "snpe" else {}),
            on_round=_checkpoint.writer(ckpt, config_hash, state_to_arrays),
            resume=resume, **_fit_options(cfg))
        ckpt.unlink(missing_ok=True)
        result.resumed_from_round = rounds_done
    seconds = time.perf_counter() - t0
    files["posterior"] = ilijax.save(posterior, out / f"{prefix}posterior.npz")
    summary: dict[str, Any] = {
        "ilijax_version": ilijax.__version__,
        "method": inf.method,
        "name": inf.name,
        "signatures": signatures,
        "weights": np.asarray(posterior.weights).tolist(),
        "num_train": int(sd.theta.shape[0]),
        "num_test": int(sd.theta_test.shape[0]),
        "seconds": round(seconds, 3),
        "resumed_from_epoch": result.resumed_from_epoch,
        "resumed_from_round": result.resumed_from_round,
    }
    if info is not None:
        summary.update({
            "epochs": np.asarray(info.epochs).tolist(),
            "best_epoch": np.asarray(info.best_epoch).tolist(),
            "best_validation_loss": [_json_float(v) for v in info.best_validation_loss],
            "diverged": np.asarray(info.diverged).tolist(),
            "train_loss": [[_json_float(v) for v in row] for row in np.asarray(info.train_loss)],
            "validation_loss": [[_json_float(v) for v in row]
                                for row in np.asarray(info.validation_loss)],
            "compile_time": round(float(info.compile_time), 3),
            "train_time": round(float(info.train_time), 3),
        })
    if rounds is not None:
        summary["rounds"] = [
            {k: (v if isinstance(v, int | float | str) else None) for k, v in r._asdict().items()}
            for r in rounds]
    files["summary"] = _write_json(out / f"{prefix}summary.json", summary)
    result.posterior, result.fit_info, result.summary = posterior, info, summary
    log(f"  trained in {seconds:.1f} s; weights {np.round(posterior.weights, 3).tolist()}")
    return posterior


def _validation_stage(cfg: Config, out: Path, prefix: str, posterior, sd: StageData | None,
                      log, files, result: RunResult):
    import jax

    import ilijax
    from ilijax.plots import plot_corner

    v = cfg.validation
    test_path = out / f"{prefix}test.npz"
    if sd is not None:
        theta_test, x_test = sd.theta_test, sd.x_test
    elif test_path.exists():
        with np.load(test_path) as z:
            theta_test, x_test = z["theta"], z["x"]
    else:
        raise ConfigError(f"validation: the test set {test_path} does not exist; run the data "
                          f"stage first (ilijax run)")
    if theta_test.shape[0] < 2:
        raise ConfigError(f"validation: expected at least 2 held-out test pairs, got "
                          f"{theta_test.shape[0]}; set data.test_fraction > 0")
    if v.max_test is not None:
        theta_test, x_test = theta_test[: v.max_test], x_test[: v.max_test]
    sampler = dict(v.sampler.options)
    if v.sampler.method is not None:
        sampler["method"] = v.sampler.method
    if "predictive" in v.metrics and (sd is None or sd.simulator is None):
        raise ConfigError("validation.metrics: 'predictive' needs a simulator (data.simulator "
                          "or data.task)")
    key = jax.random.fold_in(jax.random.key(cfg.inference.seed), 4)
    val_dir = out / f"{prefix}validation"
    targets = [(None, posterior)]
    if not v.ensemble_mode:
        sigs = result.summary.get("signatures") or [str(k) for k in range(posterior.num_members)]
        targets = [(f"member_{sigs[k]}", posterior.member(k))
                   for k in range(posterior.num_members)]
    reports = []
    style = None
    if v.style_path:
        if not Path(v.style_path).exists():
            raise ConfigError(f"validation.style_path: {v.style_path} does not exist")
        style = v.style_path
    import matplotlib.pyplot as plt

    with plt.style.context(style) if style else contextlib.nullcontext():
        for sub, post in targets:
            where = val_dir if sub is None else val_dir / sub
            log(f"validation{'' if sub is None else ' (' + sub + ')'}: {', '.join(v.metrics)} "
                f"on {theta_test.shape[0]} test pairs x {v.num_samples} draws")
            report = ilijax.validate(
                key, post, theta_test, x_test, metrics=tuple(v.metrics),
                num_samples=v.num_samples, simulator=sd.simulator if sd is not None else None,
                labels=v.labels, out_dir=where, plots=v.plots, corner_index=v.corner_index,
                sampler_options=sampler or None, progress=result.progress)
            for name, path in report.files.items():
                files[f"validation/{'' if sub is None else sub + '/'}{name}"] = Path(path)
            reports.append(report)
            log(report.summary())
        if sd is not None and sd.x_obs is not None and v.xobs_samples > 0:
            x_obs = sd.x_obs
            draws = np.asarray(posterior.sample(jax.random.fold_in(key, 9), x_obs,
                                                v.xobs_samples, **sampler))
            if draws.ndim == 3:  # several observations: keep the first for the plot
                shown = draws[0]
            else:
                shown = draws
            files["xobs_samples"] = atomic_write(val_dir / "xobs_samples.npy",
                                                 lambda tmp: _save_npy(tmp, draws))
            if v.plots:
                fig = plot_corner(shown, labels=v.labels or posterior.labels,
                                  truth=sd.theta_fid if sd.theta_fid is not None
                                  and sd.theta_fid.ndim == 1 else None,
                                  title="posterior at x_obs")
                path = val_dir / "xobs_corner.png"
                atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
                plt.close(fig)
                files["xobs_corner"] = path
    result.report = reports[0] if v.ensemble_mode else reports


# ----------------------------------------------------------------------------------------- run


def run(
    config: Config,
    *,
    stages: Sequence[str] = STAGES,
    force: bool = False,
    data: Any = None,
    simulator: Callable | None = None,
    log: Callable[[str], None] | None = print,
    progress: bool = True,
) -> RunResult:
    """Runs the chosen stages of ``config`` and writes their outputs (see the module docstring).

    Args:
        config: A :class:`~ilijax.pipeline.Config` (from :func:`~ilijax.pipeline.load_config`).
        stages: Any of ``"data"``, ``"inference"``, ``"validation"``. The data stage always
            runs when a later stage needs its arrays (it is cheap unless it simulates, and
            simulations are cached).
        force: Rerun stages even when their outputs exist with the same config.
        data: In-memory arrays instead of a configured source: ``{"theta", "x", "x_obs",
            "theta_fid"}`` or a tuple ``(theta, x[, x_obs[, theta_fid]])``.
        simulator: A Python simulator instead of ``data.simulator.function``.
        log: Where progress lines go (``None``: silent).
        progress: Show progress bars (simulation, training, validation).

    Returns:
        A :class:`RunResult`.
    """
    import ilijax

    log = log or (lambda s: None)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"stages: expected a subset of {STAGES}, got unknown {unknown}")
    cfg = config
    out = Path(cfg.inference.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = cfg.inference.prefix
    result = RunResult(config=cfg, out_dir=out, progress=progress)
    files = result.files
    hashes = stage_hashes(cfg)
    stages_file = out / f"{prefix}stages.json"
    done: dict[str, str] = {}
    if stages_file.exists() and not force:
        try:
            done = json.loads(stages_file.read_text())
        except json.JSONDecodeError:
            done = {}
    import yaml

    files["config"] = atomic_write(out / f"{prefix}config.yaml", lambda tmp: Path(tmp).write_text(
        yaml.safe_dump(cfg.to_dict(), sort_keys=False)))

    def finish(stage):
        done[stage] = hashes[stage]
        _write_json(stages_file, done)
        files["stages"] = stages_file

    posterior_path = out / f"{prefix}posterior.npz"
    summary_path = out / f"{prefix}summary.json"
    want_inf = "inference" in stages
    want_val = "validation" in stages
    inf_current = (not force and posterior_path.exists() and summary_path.exists()
                   and done.get("inference") == hashes["inference"])
    val_current = (not force and inf_current and (out / f"{prefix}validation" /
                                                  "metrics.json").exists()
                   and done.get("validation") == hashes["validation"])
    # The data stage runs when a later stage needs its arrays, or when it is asked for alone.
    need_arrays = ((want_inf and not inf_current) or (want_val and not val_current)
                   or not (want_inf or want_val))
    sd = None
    if need_arrays:
        sd = _data_stage(cfg, out, prefix, hashes, done, force, data, simulator, log, files,
                         progress)
        finish("data")
        result.ran.append("data")
    posterior = None
    if want_inf or want_val:
        if inf_current or (not want_inf):
            if not posterior_path.exists():
                raise ConfigError(f"validation: no trained posterior at {posterior_path}; run "
                                  f"the inference stage first (ilijax train or ilijax run)")
            posterior = ilijax.load(posterior_path)
            result.posterior = posterior
            if summary_path.exists():
                result.summary = json.loads(summary_path.read_text())
            files["posterior"], files["summary"] = posterior_path, summary_path
            if want_inf:
                log(f"inference: reusing {posterior_path.name} (same config; --force retrains)")
                result.reused.append("inference")
        else:
            posterior = _inference_stage(cfg, out, prefix, sd, log, files, result)
            finish("inference")
            result.ran.append("inference")
    if want_val:
        if val_current:
            log(f"validation: reusing {prefix}validation/ (same config; --force reruns)")
            for p in sorted((out / f"{prefix}validation").rglob("*")):
                if p.is_file():
                    files[f"validation/{p.relative_to(out / f'{prefix}validation')}"] = p
            result.reused.append("validation")
        else:
            _validation_stage(cfg, out, prefix, posterior, sd, log, files, result)
            finish("validation")
            result.ran.append("validation")
    return result
