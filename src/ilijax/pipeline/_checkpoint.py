"""Training checkpoints of the pipeline: ``fit``'s state written to ``{name}_checkpoint.npz``,
and the sequential methods' state after every round to ``{name}_rounds.npz``.

``ilijax.fit`` hands over its complete state every ``train.checkpoint_every`` epochs and
``ilijax.sequential`` after every round (neither writes files itself); this module writes it
atomically, without pickle, together with the hash of the inference config, and reads it back
for a rerun. A checkpoint made with another config is not resumed from (the run starts from
scratch and says so).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ilijax._files import atomic_write

_HASH_KEY = "__pipeline_config_hash__"


def writer(path: Path, config_hash: str, to_arrays: Callable | None = None) -> Callable:
    """An ``on_checkpoint`` callback for :func:`ilijax.fit` (or, with ``to_arrays`` from
    :mod:`ilijax.inference.sequential`, an ``on_round`` one) that writes ``path``."""
    if to_arrays is None:
        from ilijax.train import state_to_arrays as to_arrays

    def save(state) -> None:
        arrays = to_arrays(state)
        arrays[_HASH_KEY] = np.asarray(config_hash)

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        atomic_write(path, write)

    return save


def load(path: Path, config_hash: str, log: Callable[[str], None],
         count: str = "epoch") -> tuple[dict | None, int]:
    """``(state arrays for resume=..., progress)`` from ``path``, or ``(None, 0)``; the progress
    is the epoch of a ``fit`` state, or the rounds done of a sequential one
    (``count="rounds"``)."""
    if not path.exists():
        return None, 0
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        log(f"  ignoring unreadable checkpoint {path.name} ({e})")
        return None, 0
    saved = str(arrays.pop(_HASH_KEY, ""))
    if saved != config_hash:
        log(f"  ignoring checkpoint {path.name}: it was made with another config")
        return None, 0
    if count == "rounds":
        import json

        mark = "__ilijax_sequential_state__"
        try:
            meta = json.loads(np.asarray(arrays[mark]).tobytes().decode("utf-8"))
            return arrays, int(meta["rounds_done"])
        except (KeyError, ValueError, TypeError) as e:
            log(f"  ignoring checkpoint {path.name}: not a sequential state ({e})")
            return None, 0
    return arrays, int(arrays.get("epoch", 0))
