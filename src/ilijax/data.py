"""Datasets of (theta, x) pairs: validation, splitting and loading.

Every way into ilijax (arrays, ``.npy``/``.npz`` files, :func:`ilijax.simulate.simulate`) ends in
:func:`check_data`, which returns a :class:`Dataset` of float32 arrays with matching lengths and
only finite values. Bad input raises a ``ValueError`` that names the field, what was expected and
what was got (DESIGN.md, "Errors"). Rows with NaN/inf are dropped with a warning that counts
them, or rejected with ``nan_policy="raise"``.

Nothing here prints or writes files; the loaders only read.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ilijax.priors import validate_prior

__all__ = [
    "Dataset",
    "check_data",
    "check_theta_in_support",
    "load_arrays",
    "load_npz",
    "split",
]

_NAN_POLICIES = ("drop", "raise")


class Dataset(NamedTuple):
    """Simulated or observed pairs, one row per simulation.

    Attributes:
        theta: ``(n, theta_dim)`` float32 parameters.
        x: ``(n, *x_shape)`` float32 data; ``x_shape`` is ``(x_dim,)`` for vectors and may have
            more axes (e.g. images ``(h, w, c)``).
    """

    theta: jax.Array
    x: jax.Array


def _as_float32(name: str, value: Any) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"Expected {name} to be a numeric array; got {type(value).__name__} that cannot be "
            f"converted to float32 ({e})"
        ) from e
    return a


def check_data(
    theta: ArrayLike,
    x: ArrayLike,
    *,
    nan_policy: str = "drop",
    min_rows: int = 10,
    name_theta: str = "theta",
    name_x: str = "x",
) -> Dataset:
    """Validates (theta, x) pairs and returns them as a float32 :class:`Dataset`.

    Checks, in order: numeric and non-empty; ``theta`` of rank 2 ``(n, theta_dim)`` and ``x`` of
    rank >= 2 ``(n, ...)`` (a rank-1 array is rejected: whether it is ``n`` scalars or one
    vector is ambiguous, so reshape it with ``.reshape(-1, 1)`` or ``[None]``); equal numbers
    of rows; finite values; at least ``min_rows`` rows after dropping.

    Args:
        theta: Parameters, ``(n, theta_dim)``.
        x: Data, ``(n, x_dim)`` or ``(n, *x_shape)``.
        nan_policy: ``"drop"`` removes rows with a NaN/inf in ``theta`` or ``x`` and warns
            (``UserWarning``) with the counts; ``"raise"`` raises a ``ValueError`` instead.
        min_rows: Fewest rows accepted after dropping.
        name_theta: Name of ``theta`` in messages (e.g. ``"theta.npy"``).
        name_x: Name of ``x`` in messages.

    Returns:
        A :class:`Dataset` of float32 jax arrays.

    Raises:
        ValueError: On any failed check; the message names the field, the expected and the got.
    """
    if nan_policy not in _NAN_POLICIES:
        raise ValueError(f"Expected nan_policy in {_NAN_POLICIES}; got {nan_policy!r}")
    if int(min_rows) < 1:
        raise ValueError(f"Expected min_rows >= 1; got {min_rows}")
    t = _as_float32(name_theta, theta)
    d = _as_float32(name_x, x)
    for name, a, rank in ((name_theta, t, "2 (n, theta_dim)"), (name_x, d, ">= 2 (n, ...)")):
        if a.ndim < 2:
            hint = (
                f"; reshape it with {name}.reshape(-1, 1) if it holds one value per row, or "
                f"{name}[None] if it is a single row"
                if a.ndim == 1
                else ""
            )
            raise ValueError(f"Expected {name} of rank {rank}; got shape {a.shape}{hint}")
    if t.ndim != 2:
        raise ValueError(
            f"Expected {name_theta} of rank 2 (n, theta_dim); got shape {t.shape} (flatten "
            f"the parameters of each row into one vector)"
        )
    if t.shape[0] == 0 or d.shape[0] == 0:
        raise ValueError(
            f"Expected non-empty {name_theta} and {name_x}; got shapes {t.shape} and {d.shape}"
        )
    if t.shape[1] == 0 or d.size == 0:
        raise ValueError(
            f"Expected at least one column in {name_theta} and {name_x}; got shapes {t.shape} "
            f"and {d.shape}"
        )
    if t.shape[0] != d.shape[0]:
        raise ValueError(
            f"Expected {name_theta} and {name_x} to have the same number of rows; got "
            f"{t.shape[0]} rows in {name_theta} and {d.shape[0]} rows in {name_x}"
        )
    n = t.shape[0]
    bad_t = ~np.isfinite(t).all(axis=1)
    bad_x = ~np.isfinite(d.reshape(n, -1)).all(axis=1)
    bad = bad_t | bad_x
    num_bad = int(bad.sum())
    if num_bad:
        counts = (
            f"{int(bad_x.sum())} in {name_x}, {int(bad_t.sum())} in {name_theta}"
        )
        if nan_policy == "raise":
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"Expected finite values in {name_theta} and {name_x}; got {num_bad} of {n} rows "
                f"with NaN/inf ({counts}; first: row {first}). Pass nan_policy='drop' to drop them"
            )
        warnings.warn(
            f"dropped {num_bad} of {n} rows with non-finite values ({counts})",
            UserWarning,
            stacklevel=2,
        )
        t, d = t[~bad], d[~bad]
    if t.shape[0] < min_rows:
        after = " after dropping non-finite rows" if num_bad else ""
        raise ValueError(
            f"Expected at least {min_rows} rows in {name_theta} and {name_x}{after}; got "
            f"{t.shape[0]}"
        )
    return Dataset(jnp.asarray(t), jnp.asarray(d))


def split(key: jax.Array, dataset: Any, validation_fraction: float = 0.1) -> tuple[Any, Any]:
    """Splits a dataset into training and validation parts by a random permutation.

    The validation part has ``round(validation_fraction * n)`` rows, clipped so that both parts
    keep at least one row.

    Args:
        key: PRNG key for the permutation; the same key gives the same split.
        dataset: The :class:`Dataset` to split (at least 2 rows), or any pytree of arrays that
            share their leading (row) axis; :func:`ilijax.fit` uses it that way.
        validation_fraction: Fraction of rows held out, in the open interval (0, 1).

    Returns:
        ``(train, validation)`` of the same structure; their rows are disjoint and together are
        all rows.
    """
    f = float(validation_fraction)
    if not 0.0 < f < 1.0:
        raise ValueError(f"Expected validation_fraction in (0, 1); got {validation_fraction}")
    if isinstance(dataset, Dataset) and dataset.x.shape[0] != dataset.theta.shape[0]:
        raise ValueError(
            f"Expected theta and x to have the same number of rows; got "
            f"{dataset.theta.shape[0]} and {dataset.x.shape[0]}"
        )
    rows = {int(np.shape(leaf)[0]) for leaf in jax.tree.leaves(dataset)}
    if len(rows) != 1:
        raise ValueError(f"Expected all arrays to have the same number of rows; got {rows}")
    n = rows.pop()
    if n < 2:
        raise ValueError(f"Expected at least 2 rows to split; got {n}")
    num_val = min(max(int(round(f * n)), 1), n - 1)
    perm = jax.random.permutation(key, n)
    val_idx, train_idx = perm[:num_val], perm[num_val:]
    train = jax.tree.map(lambda a: jnp.asarray(a)[train_idx], dataset)
    val = jax.tree.map(lambda a: jnp.asarray(a)[val_idx], dataset)
    return train, val


def check_theta_in_support(prior: Any, theta: ArrayLike) -> None:
    """Raises if any row of ``theta`` lies outside the prior's support.

    Args:
        prior: A prior (numpyro distribution with ``event_shape == (theta_dim,)``).
        theta: ``(n, theta_dim)`` parameters.

    Raises:
        ValueError: If ``theta`` has the wrong shape or some rows lie outside the support; the
            message counts them and shows the first.
    """
    prior = validate_prior(prior)
    t = _as_float32("theta", theta)
    dim = prior.event_shape[0]
    if t.ndim != 2 or t.shape[1] != dim:
        raise ValueError(
            f"Expected theta of shape (n, {dim}) to match the prior's event_shape "
            f"{prior.event_shape}; got {t.shape}"
        )
    inside = np.asarray(prior.support(jnp.asarray(t)), dtype=bool).reshape(t.shape[0])
    num_out = int((~inside).sum())
    if num_out:
        first = int(np.flatnonzero(~inside)[0])
        raise ValueError(
            f"Expected every row of theta inside the prior support; got {num_out} of "
            f"{t.shape[0]} rows of theta outside the prior support (first: row {first} = "
            f"{t[first].tolist()})"
        )


def _load_npy(path: str | os.PathLike, name: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except ValueError as e:
        raise ValueError(
            f"Expected {name} to be a .npy file of numbers at {os.fspath(path)!r}; got an "
            f"unreadable file ({e})"
        ) from e


def load_arrays(
    path_theta: str | os.PathLike,
    path_x: str | os.PathLike,
    *,
    nan_policy: str = "drop",
    min_rows: int = 10,
) -> Dataset:
    """Loads theta and x from two ``.npy`` files and validates them with :func:`check_data`.

    Args:
        path_theta: Path of the ``(n, theta_dim)`` parameters.
        path_x: Path of the ``(n, ...)`` data.
        nan_policy: As in :func:`check_data`.
        min_rows: As in :func:`check_data`.

    Returns:
        A float32 :class:`Dataset`.
    """
    t = _load_npy(path_theta, "theta")
    d = _load_npy(path_x, "x")
    return check_data(
        t, d, nan_policy=nan_policy, min_rows=min_rows,
        name_theta=f"theta ({os.path.basename(os.fspath(path_theta))})",
        name_x=f"x ({os.path.basename(os.fspath(path_x))})",
    )


def load_npz(
    path: str | os.PathLike,
    theta_key: str = "theta",
    x_key: str = "x",
    *,
    nan_policy: str = "drop",
    min_rows: int = 10,
) -> Dataset:
    """Loads theta and x from one ``.npz`` archive and validates them with :func:`check_data`.

    Args:
        path: Path of the ``.npz`` file.
        theta_key: Name of the parameter array in the archive.
        x_key: Name of the data array in the archive.
        nan_policy: As in :func:`check_data`.
        min_rows: As in :func:`check_data`.

    Returns:
        A float32 :class:`Dataset`.
    """
    with np.load(path, allow_pickle=False) as archive:
        keys = sorted(archive.files)
        for field, k in (("theta_key", theta_key), ("x_key", x_key)):
            if k not in keys:
                raise ValueError(
                    f"Expected array {k!r} ({field}) in {os.fspath(path)!r}; got arrays {keys}"
                )
        t, d = archive[theta_key], archive[x_key]
    return check_data(
        t, d, nan_policy=nan_policy, min_rows=min_rows, name_theta=f"theta ({theta_key!r})",
        name_x=f"x ({x_key!r})",
    )
