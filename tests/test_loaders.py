"""File readers: a round trip per format and the error table (missing file, key, dataset or
variable; rows that do not match; non-numeric arrays; pickle)."""

import h5py
import numpy as np
import pytest
import xarray as xr

from ilijax.loaders import LoadedData, load_hdf5, load_netcdf, load_npz, load_numpy

ENGINE = "h5netcdf"  # installed with arviz[h5netcdf]; netCDF4 may not be


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    return dict(
        theta=rng.normal(size=(6, 2)),
        x=rng.normal(size=(6, 3, 4)),  # images: the event shape is kept by default
        x_obs=rng.normal(size=(3, 4)),
        theta_fid=np.array([0.3, 0.8]),
    )


def check_round_trip(got: LoadedData, a, *, flat=False):
    assert isinstance(got, LoadedData)
    for field in ("theta", "x", "x_obs", "theta_fid"):
        want = a[field]
        if flat and field == "x":
            want = want.reshape(6, -1)
        if flat and field == "x_obs":
            want = want.reshape(-1)
        value = getattr(got, field)
        assert value.dtype == np.float32
        np.testing.assert_allclose(value, want.astype(np.float32))


def test_numpy_round_trip(tmp_path, arrays):
    for name, a in arrays.items():
        np.save(tmp_path / f"{name}.npy", a)
    got = load_numpy(tmp_path, "x.npy", "theta.npy", xobs_file="x_obs.npy",
                     thetafid_file="theta_fid.npy")
    check_round_trip(got, arrays)
    check_round_trip(load_numpy(tmp_path, "x.npy", "theta.npy", "x_obs.npy", "theta_fid.npy",
                                flatten=True), arrays, flat=True)
    plain = load_numpy(str(tmp_path), "x.npy", "theta.npy")
    assert plain.x_obs is None and plain.theta_fid is None


def test_npz_round_trip(tmp_path, arrays):
    path = tmp_path / "sims.npz"
    np.savez(path, params=arrays["theta"], data=arrays["x"], obs=arrays["x_obs"],
             fid=arrays["theta_fid"])
    check_round_trip(load_npz(path, "params", "data", "obs", "fid"), arrays)


def test_hdf5_round_trip_with_groups(tmp_path, arrays):
    path = tmp_path / "sims.h5"
    with h5py.File(path, "w") as f:
        f["sims/theta"] = arrays["theta"]
        f["sims/x"] = arrays["x"]
        f["obs/x"] = arrays["x_obs"]
        f["obs/theta"] = arrays["theta_fid"]
    got = load_hdf5(path, "sims/theta", "sims/x", xobs_dataset="obs/x",
                    thetafid_dataset="obs/theta")
    check_round_trip(got, arrays)


def test_netcdf_round_trip(tmp_path, arrays):
    a = arrays
    ds = xr.Dataset(
        {
            "x": (("sim", "k", "z"), a["x"]),
            "Om": ("sim", a["theta"][:, 0]),
            "s8": ("sim", a["theta"][:, 1]),
            "theta": (("sim", "param"), a["theta"]),
            "x_obs": (("k", "z"), a["x_obs"]),
            "Om_fid": ((), a["theta_fid"][0]),
            "s8_fid": ((), a["theta_fid"][1]),
        }
    )
    path = tmp_path / "sims.nc"
    ds.to_netcdf(path, engine=ENGINE)
    # Stacked columns, flattened x (the default), fiducial values stacked from scalars.
    got = load_netcdf(path, theta_variables=["Om", "s8"], xobs_variable="x_obs",
                      thetafid_variable=["Om_fid", "s8_fid"], engine=ENGINE)
    check_round_trip(got, a, flat=True)
    kept = load_netcdf(path, theta_variable="theta", xobs_variable="x_obs", flatten=False,
                       engine=ENGINE)
    np.testing.assert_allclose(kept.x, a["x"].astype(np.float32))
    np.testing.assert_allclose(kept.theta, a["theta"].astype(np.float32))
    assert kept.x_obs.shape == (3, 4) and kept.theta_fid is None
    same = load_netcdf(path, theta_variable=None, theta_variables=["Om", "s8"], engine=ENGINE)
    np.testing.assert_array_equal(same.theta, got.theta)
    one = load_netcdf(path, theta_variable="Om", engine=ENGINE)  # a 1-d variable: one column
    assert one.theta.shape == (6, 1) and one.x.shape == (6, 12)


