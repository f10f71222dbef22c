"""Tests for ilijax.data and ilijax.simulate."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilijax import priors
from ilijax.data import (
    Dataset,
    check_data,
    check_theta_in_support,
    load_arrays,
    load_npz,
    split,
)
from ilijax.simulate import simulate


def _arrays(n=100, theta_dim=2, x_dim=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, theta_dim)), rng.normal(size=(n, x_dim))


# ----------------------------------------------------------------------------- check_data


def test_check_data_returns_float32_and_keeps_trailing_shape():
    theta, _ = _arrays()
    images = np.zeros((100, 4, 5, 2), dtype=np.float64)
    ds = check_data(theta, images)
    assert isinstance(ds, Dataset)
    assert ds.theta.dtype == jnp.float32 and ds.x.dtype == jnp.float32
    assert ds.theta.shape == (100, 2) and ds.x.shape == (100, 4, 5, 2)
    ints = check_data(np.arange(20).reshape(10, 2), np.ones((10, 1), dtype=np.int64))
    assert ints.theta.dtype == jnp.float32 and ints.x.dtype == jnp.float32
    np.testing.assert_array_equal(ints.theta, np.arange(20).reshape(10, 2))


def test_nan_rows_dropped_with_counting_warning():
    theta, x = _arrays()
    x[1, 0] = np.nan
    x[5, 2] = np.inf
    theta[7, 1] = -np.inf
    with pytest.warns(UserWarning) as record:
        ds = check_data(theta, x)
    msgs = [str(w.message) for w in record]
    assert "dropped 3 of 100 rows with non-finite values (2 in x, 1 in theta)" in msgs
    keep = np.setdiff1d(np.arange(100), [1, 5, 7])
    assert ds.theta.shape == (97, 2) and ds.x.shape == (97, 3)
    np.testing.assert_array_equal(ds.theta, theta[keep].astype(np.float32))
    np.testing.assert_array_equal(ds.x, x[keep].astype(np.float32))


def test_nan_counts_rows_not_entries_and_overlaps():
    theta, x = _arrays()
    x[3, :] = np.nan  # three NaN entries, one row
    theta[3, 0] = np.nan  # same row bad in theta too
    with pytest.warns(UserWarning, match=re.escape("dropped 1 of 100 rows")) as record:
        check_data(theta, x)
    assert "(1 in x, 1 in theta)" in str(record[0].message)


def test_nan_policy_raise():
    theta, x = _arrays()
    x[[4, 8], 1] = np.nan
    with pytest.raises(ValueError, match="2 of 100 rows") as info:
        check_data(theta, x, nan_policy="raise")
    assert "first: row 4" in str(info.value)
    with pytest.raises(ValueError, match="nan_policy"):
        check_data(theta, x, nan_policy="ignore")


BAD_INPUTS = {
    "mismatched_lengths": (
        lambda: (np.zeros((10, 2)), np.zeros((12, 3))),
        ["theta", "x", "10 rows", "12 rows"],
    ),
    "theta_rank_1": (lambda: (np.zeros(20), np.zeros((20, 3))),
                     ["theta", "rank 2", "(20,)", "reshape(-1, 1)"]),
    "x_rank_1": (lambda: (np.zeros((20, 2)), np.zeros(20)), ["x", "rank >= 2", "(20,)"]),
    "theta_rank_3": (lambda: (np.zeros((20, 2, 2)), np.zeros((20, 3))),
                     ["theta", "rank 2", "(20, 2, 2)"]),
    "scalar_theta": (lambda: (np.float32(1.0), np.zeros((20, 3))), ["theta", "rank 2", "()"]),
    "too_few_rows": (lambda: (np.zeros((5, 2)), np.zeros((5, 3))),
                     ["at least 10 rows", "got 5"]),
    "empty": (lambda: (np.zeros((0, 2)), np.zeros((0, 3))),
              ["non-empty", "theta", "x", "(0, 2)", "(0, 3)"]),
    "zero_columns": (lambda: (np.zeros((20, 0)), np.zeros((20, 3))), ["column", "(20, 0)"]),
    "non_numeric": (lambda: (np.array([["a", "b"]] * 20), np.zeros((20, 3))),
                    ["theta", "numeric"]),
}


@pytest.mark.parametrize("make,needles", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_with_expected_and_got(make, needles):
    theta, x = make()
    with pytest.raises(ValueError) as info:
        check_data(theta, x)
    msg = str(info.value)
    assert "Expected" in msg and "got" in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_too_few_rows_after_dropping():
    theta, x = _arrays(n=12)
    x[:5, 0] = np.nan
    with pytest.warns(UserWarning, match="dropped 5 of 12"), pytest.raises(
        ValueError, match="at least 10 rows .* after dropping non-finite rows; got 7"
    ):
        check_data(theta, x)


def test_theta_outside_support_counts_rows():
    prior = priors.uniform([0.0, 0.0], [1.0, 2.0])
    theta = np.array(prior.sample(jax.random.key(0), (100,)))
    theta[[7, 20, 55]] = [[0.5, 2.5], [-0.1, 1.0], [1.2, 3.0]]
    with pytest.raises(ValueError) as info:
        check_theta_in_support(prior, theta)
    msg = str(info.value)
    assert "3 of 100 rows of theta" in msg and "outside the prior support" in msg
    assert "first: row 7 = [0.5, 2.5]" in msg
    check_theta_in_support(prior, np.delete(theta, [7, 20, 55], axis=0))  # no error
    with pytest.raises(ValueError, match=r"shape \(n, 2\).*got \(100, 3\)"):
        check_theta_in_support(prior, np.zeros((100, 3)))


# ----------------------------------------------------------------------------- split


def test_split_sizes_disjoint_and_deterministic():
    n = 100
    ds = check_data(np.arange(2 * n).reshape(n, 2), np.arange(n)[:, None])
    train, val = split(jax.random.key(0), ds, 0.1)
    assert train.theta.shape == (90, 2) and val.theta.shape == (10, 2)
    assert train.x.shape == (90, 1) and val.x.shape == (10, 1)
    ids_train, ids_val = np.asarray(train.x[:, 0]), np.asarray(val.x[:, 0])
    assert not set(ids_train) & set(ids_val)
    assert sorted(np.concatenate([ids_train, ids_val]).tolist()) == list(range(n))
    # theta and x stay paired
    np.testing.assert_array_equal(train.theta[:, 0], 2 * train.x[:, 0])
    again, _ = split(jax.random.key(0), ds, 0.1)
    np.testing.assert_array_equal(again.x, train.x)
    other, _ = split(jax.random.key(1), ds, 0.1)
    assert not np.array_equal(other.x, train.x)


def test_split_keeps_one_row_each_side_and_validates_fraction():
    ds = Dataset(jnp.zeros((2, 1)), jnp.zeros((2, 1)))
    for f in (0.01, 0.99):
        train, val = split(jax.random.key(0), ds, f)
        assert train.theta.shape[0] == 1 and val.theta.shape[0] == 1
    for f in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"validation_fraction in \(0, 1\)"):
            split(jax.random.key(0), ds, f)
    with pytest.raises(ValueError, match="at least 2 rows"):
        split(jax.random.key(0), Dataset(jnp.zeros((1, 1)), jnp.zeros((1, 1))), 0.5)


# ----------------------------------------------------------------------------- loaders


def test_load_arrays_and_npz(tmp_path):
    theta, x = _arrays(n=30)
    x[2, 1] = np.nan
    np.save(tmp_path / "theta.npy", theta)
    np.save(tmp_path / "x.npy", x)
    with pytest.warns(UserWarning, match="dropped 1 of 30"):
        ds = load_arrays(tmp_path / "theta.npy", tmp_path / "x.npy")
    assert ds.theta.shape == (29, 2) and ds.x.dtype == jnp.float32
    np.savez(tmp_path / "d.npz", params=theta, data=x)
    with pytest.warns(UserWarning, match="dropped 1 of 30"):
        ds2 = load_npz(tmp_path / "d.npz", theta_key="params", x_key="data")
    np.testing.assert_array_equal(ds.x, ds2.x)
    missing = r"Expected array 'theta'.*got arrays \['data', 'params'\]"
    with pytest.raises(ValueError, match=missing):
        load_npz(tmp_path / "d.npz")
    np.save(tmp_path / "short.npy", theta[:10])
    with pytest.raises(ValueError, match=r"10 rows in theta \(short.npy\) and 30 rows in x"):
        load_arrays(tmp_path / "short.npy", tmp_path / "x.npy")


# ----------------------------------------------------------------------------- simulate

PRIOR = priors.uniform([0.0, 0.0], [1.0, 1.0])


def _det_jax(key, theta):
    del key
    return jnp.stack([theta[0] * theta[1], jnp.sin(theta[0]), theta[1] ** 2])


def _det_numpy(theta_batch):
    t = np.asarray(theta_batch)
    return np.stack([t[:, 0] * t[:, 1], np.sin(t[:, 0]), t[:, 1] ** 2], axis=1)


@pytest.mark.parametrize("kind", ["auto", "explicit"])
def test_simulate_jax_and_numpy_agree(kind):
    key = jax.random.key(3)
    kinds = ("auto", "auto") if kind == "auto" else ("jax", "numpy")
    a = simulate(key, PRIOR, _det_jax, 250, batch_size=100, kind=kinds[0], progress=False)
    b = simulate(key, PRIOR, _det_numpy, 250, batch_size=100, kind=kinds[1], progress=False)
    assert a.theta.shape == (250, 2) and a.x.shape == (250, 3) and a.x.dtype == jnp.float32
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-6, atol=1e-7)


def test_simulate_compiles_once_and_ignores_batch_size():
    traces = []

    def sim(key, theta):
        traces.append(1)  # runs only while tracing
        return theta + 0.1 * jax.random.normal(key, theta.shape)

    key = jax.random.key(0)
    ds = simulate(key, PRIOR, sim, 250, batch_size=100, progress=True)  # 3 batches, last padded
    assert len(traces) == 1
    assert ds.x.shape == (250, 2)
    one = simulate(key, PRIOR, sim, 250, batch_size=250, progress=False)
    np.testing.assert_array_equal(ds.x, one.x)  # per-simulation keys: fold_in(key, i)
    again = simulate(key, PRIOR, sim, 250, batch_size=100, progress=False)
    np.testing.assert_array_equal(ds.x, again.x)
    # the noise is really there and per-simulation
    resid = np.asarray(ds.x - ds.theta)
    assert 0.08 < resid.std() < 0.12 and len(np.unique(resid[:, 0])) == 250


def test_simulate_drops_nan_rows_with_counting_warning():
    def sim(key, theta):
        del key
        return jnp.where(theta[0] > 0.8, jnp.nan, theta)

    n = 200
    with pytest.warns(UserWarning) as record:
        ds = simulate(jax.random.key(1), PRIOR, sim, n, batch_size=64, progress=False)
    num_dropped = n - ds.theta.shape[0]
    # Binomial(200, 0.2): 99.99% within [20, 62]
    assert 20 <= num_dropped <= 62
    expected = (f"dropped {num_dropped} of {n} rows with non-finite values "
                f"({num_dropped} in x, 0 in theta)")
    assert expected in [str(w.message) for w in record]
    assert float(ds.theta[:, 0].max()) <= 0.8
    with pytest.raises(ValueError, match=f"{num_dropped} of {n} rows"):
        simulate(jax.random.key(1), PRIOR, sim, n, batch_size=64, nan_policy="raise",
                 progress=False)


def test_simulate_errors():
    with pytest.raises(ValueError, match="kind"):
        simulate(jax.random.key(0), PRIOR, _det_jax, 10, kind="torch")
    with pytest.raises(ValueError, match="num_simulations"):
        simulate(jax.random.key(0), PRIOR, _det_jax, 0)
    with pytest.raises(ValueError, match=r"one row per theta, shape \(10, ...\); got shape \(3,\)"):
        simulate(jax.random.key(0), PRIOR, lambda t: np.zeros(3), 10, kind="numpy")

    def broken(*args):
        raise RuntimeError("boom")

    with pytest.raises(ValueError, match="tracing it as JAX failed.*boom.*numpy batch failed"):
        simulate(jax.random.key(0), PRIOR, broken, 10)
