"""Readers for simulation files: ``.npy`` (ltu-ili's ``StaticNumpyLoader`` fields), ``.npz``,
HDF5 and xarray/netCDF.

Each reader returns a :class:`LoadedData` of float32 numpy arrays: ``theta`` and ``x`` with one
row per simulation, and optionally the observation ``x_obs`` and the fiducial parameters
``theta_fid``. They only read: nothing is printed or written, and values are not filtered
(NaN/inf rows are handled later by :func:`ilijax.data.check_data`). What is checked here is what
only the reader can name well: that each file, key, dataset or variable exists (the message
lists what does), that every array is numeric, that ``theta`` and ``x`` have the same number of
rows, and that ``x_obs`` / ``theta_fid`` have the event shape of ``x`` / ``theta`` (one
observation, or a batch of them). ``x`` keeps its event shape (e.g. images ``(n, H, W)`` for an
embedding network) unless ``flatten=True`` asks for ``(n, -1)``.

Example::

    data = ilijax.loaders.load_numpy("sims/", "x.npy", "theta.npy", xobs_file="x_obs.npy")
    posterior, info = ilijax.npe(key, data.theta, data.x, prior=prior)
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["LoadedData", "load_hdf5", "load_netcdf", "load_npz", "load_numpy"]

PathLike = str | os.PathLike


class LoadedData(NamedTuple):
    """Arrays read from files, as float32 numpy arrays.

    Attributes:
        theta: ``(n, ...)`` parameters, one row per simulation (usually ``(n, theta_dim)``).
        x: ``(n, *x_shape)`` simulated data; ``(n, x_dim)`` when flattened.
        x_obs: The observation(s): ``x_shape`` for one, ``(m, *x_shape)`` for several; or
            ``None``.
        theta_fid: Fiducial (true) parameters of ``x_obs``: ``theta.shape[1:]`` or
            ``(m, *theta.shape[1:])``; or ``None``.
    """

    theta: np.ndarray
    x: np.ndarray
    x_obs: np.ndarray | None = None
    theta_fid: np.ndarray | None = None


def _require_file(path: PathLike, field: str) -> str:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"Expected the {field} file at {p!r}; got no such file")
    if not os.path.isfile(p):
        raise ValueError(f"Expected the {field} file at {p!r} to be a file; got a directory")
    return p


def _numeric(field: str, source: str, a: Any) -> np.ndarray:
    """``a`` as float32, or a ValueError naming the field, the source and the dtype."""
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise ValueError(
            f"Expected {field} ({source}) to be a numeric array (bool, int or float); got dtype "
            f"{a.dtype}"
        )
    return a.astype(np.float32)


def _pickle_hint(e: ValueError) -> bool:
    return "pickle" in str(e).lower()


def _read_npy(path: PathLike, field: str) -> np.ndarray:
    p = _require_file(path, field)
    try:
        a = np.load(p, allow_pickle=False)
    except ValueError as e:
        if _pickle_hint(e):
            raise ValueError(
                f"Expected {field} at {p!r} to be a numeric .npy array; got an object array "
                f"that needs pickle to load (not allowed: save it with "
                f"np.save(path, np.asarray(a, dtype=np.float32)))"
            ) from e
        raise ValueError(f"Expected {field} at {p!r} to be a .npy file; got an unreadable "
                         f"file ({e})") from e
    except (OSError, EOFError) as e:
        raise ValueError(f"Expected {field} at {p!r} to be a .npy file; got an unreadable "
                         f"file ({e})") from e
    if isinstance(a, np.lib.npyio.NpzFile):
        a.close()
        raise ValueError(
            f"Expected {field} at {p!r} to be a .npy file; got an .npz archive (use load_npz)"
        )
    return _numeric(field, repr(p), a)


def _event_check(field: str, source: str, a: np.ndarray | None, of: str,
                 event: tuple[int, ...]) -> None:
    if a is None or a.shape == event or a.shape[1:] == event:
        return
    several = "(" + ", ".join(["m", *map(str, event)]) + ")"
    raise ValueError(
        f"Expected {field} ({source}) of shape {event} (one) or {several} (several), the "
        f"event shape of {of}; got {a.shape}"
    )


def _finish(theta: np.ndarray, x: np.ndarray, x_obs: np.ndarray | None,
            theta_fid: np.ndarray | None, sources: dict[str, str],
            flatten: bool) -> LoadedData:
    """Checks rows and event shapes, flattens x (and x_obs) if asked, returns LoadedData."""
    for field, a in (("theta", theta), ("x", x)):
        if a.ndim == 0:
            raise ValueError(
                f"Expected {field} ({sources[field]}) with a leading simulation axis; got a "
                f"scalar"
            )
        if a.shape[0] == 0:
            raise ValueError(f"Expected at least one row in {field} ({sources[field]}); got "
                             f"shape {a.shape}")
    if theta.shape[0] != x.shape[0]:
        raise ValueError(
            f"Expected theta and x to have the same number of rows (simulations); got "
            f"{theta.shape[0]} rows in theta ({sources['theta']}) and {x.shape[0]} rows in x "
            f"({sources['x']})"
        )
    _event_check("x_obs", sources.get("x_obs", ""), x_obs, "x", x.shape[1:])
    _event_check("theta_fid", sources.get("theta_fid", ""), theta_fid, "theta", theta.shape[1:])
    if flatten:
        event = x.shape[1:]
        x = x.reshape(x.shape[0], -1)
        if x_obs is not None:
            x_obs = x_obs.reshape(-1) if x_obs.shape == event else x_obs.reshape(
                x_obs.shape[0], -1)
    return LoadedData(theta, x, x_obs, theta_fid)


def load_numpy(
    in_dir: PathLike,
    x_file: str,
    theta_file: str,
    xobs_file: str | None = None,
    thetafid_file: str | None = None,
    *,
    flatten: bool = False,
) -> LoadedData:
    """Reads ``.npy`` files from one folder (the fields of ltu-ili's ``StaticNumpyLoader``).

    Args:
        in_dir: Folder of the files.
        x_file: File of the ``(n, *x_shape)`` data, relative to ``in_dir``.
        theta_file: File of the ``(n, ...)`` parameters.
        xobs_file: Optional file of the observation(s).
        thetafid_file: Optional file of the fiducial parameters.
        flatten: Reshape ``x`` to ``(n, -1)`` (and ``x_obs`` alike).

    Returns:
        A :class:`LoadedData` of float32 arrays.

    Raises:
        FileNotFoundError: If a file does not exist (the message gives its path).
        ValueError: For a file that is not a numeric ``.npy`` array (an object array that needs
            pickle is named as such), different row counts, or a mismatched ``x_obs`` /
            ``theta_fid`` shape.
    """
    d = os.fspath(in_dir)
    if not os.path.isdir(d):
        raise FileNotFoundError(f"Expected in_dir to be a folder at {d!r}; got no such folder")
    files = {"x": x_file, "theta": theta_file, "x_obs": xobs_file, "theta_fid": thetafid_file}
    paths = {k: os.path.join(d, f) for k, f in files.items() if f is not None}
    arrays = {k: _read_npy(p, k) for k, p in paths.items()}
    return _finish(arrays["theta"], arrays["x"], arrays.get("x_obs"), arrays.get("theta_fid"),
                   {k: repr(p) for k, p in paths.items()}, flatten)


def load_npz(
    path: PathLike,
    theta_key: str = "theta",
    x_key: str = "x",
    xobs_key: str | None = None,
    thetafid_key: str | None = None,
    *,
    flatten: bool = False,
) -> LoadedData:
    """Reads arrays from one ``.npz`` archive.

    Args:
        path: The ``.npz`` file.
        theta_key: Name of the ``(n, ...)`` parameters in the archive.
        x_key: Name of the ``(n, *x_shape)`` data.
        xobs_key: Optional name of the observation(s).
        thetafid_key: Optional name of the fiducial parameters.
        flatten: Reshape ``x`` to ``(n, -1)`` (and ``x_obs`` alike).

    Returns:
        A :class:`LoadedData` of float32 arrays.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For a file that is not an ``.npz`` archive, a missing key (the message
            lists the keys present), a non-numeric array, different row counts, or a
            mismatched ``x_obs`` / ``theta_fid`` shape.
    """
    p = _require_file(path, "npz")
    keys = {"theta": theta_key, "x": x_key, "x_obs": xobs_key, "theta_fid": thetafid_key}
    try:
        archive = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"Expected an .npz archive at {p!r}; got an unreadable file ({e})") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"Expected an .npz archive at {p!r}; got a single .npy array (use "
                         f"load_numpy)")
    arrays, sources = {}, {}
    with archive:
        present = sorted(archive.files)
        for field, k in keys.items():
            if k is None:
                continue
            source = f"key {k!r} in {p!r}"
            if k not in present:
                option = {"theta": "theta_key", "x": "x_key", "x_obs": "xobs_key",
                          "theta_fid": "thetafid_key"}[field]
                raise ValueError(
                    f"Expected array {k!r} ({option}) in {p!r}; got arrays {present}"
                )
            try:
                a = archive[k]
            except ValueError as e:
                if _pickle_hint(e):
                    raise ValueError(
                        f"Expected {field} ({source}) to be a numeric array; got an object "
                        f"array that needs pickle to load (not allowed)"
                    ) from e
                raise
            arrays[field], sources[field] = _numeric(field, source, a), source
    return _finish(arrays["theta"], arrays["x"], arrays.get("x_obs"), arrays.get("theta_fid"),
                   sources, flatten)


def _h5_datasets(f: Any) -> list[str]:
    import h5py

    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(names)


def load_hdf5(
    path: PathLike,
    theta_dataset: str = "theta",
    x_dataset: str = "x",
    xobs_dataset: str | None = None,
    thetafid_dataset: str | None = None,
    *,
    flatten: bool = False,
) -> LoadedData:
    """Reads datasets from one HDF5 file (with h5py).

    Args:
        path: The HDF5 file.
        theta_dataset: Path of the ``(n, ...)`` parameters in the file; may include groups
            (``"sims/theta"``).
        x_dataset: Path of the ``(n, *x_shape)`` data.
        xobs_dataset: Optional path of the observation(s).
        thetafid_dataset: Optional path of the fiducial parameters.
        flatten: Reshape ``x`` to ``(n, -1)`` (and ``x_obs`` alike).

    Returns:
        A :class:`LoadedData` of float32 arrays.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For a file that is not HDF5, a missing dataset or a group in its place (the
            message lists the datasets present), a non-numeric dataset, different row counts,
            or a mismatched ``x_obs`` / ``theta_fid`` shape.
    """
    import h5py

    p = _require_file(path, "HDF5")
    names = {"theta": theta_dataset, "x": x_dataset, "x_obs": xobs_dataset,
             "theta_fid": thetafid_dataset}
    options = {"theta": "theta_dataset", "x": "x_dataset", "x_obs": "xobs_dataset",
               "theta_fid": "thetafid_dataset"}
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise ValueError(f"Expected an HDF5 file at {p!r}; got an unreadable file ({e})") from e
    arrays, sources = {}, {}
    with f:
        for field, name in names.items():
            if name is None:
                continue
            source = f"dataset {name!r} in {p!r}"
            obj = f.get(name)
            if not isinstance(obj, h5py.Dataset):
                got = "a group" if isinstance(obj, h5py.Group) else "no such dataset"
                raise ValueError(
                    f"Expected dataset {name!r} ({options[field]}) in {p!r}; got {got}; "
                    f"datasets present: {_h5_datasets(f)}"
                )
            if obj.dtype.kind not in "biuf":
                raise ValueError(
                    f"Expected {field} ({source}) to be a numeric array (bool, int or float); "
                    f"got dtype {obj.dtype}"
                )
            arrays[field], sources[field] = _numeric(field, source, obj[()]), source
    return _finish(arrays["theta"], arrays["x"], arrays.get("x_obs"), arrays.get("theta_fid"),
                   sources, flatten)


def _nc_variable(ds: Any, name: str, option: str, p: str) -> Any:
    if name not in ds.variables:
        raise ValueError(
            f"Expected variable {name!r} ({option}) in {p!r}; got data variables "
            f"{sorted(map(str, ds.data_vars))} and coordinates {sorted(map(str, ds.coords))}"
        )
    return ds[name]


def load_netcdf(
    path: PathLike,
    x_variable: str = "x",
    theta_variable: str | Sequence[str] | None = "theta",
    xobs_variable: str | None = None,
    thetafid_variable: str | Sequence[str] | None = None,
    *,
    theta_variables: Sequence[str] | None = None,
    flatten: bool = True,
    engine: str | None = None,
) -> LoadedData:
    """Reads summaries from an xarray Dataset file (netCDF ``.nc``) indexed by simulation.

    The first dimension of ``x`` and of the ``theta`` variable(s) is the simulation index.

    Args:
        path: The file.
        x_variable: Variable of the data, ``(n, ...)``; extra dimensions are flattened to
            ``(n, -1)`` unless ``flatten=False``.
        theta_variable: Variable of the parameters, ``(n, theta_dim)`` (a 1-d ``(n,)``
            variable becomes ``(n, 1)``), or a list of 1-d ``(n,)`` variables stacked as
            columns in that order.
        xobs_variable: Optional variable of the observation(s), with the dimensions of ``x``
            without (one) or with (several) a leading one.
        thetafid_variable: Optional variable(s) of the fiducial parameters; a list is stacked
            like ``theta_variables`` (each variable a scalar, or ``(m,)`` for several).
        theta_variables: The list form of ``theta_variable`` (e.g. ``["Om", "s8"]``); give
            one of the two (``theta_variable`` left at its default or ``None``).
        flatten: Reshape ``x`` to ``(n, -1)`` (and ``x_obs`` alike); the default, as summaries
            with several dimensions (e.g. ``(sim, k, z)``) are usually fed to a dense network.
            ``False`` keeps them, e.g. images for an embedding network.
        engine: xarray backend (``"h5netcdf"``, ``"netcdf4"``, ``"scipy"``); ``None`` lets
            xarray choose from the installed ones.

    Returns:
        A :class:`LoadedData` of float32 arrays.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For a file xarray cannot open, a missing variable (the message lists the
            variables present), a non-numeric variable, a 1-d variable expected where a stack
            is built, different row counts, or a mismatched ``x_obs`` / ``theta_fid`` shape.
    """
    import xarray as xr

    p = _require_file(path, "netCDF")
    theta_option = "theta_variable"
    if theta_variables is not None:
        if theta_variable not in (None, "theta"):
            raise ValueError(
                f"Expected one of theta_variable and theta_variables; got both "
                f"({theta_variable!r} and {list(theta_variables)!r})"
            )
        theta_variable, theta_option = list(theta_variables), "theta_variables"
    elif theta_variable is None:
        raise ValueError("Expected theta_variable or theta_variables; got neither")
    try:
        ds = xr.open_dataset(p, engine=engine)
    except (ValueError, OSError) as e:
        raise ValueError(f"Expected an xarray/netCDF dataset at {p!r}; got an unreadable file "
                         f"({e})") from e
    with ds:
        x_da = _nc_variable(ds, x_variable, "x_variable", p)
        sources = {"x": f"variable {x_variable!r} in {p!r}"}
        x = _numeric("x", sources["x"], x_da.values)

        def read(field, spec, option, per_row):
            if isinstance(spec, str):
                sources[field] = f"variable {spec!r} in {p!r}"
                a = _numeric(field, sources[field], _nc_variable(ds, spec, option, p).values)
                return a.reshape(-1, 1) if per_row and a.ndim == 1 else a
            names = list(spec)
            if not names or not all(isinstance(n, str) for n in names):
                raise ValueError(f"Expected {option} to be a variable name or a non-empty list "
                                 f"of them; got {spec!r}")
            sources[field] = f"variables {names} in {p!r}"
            cols = []
            for n in names:
                col = _numeric(field, f"variable {n!r} in {p!r}",
                               _nc_variable(ds, n, option, p).values)
                if (col.ndim != 1) if per_row else (col.ndim > 1):
                    want = "1-d over the simulations" if per_row else "a scalar or 1-d"
                    raise ValueError(
                        f"Expected variable {n!r} ({option}) in {p!r} to be {want} to stack it "
                        f"as a column; got shape {col.shape}"
                    )
                cols.append(col)
            shapes = {c.shape for c in cols}
            if len(shapes) != 1:
                raise ValueError(f"Expected the variables {names} ({option}) in {p!r} to have "
                                 f"one shape to stack them; got shapes {sorted(shapes)}")
            return np.stack(cols, axis=-1)

        theta = read("theta", theta_variable, theta_option, True)
        x_obs = theta_fid = None
        if xobs_variable is not None:
            sources["x_obs"] = f"variable {xobs_variable!r} in {p!r}"
            x_obs = _numeric("x_obs", sources["x_obs"],
                             _nc_variable(ds, xobs_variable, "xobs_variable", p).values)
        if thetafid_variable is not None:
            theta_fid = read("theta_fid", thetafid_variable, "thetafid_variable", False)
            if isinstance(thetafid_variable, str) and theta_fid.ndim == 0:
                theta_fid = theta_fid.reshape(1)
    return _finish(theta, x, x_obs, theta_fid, sources, flatten)