@pytest.fixture
def files(tmp_path, arrays):
    np.save(tmp_path / "theta.npy", arrays["theta"])
    np.save(tmp_path / "x.npy", arrays["x"])
    np.save(tmp_path / "x5.npy", arrays["x"][:5])
    np.save(tmp_path / "words.npy", np.array(["a"] * 6))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 6, dtype=object), allow_pickle=True)
    np.save(tmp_path / "bad_obs.npy", np.zeros(5))
    np.savez(tmp_path / "sims.npz", theta=arrays["theta"], x=arrays["x"][:5])
    with h5py.File(tmp_path / "sims.h5", "w") as f:
        f["sims/theta"] = arrays["theta"]
        f["sims/x"] = arrays["x"]
        f["sims/label"] = np.array([b"a"] * 6)
    xr.Dataset({"x": (("sim", "k"), np.zeros((6, 2))), "Om": ("sim", np.zeros(6)),
                "grid": (("sim", "k"), np.zeros((6, 2)))}).to_netcdf(
        tmp_path / "sims.nc", engine=ENGINE)
    return tmp_path


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda d: load_numpy(d, "x.npy", "nope.npy"), FileNotFoundError, r"theta.*nope\.npy"),
        (lambda d: load_numpy(d / "missing", "x.npy", "theta.npy"), FileNotFoundError,
         "missing"),
        (lambda d: load_numpy(d, "x5.npy", "theta.npy"), ValueError,
         r"same number of rows.*6 rows in theta.*5 rows in x .*x5\.npy"),
        (lambda d: load_numpy(d, "words.npy", "theta.npy"), ValueError,
         r"x .*words\.npy.*numeric.*got dtype <U1"),
        (lambda d: load_numpy(d, "objects.npy", "theta.npy"), ValueError,
         r"objects\.npy.*needs pickle"),
        (lambda d: load_numpy(d, "x.npy", "theta.npy", xobs_file="bad_obs.npy"), ValueError,
         r"x_obs .*bad_obs\.npy.*\(3, 4\) \(one\) or \(m, 3, 4\).*got \(5,\)"),
        (lambda d: load_numpy(d, "sims.npz", "theta.npy"), ValueError, "load_npz"),
        (lambda d: load_npz(d / "nope.npz"), FileNotFoundError, r"nope\.npz"),
        (lambda d: load_npz(d / "sims.npz", x_key="data"), ValueError,
         r"'data' \(x_key\).*sims\.npz.*got arrays \['theta', 'x'\]"),
        (lambda d: load_npz(d / "sims.npz"), ValueError, "6 rows in theta.*5 rows in x"),
        (lambda d: load_npz(d / "x.npy"), ValueError, "load_numpy"),
        (lambda d: load_hdf5(d / "nope.h5"), FileNotFoundError, r"nope\.h5"),
        (lambda d: load_hdf5(d / "sims.h5", "sims/theta", "x"), ValueError,
         r"'x' \(x_dataset\).*no such dataset.*\['sims/label', 'sims/theta', 'sims/x'\]"),
        (lambda d: load_hdf5(d / "sims.h5", "sims", "sims/x"), ValueError,
         r"'sims' \(theta_dataset\).*got a group"),
        (lambda d: load_hdf5(d / "sims.h5", "sims/theta", "sims/label"), ValueError,
         "numeric.*got dtype"),
        (lambda d: load_hdf5(d / "x.npy"), ValueError, "Expected an HDF5 file"),
        (lambda d: load_netcdf(d / "nope.nc", engine=ENGINE), FileNotFoundError, r"nope\.nc"),
        (lambda d: load_netcdf(d / "sims.nc", engine=ENGINE), ValueError,
         r"'theta' \(theta_variable\).*data variables \['Om', 'grid', 'x'\]"),
        (lambda d: load_netcdf(d / "sims.nc", theta_variables=["Om", "s8"], engine=ENGINE),
         ValueError, r"'s8' \(theta_variables\)"),
        (lambda d: load_netcdf(d / "sims.nc", theta_variables=["Om", "grid"], engine=ENGINE),
         ValueError, r"'grid'.*1-d over the simulations.*\(6, 2\)"),
        (lambda d: load_netcdf(d / "sims.nc", theta_variable="Om", theta_variables=["Om"],
                               engine=ENGINE), ValueError, "one of theta_variable"),
        (lambda d: load_netcdf(d / "sims.nc", theta_variable=None, engine=ENGINE), ValueError,
         "theta_variable or theta_variables; got neither"),
    ],
)
def test_errors_name_the_field_the_file_and_what_exists(files, call, error, match):
    with pytest.raises(error, match=match):
        call(files)
