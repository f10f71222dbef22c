"""Save and load trained posteriors: one ``.npz`` of arrays plus a versioned JSON spec, no pickle.

The arrays and the spec are described in :mod:`ilijax._format`; this module reads and writes
the files (atomically) and names the file in every error.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ilijax._files import atomic_write
from ilijax._format import (
    FORMAT,
    FORMAT_VERSION,
    NotAPosteriorError,
    _not_ours,
    posterior_from_arrays,
    posterior_to_arrays,
)
from ilijax.posterior import Posterior

__all__ = ["FORMAT", "FORMAT_VERSION", "NotAPosteriorError", "load", "posterior_from_arrays",
           "posterior_to_arrays", "save"]


def save(posterior: Posterior, path: str | os.PathLike) -> Path:
    """Writes ``posterior`` to ``path`` (an ``.npz`` file), atomically.

    Args:
        posterior: A :class:`~ilijax.posterior.Posterior` whose groups have estimator specs
            (every factory in ``ilijax.estimators`` sets one).
        path: Target file; ``.npz`` is appended if missing (``load`` takes the same path,
            with or without it). Parent folders are created.

    Returns:
        The path written.
    """
    if not isinstance(posterior, Posterior):
        raise TypeError(f"Expected posterior to be an ilijax Posterior; got "
                        f"{type(posterior).__name__}")
    path = _npz_path(path)
    arrays = posterior_to_arrays(posterior)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)

    return atomic_write(path, write)


def _npz_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _resolve(path: str | os.PathLike) -> Path:
    """The file ``save(posterior, path)`` wrote: ``path`` itself if it exists, else with
    ``.npz`` appended (as ``save`` does)."""
    given = Path(path)
    if given.is_file():
        return given
    with_suffix = _npz_path(given)
    if with_suffix.is_file():
        return with_suffix
    tried = f"{given}" + (f" or {with_suffix}" if with_suffix != given else "")
    raise FileNotFoundError(f"Expected a posterior file written by ilijax.save; found no file "
                            f"{tried}")


def load(path: str | os.PathLike, *, prior=None) -> Posterior:
    """Reads a posterior written by :func:`save`.

    Args:
        path: The path given to :func:`save`, with or without its ``.npz``.
        prior: Use this prior instead of the stored one (needed only for priors that
            ``prior_to_spec`` cannot describe; it must have the same support).

    Returns:
        A :class:`~ilijax.posterior.Posterior` giving identical ``log_prob`` and, for the same
        key, identical samples. Files of every earlier format version load (e.g. those written
        before standardisation statistics were frozen: their statistics load as stored).

    Raises:
        FileNotFoundError: Neither ``path`` nor ``path + ".npz"`` exists.
        ValueError: The file is not an ilijax posterior (another ``.npz``, a pickle, text),
            is damaged, or comes from a newer format version; the message names the file.
    """
    path = _resolve(path)
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head.startswith(b"\x80"):
        raise _not_ours(path, "it is a pickle (ilijax files never are; ltu-ili's .pkl "
                              "posteriors cannot be read without torch)")
    if not head.startswith(b"PK") and not head.startswith(b"\x93NUMPY"):
        raise _not_ours(path, f"it is not an .npz archive (it starts with {head!r})")
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise _not_ours(path, "it holds a single array (.npy), not an archive")
        with f:
            files = {k: f[k] for k in f.files}
    except NotAPosteriorError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        kind = ("it holds pickled objects (ilijax files never do)"
                if "pickle" in str(e) else f"numpy cannot read it ({type(e).__name__}: {e})")
        raise _not_ours(path, kind) from None
    return posterior_from_arrays(files, prior=prior, source=path)
