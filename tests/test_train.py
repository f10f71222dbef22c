"""The training engine: early stopping, NaN handling, tracing, sharding, groups.

These tests use a Gaussian model with two parameters per member (no networks), so they are
fast and have known answers: the maximum-likelihood fit is the sample mean and deviation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ilijax.train import fit, stack_members


def gauss_loss(p, batch, key):
    del key
    lp = jax.scipy.stats.norm.logpdf(batch["y"], p["mu"], jnp.exp(p["log_sigma"]))
    return -jnp.mean(jnp.sum(lp, axis=-1))


def init_gauss(key):
    return {"mu": jax.random.normal(key, (2,)), "log_sigma": jnp.zeros(2)}


@pytest.fixture(scope="module")
def data():
    key = jax.random.key(0)
    y = 3.0 + 2.0 * jax.random.normal(key, (2000, 2))
    train, val = {"y": y[:1600]}, {"y": y[1600:]}
    return train, val


def test_fit_reaches_maximum_likelihood_and_keeps_best(data):
    train, val = data
    params = stack_members(jax.random.key(1), init_gauss, 3)
    best, info = fit(jax.random.key(2), params, gauss_loss, train, val,
                     optimizer=optax.adam(0.05), batch_size=400, max_epochs=200, patience=10,
                     progress=False)
    y = np.asarray(train["y"])
    # The MLE is the sample mean and deviation; what SGD leaves must stay inside 4 of their
    # standard errors (sigma / sqrt(n) and sigma / sqrt(2 n)).
    se = y.std(0) / np.sqrt(len(y))
    assert np.all(np.abs(np.asarray(best["mu"]) - y.mean(0)) < 4 * se)
    sigma = np.exp(np.asarray(best["log_sigma"]))
    assert np.all(np.abs(sigma - y.std(0)) < 4 * y.std(0) / np.sqrt(2 * len(y)))
    # Early stopping restores the best params: their validation loss is the history's minimum.
    for k in range(3):
        member = jax.tree.map(lambda a, k=k: a[k], best)
        recomputed = float(gauss_loss(member, val, None))
        np.testing.assert_allclose(recomputed, info.best_validation_loss[k], rtol=1e-5)
        np.testing.assert_allclose(np.nanmin(info.validation_loss[:, k]),
                                   info.best_validation_loss[k], rtol=1e-6)
        assert info.best_epoch[k] == np.nanargmin(info.validation_loss[:, k]) + 1
        # A member stops `patience` epochs after its best one, unless it hit max_epochs.
        assert info.epochs[k] == min(200, info.best_epoch[k] + 10)
    assert not info.diverged.any()
    assert info.train_loss.shape == info.validation_loss.shape == (info.epochs.max(), 3)


def test_epoch_function_traces_once(data):
    train, val = data
    params = stack_members(jax.random.key(1), init_gauss, 2)
    _, info = fit(jax.random.key(2), params, gauss_loss, train, val, max_epochs=5,
                  patience=None, progress=False)
    assert info.epoch_traces == 1
    assert info.epochs.tolist() == [5, 5]


def test_nan_member_is_stopped_and_reported(data):
    train, val = data

    def loss(p, batch, key):
        # sqrt of a negative number: NaN for member 1 only.
        return gauss_loss(p, batch, key) + 0.0 * jnp.sqrt(p["c"])

    params = stack_members(jax.random.key(1), init_gauss, 3)
    params["c"] = jnp.array([1.0, -1.0, 1.0])
    best, info = fit(jax.random.key(2), params, loss, train, val, max_epochs=4, patience=None,
                     progress=False)
    assert info.diverged.tolist() == [False, True, False]
    assert info.epochs.tolist() == [4, 1, 4]
    assert np.isinf(info.best_validation_loss[1])
    assert np.all(np.isnan(info.validation_loss[1:, 1]))
    # The diverged member keeps finite params (its initial ones: it never improved).
    assert np.all(np.isfinite(np.asarray(best["mu"][1])))
    np.testing.assert_array_equal(np.asarray(best["mu"][1]), np.asarray(params["mu"][1]))


def test_sharded_equals_unsharded(data):
    assert jax.device_count() >= 2, "conftest asks for 4 CPU devices"
    train, val = data
    params = stack_members(jax.random.key(1), init_gauss, 4)
    kw = dict(max_epochs=6, patience=None, progress=False)
    a, ia = fit(jax.random.key(2), params, gauss_loss, train, val, shard=True, **kw)
    b, ib = fit(jax.random.key(2), params, gauss_loss, train, val, shard=False, **kw)
    assert ia.sharded == (True,) and ib.sharded == (False,)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ia.validation_loss, ib.validation_loss, rtol=1e-5)


def test_groups_train_together(data):
    train, val = data

    def scalar_loss(p, batch, key):
        del key
        return jnp.mean((batch["y"] - p["m"]) ** 2)

    g1 = stack_members(jax.random.key(1), init_gauss, 2)
    g2 = stack_members(jax.random.key(2), lambda k: {"m": jax.random.normal(k, ())}, 3)
    (p1, p2), info = fit(jax.random.key(3), [g1, g2], [gauss_loss, scalar_loss], train, val,
                         optimizer=optax.adam(0.05), max_epochs=150, patience=10,
                         progress=False)
    assert info.group.tolist() == [0, 0, 1, 1, 1]
    assert info.epoch_traces == 1
    y = np.asarray(train["y"])
    np.testing.assert_allclose(np.asarray(p2["m"]), y.mean(), atol=4 * y.std() / np.sqrt(y.size))
    assert np.all(np.abs(np.asarray(p1["mu"]) - y.mean(0)) < 4 * y.std(0) / np.sqrt(len(y)))


def test_same_key_same_result_and_inputs_untouched(data):
    train, val = data
    params = stack_members(jax.random.key(1), init_gauss, 2)
    before = jax.tree.map(np.asarray, params)
    a, _ = fit(jax.random.key(5), params, gauss_loss, train, val, max_epochs=3, progress=False)
    b, _ = fit(jax.random.key(5), params, gauss_loss, train, val, max_epochs=3, progress=False)
    c, _ = fit(jax.random.key(6), params, gauss_loss, train, val, max_epochs=3, progress=False)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.allclose(np.asarray(a["mu"]), np.asarray(c["mu"]))
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(x, np.asarray(y))  # not donated away


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"patience": 0}, "patience"),
        ({"validation_fraction": 1.5}, "validation_fraction"),
    ],
)
def test_bad_options_raise(data, kwargs, match):
    train, _ = data
    params = stack_members(jax.random.key(1), init_gauss, 1)
    with pytest.raises(ValueError, match=match):
        fit(jax.random.key(0), params, gauss_loss, train, progress=False, **kwargs)


def test_unstacked_params_raise(data):
    train, _ = data
    with pytest.raises(ValueError, match="leading ensemble axis"):
        fit(jax.random.key(0), {"mu": jnp.zeros(2), "log_sigma": jnp.zeros(3)}, gauss_loss,
            train, progress=False)


def test_odd_ensemble_is_padded_for_sharding_and_matches(data):
    assert jax.device_count() == 4
    train, val = data
    params = stack_members(jax.random.key(1), init_gauss, 5)
    kw = dict(max_epochs=4, patience=None, progress=False)
    a, ia = fit(jax.random.key(2), params, gauss_loss, train, val, shard=True, **kw)
    b, ib = fit(jax.random.key(2), params, gauss_loss, train, val, shard=False, **kw)
    assert ia.sharded == (True,)
    assert ia.epochs.tolist() == [4] * 5 and ia.train_loss.shape == (4, 5)
    assert a["mu"].shape == (5, 2)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_a_lone_member_is_not_sharded_by_default(data):
    # Padding one member to one copy per device would multiply the work for nothing.
    train, val = data
    kw = dict(max_epochs=2, patience=None, progress=False)
    _, one = fit(jax.random.key(2), stack_members(jax.random.key(1), init_gauss, 1), gauss_loss,
                 train, val, **kw)
    _, two = fit(jax.random.key(2), stack_members(jax.random.key(1), init_gauss, 2), gauss_loss,
                 train, val, **kw)
    assert one.sharded == (False,) and two.sharded == (True,)
