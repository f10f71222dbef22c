"""The training engine: early stopping, NaN handling, tracing, sharding, groups.

These tests use a Gaussian model with two parameters per member (no networks), so they are
fast and have known answers: the maximum-likelihood fit is the sample mean and deviation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ilijax import _devices as ilijax_devices
from ilijax import train as ilijax_train
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
    params = stack_members(jax.random.key(1), init_gauss, 5)  # 3 devices, padded to 6
    kw = dict(max_epochs=4, patience=None, progress=False)
    a, ia = fit(jax.random.key(2), params, gauss_loss, train, val, shard=True, **kw)
    b, ib = fit(jax.random.key(2), params, gauss_loss, train, val, shard=False, **kw)
    assert ia.sharded == (True,)
    assert ia.epochs.tolist() == [4] * 5 and ia.train_loss.shape == (4, 5)
    assert a["mu"].shape == (5, 2)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_shards_over_the_devices_that_minimise_the_work_per_device():
    # members per device first, then the padded total: no device count ever does less work
    # per device, and no idle padding copies where fewer devices do the same.
    split = ilijax_devices.split_count
    assert [split([n], 4) for n in range(1, 10)] == [1, 2, 3, 4, 3, 3, 4, 4, 3]
    assert split([2, 3], 4) == 3 and split([1, 1], 4) == 1 and split([4, 4], 4) == 4
    assert split([7], 1) == 1 and split([3], 2) == 2
    for sizes in ([1], [2], [5], [7], [2, 3], [6, 1]):
        k = split(sizes, 4)
        work = [sum(-(-n // j) for n in sizes) for j in range(1, 5)]
        assert work[k - 1] == min(work)


def test_a_lone_member_is_not_sharded_by_default(data):
    # Padding one member to one copy per device would multiply the work for nothing.
    train, val = data
    kw = dict(max_epochs=2, patience=None, progress=False)
    _, one = fit(jax.random.key(2), stack_members(jax.random.key(1), init_gauss, 1), gauss_loss,
                 train, val, **kw)
    _, two = fit(jax.random.key(2), stack_members(jax.random.key(1), init_gauss, 2), gauss_loss,
                 train, val, **kw)
    assert one.sharded == (False,) and two.sharded == (True,)


# Checkpoints and resume. One uninterrupted run and one run "killed" after its epoch-7
# checkpoint (an exception raised by on_checkpoint) are shared by the tests below. Members
# stop early at epochs 10, 12 and 10, after the kill.

class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def checkpointed(data):
    train, _ = data
    train = {"y": train["y"][:400]}
    params = stack_members(jax.random.key(1), init_gauss, 3)
    kw = dict(optimizer=optax.adam(0.1), max_epochs=40, patience=2, progress=False, shard=False)
    full_states = []
    full, full_info = fit(jax.random.key(2), params, gauss_loss, train, checkpoint_every=7,
                          on_checkpoint=full_states.append, **kw)
    kept = []

    def kill_at_7(state):
        kept.append(state)
        if state.epoch == 7:
            raise _Killed

    with pytest.raises(_Killed):
        fit(jax.random.key(2), params, gauss_loss, train, checkpoint_every=7,
            on_checkpoint=kill_at_7, **kw)
    return dict(train=train, params=params, kw=kw, full=full, full_info=full_info,
                full_states=full_states, kept=kept)


def test_checkpoints_are_host_snapshots_every_n_epochs_and_at_the_end(checkpointed):
    c = checkpointed
    info, states = c["full_info"], c["full_states"]
    # Early stops after the kill, the last one between two checkpoints.
    assert info.epochs.tolist() == [10, 12, 10]
    assert [s.epoch for s in states] == [7, 12]
    assert [s.epoch for s in c["kept"]] == [7]
    final = states[-1]
    assert all(isinstance(leaf, np.ndarray | int) for leaf in jax.tree.leaves(final))
    np.testing.assert_array_equal(final.validation_loss, info.validation_loss)
    np.testing.assert_array_equal(final.groups[0].epochs, info.epochs)
    assert not final.groups[0].active.any()
    for a, b in zip(jax.tree.leaves(final.groups[0].best_params), jax.tree.leaves(c["full"]),
                    strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    # The killed run's last checkpoint is the uninterrupted run's state at the same epoch.
    for a, b in zip(jax.tree.leaves(c["kept"][-1]), jax.tree.leaves(states[0]), strict=True):
        np.testing.assert_array_equal(a, b)
    # Arrays round trip (what the pipeline writes with np.savez).
    back = ilijax_train.state_from_arrays(ilijax_train.state_to_arrays(final), final)
    assert jax.tree.structure(back) == jax.tree.structure(final)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(final), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resume_trains_the_remaining_epochs_and_ends_as_the_uninterrupted_run(
    checkpointed, tmp_path
):
    c = checkpointed
    path = tmp_path / "state.npz"
    np.savez(path, **ilijax_train.state_to_arrays(c["kept"][-1]))
    with np.load(path, allow_pickle=False) as f:
        arrays = dict(f)
    before = {k: v.copy() for k, v in arrays.items()}
    seen = []
    resumed, info = fit(jax.random.key(2), c["params"], gauss_loss, c["train"],
                        checkpoint_every=1, on_checkpoint=lambda s: seen.append(s.epoch),
                        resume=arrays, **c["kw"])
    last = int(c["full_info"].epochs.max())
    assert seen == list(range(8, last + 1))  # only the epochs after the checkpoint
    assert info.start_epoch == 7 and info.epoch_traces == 1
    # Same random stream from epoch 8 on: bit-identical to the uninterrupted run on CPU.
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(c["full"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for field in ("train_loss", "validation_loss", "best_epoch", "epochs", "best_validation_loss"):
        np.testing.assert_array_equal(getattr(info, field), getattr(c["full_info"], field))
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, before[k])  # the caller's state is not donated away


def test_resume_on_another_device_layout_pads_and_matches(checkpointed):
    # The state holds no padding members: a state from an unsharded run resumes with the 3
    # members sharded over 3 of the 4 devices.
    c = checkpointed
    kw = {**c["kw"], "shard": True}
    resumed, info = fit(jax.random.key(2), c["params"], gauss_loss, c["train"],
                        resume=c["kept"][-1], **kw)
    assert info.sharded == (True,)
    np.testing.assert_array_equal(info.epochs, c["full_info"].epochs)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(c["full"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_resume_from_a_finished_run_trains_nothing(checkpointed):
    c = checkpointed
    called = []
    best, info = fit(jax.random.key(2), c["params"], gauss_loss, c["train"],
                     on_checkpoint=called.append, resume=c["full_states"][-1], **c["kw"])
    assert called == [] and info.epoch_traces == 0
    assert info.start_epoch == c["full_info"].epochs.max()
    for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(c["full"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ("members", r"Expected 2 member\(s\) in group 0 .*; got 3"),
        ("groups", r"with 2 params group\(s\); got 1"),
        ("structure", "missing leaves .*'extra'"),
        ("key", "same key"),
        ("rows", "same data"),
        ("not_a_state", "state_to_arrays"),
        ("shape", r"params\['mu'\] of shape \(3, 5\) .*; got \(3, 2\)"),
    ],
)
def test_resume_mismatch_raises(checkpointed, change, match):
    c = checkpointed
    params, train, state = c["params"], c["train"], c["kept"][-1]
    key, validation = jax.random.key(2), None
    resume = ilijax_train.state_to_arrays(state)
    if change == "members":
        params = jax.tree.map(lambda a: a[:2], params)
    elif change == "groups":
        params = [params, params]
    elif change == "structure":
        params = {**params, "extra": jnp.zeros(3)}
    elif change == "key":
        key = jax.random.key(3)
    elif change == "rows":
        validation = train  # 400 + 400 rows instead of the 360 + 40 split off by fit
    elif change == "not_a_state":
        resume = {"theta": np.zeros(3)}
    elif change == "shape":
        params = {"mu": jnp.zeros((3, 5)), "log_sigma": jnp.zeros((3, 2))}
    with pytest.raises(ValueError, match=match):
        fit(key, params, gauss_loss, train, validation, resume=resume, **c["kw"])


def test_bad_checkpoint_options_raise(checkpointed):
    c = checkpointed
    with pytest.raises(ValueError, match="Expected on_checkpoint .* with checkpoint_every"):
        fit(jax.random.key(0), c["params"], gauss_loss, c["train"], checkpoint_every=2,
            progress=False)
    with pytest.raises(ValueError, match="checkpoint_every >= 1 or None; got 0"):
        fit(jax.random.key(0), c["params"], gauss_loss, c["train"], checkpoint_every=0,
            on_checkpoint=print, progress=False)
    with pytest.raises(ValueError, match="resume to be a TrainState"):
        fit(jax.random.key(0), c["params"], gauss_loss, c["train"], resume=[1],
            progress=False)
