"""Hyperparameter sweeps: every combination of a grid of config values, one run per trial.

``ilijax sweep CONFIG --grid inference.train.learning_rate=1e-3,5e-4 --grid
inference.nets.0.hidden_features=32,64`` runs the 4 trials one after another into
``{out_dir}/sweep/trial_000`` ... and writes ``{out_dir}/sweep/sweep.csv``, one row per trial
with the grid values, the best validation loss (over members), the coverage error, the TARP
area-to-curve distance and the wall time. Each trial also writes its own ``row.json``, and the
CSV is rebuilt from all of them, so the trials can run as a cluster job array instead: task
``i`` runs ``ilijax sweep CONFIG --grid ... --trial i`` (the same command for every task), and
whichever task finishes last (or a final ``ilijax sweep ... --collect``) leaves the full table.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ilijax._files import atomic_write
from ilijax.pipeline.config import (
    ConfigError,
    apply_overrides,
    load_raw,
    parse_override,
    validate_config,
)

__all__ = ["collect", "parse_grid", "sweep", "trials"]

COLUMNS = ("best_validation_loss", "coverage_error", "tarp_atc", "seconds")


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """``["a.b=1,2", "c=[x, y]"]`` -> ``{"a.b": [1, 2], "c": ["x", "y"]}``."""
    grid: dict[str, list] = {}
    for text in items:
        if "=" not in text:
            raise ConfigError(f"--grid {text!r}: expected key.sub=v1,v2,...")
        key, value = text.split("=", 1)
        value = value.strip()
        if value.startswith("["):
            values = yaml.safe_load(value)
        else:
            values = [parse_override(f"{key}={v}")[1] for v in value.split(",")]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"--grid {text!r}: expected at least one value")
        if key in grid:
            raise ConfigError(f"--grid: {key!r} is given twice")
        grid[key.strip()] = values
    return grid


def trials(grid: Mapping[str, Sequence]) -> list[dict[str, Any]]:
    """Every combination of the grid, the last key varying fastest."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(
        *(grid[k] for k in keys))]


def _set(raw: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = raw
    for i, p in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[int(p)]
            continue
        if node.get(p) is None:
            # a list index next means a list (e.g. inference.nets.0.x): create it from defaults
            node[p] = [] if parts[i + 1].isdigit() else {}
        node = node[p]
    last = parts[-1]
    if isinstance(node, list):
        idx = int(last)
        if idx >= len(node):
            raise ConfigError(f"--grid {dotted}: index {idx} out of range ({len(node)} items)")
        node[idx] = value
    else:
        node[last] = value


def _row_of(result, combo: dict, index: int, seconds: float) -> dict:
    summary = result.summary or {}
    best = [v for v in summary.get("best_validation_loss", []) if v is not None]
    metrics = {}
    mpath = result.out_dir / f"{result.config.inference.prefix}validation" / "metrics.json"
    if mpath.exists():
        metrics = json.loads(mpath.read_text())
    return {
        "trial": index,
        **{k: json.dumps(v) if not isinstance(v, str) else v for k, v in combo.items()},
        "best_validation_loss": min(best) if best else None,
        "coverage_error": (metrics.get("coverage") or {}).get("error"),
        "tarp_atc": (metrics.get("tarp") or {}).get("atc"),
        "seconds": round(seconds, 2),
        "out_dir": str(result.out_dir),
    }


def collect(sweep_dir: str | Path) -> Path:
    """Rebuilds ``sweep.csv`` from every ``trial_*/row.json`` in ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    rows = []
    for p in sorted(sweep_dir.glob("trial_*/row.json")):
        rows.append(json.loads(p.read_text()))
    if not rows:
        raise ConfigError(f"sweep: no finished trials (trial_*/row.json) in {sweep_dir}")
    rows.sort(key=lambda r: r["trial"])
    fields: list[str] = []
    for r in rows:
        for k in r:
            if k not in fields:
                fields.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in fields})
    return atomic_write(sweep_dir / "sweep.csv", lambda tmp: Path(tmp).write_text(buf.getvalue()))


def sweep(
    paths: Sequence[str | Path],
    grid: Mapping[str, Sequence] | Sequence[str],
    *,
    overrides: Sequence[str] = (),
    trial: int | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Runs every trial of ``grid`` over the config ``paths`` (see the module docstring).

    Args:
        paths: Config files (native or ltu-ili), merged in order.
        grid: ``{dotted key: values}`` or ``["key=v1,v2", ...]``.
        overrides: ``key.sub=value`` applied to every trial before the grid values.
        trial: Run only this trial (0-based), e.g. the task id of a job array.
        force: Rerun trials whose outputs exist.
        log: Where progress lines go.

    Returns:
        The path of ``sweep.csv``.
    """
    from ilijax.pipeline.runner import run

    progress = log is not None
    log = log or (lambda s: None)
    if not isinstance(grid, Mapping):
        grid = parse_grid(grid)
    combos = trials(grid)
    raw, _ = load_raw(list(paths))
    raw = apply_overrides(raw, overrides, Path.cwd())
    base = validate_config(raw)
    sweep_dir = Path(base.inference.out_dir) / "sweep"
    if trial is not None and not 0 <= trial < len(combos):
        raise ConfigError(f"--trial: expected 0 <= trial < {len(combos)}, got {trial}")
    todo = range(len(combos)) if trial is None else [trial]
    for i in todo:
        combo = combos[i]
        raw_i = copy.deepcopy(raw)
        if any(k.startswith("inference.nets.") for k in combo) and not raw_i.get(
                "inference", {}).get("nets"):
            from ilijax.pipeline.runner import default_nets

            method = base.inference.method
            raw_i.setdefault("inference", {})["nets"] = [
                n.model_dump() for n in default_nets(method)]
        for k, v in combo.items():
            _set(raw_i, k, v)
        raw_i.setdefault("inference", {})["out_dir"] = str(sweep_dir / f"trial_{i:03d}")
        cfg = validate_config(raw_i)
        log(f"sweep trial {i + 1}/{len(combos)}: " + ", ".join(f"{k}={v}" for k, v in
                                                               combo.items()))
        t0 = time.perf_counter()
        result = run(cfg, force=force, log=log, progress=progress)
        row = _row_of(result, combo, i, time.perf_counter() - t0)
        atomic_write(sweep_dir / f"trial_{i:03d}" / "row.json",
                     lambda tmp, row=row: Path(tmp).write_text(json.dumps(row, indent=1)))
    return collect(sweep_dir)
