"""fit's training schedules (issue 14): the default cosine run and sbi's constant rate, in the
Python API and in the pipeline's configs.

The model is test_train.py's Gaussian with two parameters per member (no networks), so a run is
fast and its optimum is known.
"""

import jax
import numpy as np
import optax
import pytest
from test_train import gauss_loss, init_gauss  # the known-answer Gaussian model

from ilijax import pipeline
from ilijax.pipeline import ltu_ili
from ilijax.train import cosine_epochs, fit, stack_members


@pytest.fixture(scope="module")
def data():
    y = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (2000, 2))
    return {"y": y[:1600]}, {"y": y[1600:]}


def test_cosine_epochs_give_the_step_budget_within_bounds():
    # 9,000 training rows (10^4 with 10% held out), batch 50: 180 steps an epoch, 223 epochs
    assert cosine_epochs(9000, 50) == 223
    for n, b in [(9000, 50), (4500, 50), (20_000, 200)]:
        e = cosine_epochs(n, b)
        assert (e - 1) * (n // b) < 40_000 <= e * (n // b)  # the fewest epochs reaching it
    assert cosine_epochs(90_000, 50) == 50  # 1,800 steps an epoch: the lower bound
    assert cosine_epochs(900, 50) == 2000  # 18 steps an epoch: the upper bound
    assert cosine_epochs(30, 50) == 2000  # fewer rows than a batch: one step an epoch


def test_default_is_a_cosine_decay_over_every_epoch(data):
    train, val = data
    rates = []

    def adam(rate):  # the factory form: fit calls it with the schedule
        rates.append(rate)
        return optax.adam(rate)

    params = stack_members(jax.random.key(1), init_gauss, 2)
    best, info = fit(jax.random.key(2), params, gauss_loss, train, val, optimizer=adam,
                     batch_size=400, max_epochs=30, progress=False)
    # no early stopping: every member runs all 30 epochs of 4 steps
    assert list(info.epochs) == [30, 30]
    (rate,) = rates
    np.testing.assert_allclose(rate(0), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(rate(60), 1e-3 * (0.01 + 0.99 * 0.5), rtol=1e-5)  # half way
    np.testing.assert_allclose(rate(120), 1e-5, rtol=1e-5)  # the end: 1% of the peak
    # best-validation params are returned, as with early stopping
    for k in range(2):
        member = jax.tree.map(lambda a, k=k: a[k], best)
        np.testing.assert_allclose(float(gauss_loss(member, val, None)),
                                   np.nanmin(info.validation_loss[:, k]), rtol=1e-5)


def test_default_epochs_follow_the_data_size(data):
    train, val = data
    params = stack_members(jax.random.key(1), init_gauss, 1)
    # 1,600 rows in batches of 800: 2 steps an epoch, so the default run is the 2,000-epoch cap
    _, info = fit(jax.random.key(2), params, gauss_loss, train, val, batch_size=800,
                  progress=False)
    assert int(info.epochs[0]) == cosine_epochs(1600, 800) == 2000


def test_constant_schedule_stops_early_as_sbi(data):
    train, val = data
    params = stack_members(jax.random.key(1), init_gauss, 2)
    rates = []
    _, info = fit(jax.random.key(2), params, gauss_loss, train, val, schedule="constant",
                  optimizer=lambda r: rates.append(r) or optax.adam(50 * r),
                  batch_size=400, progress=False)
    assert rates == [5e-4]  # its default rate, handed to the factory
    # patience 20 by default: each member stops 20 epochs after its best one, far below 1000
    assert np.all(info.epochs == info.best_epoch + 20)
    assert info.epochs.max() < 1000


def test_a_given_optimizer_keeps_the_constant_defaults(data):
    train, val = data
    params = stack_members(jax.random.key(1), init_gauss, 1)
    _, info = fit(jax.random.key(2), params, gauss_loss, train, val,
                  optimizer=optax.adam(0.05), batch_size=400, progress=False)
    assert int(info.epochs[0]) == int(info.best_epoch[0]) + 20


def _resolved(raw):
    return pipeline.validate_config(raw).inference.train


def test_pipeline_schedules_and_their_defaults():
    t = _resolved({})
    assert (t.schedule, t.learning_rate, t.stop_after_epochs) == ("cosine", 1e-3, None)
    # a native file that sets an ltu-ili rate or patience trains as ltu-ili
    t = _resolved({"inference": {"train": {"learning_rate": 2e-4}}})
    assert (t.schedule, t.learning_rate, t.stop_after_epochs) == ("constant", 2e-4, 20)
    t = _resolved({"inference": {"train": {"stop_after_epochs": 5}}})
    assert (t.schedule, t.learning_rate, t.stop_after_epochs) == ("constant", 5e-4, 5)
    # the sequential methods: constant rounds
    assert _resolved({"inference": {"method": "snle"}}).schedule == "constant"
    # an explicit schedule wins; stop_after_epochs null still means no early stopping
    t = _resolved({"inference": {"train": {"schedule": "constant",
                                           "stop_after_epochs": None}}})
    assert (t.schedule, t.stop_after_epochs) == ("constant", None)
    # the written config reads back as the same training
    for raw in ({}, {"inference": {"train": {"learning_rate": 2e-4}}}):
        cfg = pipeline.validate_config(raw)
        again = pipeline.validate_config(cfg.to_dict()).inference.train
        assert again == cfg.inference.train
    # an ltu-ili file, with or without train_args, keeps sbi's constant rate
    for train_args in ({}, {"learning_rate": 1e-3}):
        got = ltu_ili.convert("inference", {"model": {"engine": "NPE", "nets": [
            {"model": "maf"}]}, "train_args": train_args}, "inf.yaml")
        assert got["inference"]["train"]["schedule"] == "constant"
