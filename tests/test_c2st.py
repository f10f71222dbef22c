"""Classifier two-sample test: null calibration, power against the Bayes rate, separable sets,
batching, determinism and input validation.

Bounds are binomial (see STYLE.md 9.7). Every test sample is held out exactly once across the
folds, so with N = n_p + n_q pooled draws the accuracy is an average of N held-out 0/1 outcomes:
its Monte Carlo standard deviation is at most sqrt(acc (1 - acc) / N).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

import ilijax
from ilijax.diagnostics import C2STResult, c2st

N = 1000  # draws per set; 2N pooled


def _gaussians(key, shift, *, n=N, dim=2, batch=()):
    kp, kq = jax.random.split(key)
    p = jax.random.normal(kp, (*batch, n, dim))
    q = jax.random.normal(kq, (*batch, n, dim)).at[..., 0].add(shift)
    return p, q


@pytest.fixture(scope="module")
def main_batch():
    """One compiled call for the three statistical checks: rows 0-3 are four independent
    same-distribution pairs, row 4 a 1-sd mean shift, row 5 a 10-sd shift (2-D Gaussians)."""
    shifts = jnp.array([0.0, 0.0, 0.0, 0.0, 1.0, 10.0])
    kp, kq = jax.random.split(jax.random.key(0))
    p = jax.random.normal(kp, (6, N, 2))
    q = jax.random.normal(kq, (6, N, 2)).at[..., 0].add(shifts[:, None])
    return c2st(jax.random.key(1), p, q)


def test_same_distribution_is_at_chance(main_batch):
    # Under the null every classifier, however overfit, is independent of the fold it is scored
    # on, so each held-out prediction is right with probability <= 1/2 (a little below: the
    # training part's label imbalance is the mirror image of the held-out fold's, and a
    # classifier that learns the training majority is biased towards the held-out minority).
    # Upper bound: 4 binomial sd. Lower bound: 4 sd plus 0.025 for that fold-composition effect
    # (held-out folds of 400 draws have a label-count sd of ~9, i.e. ~0.02 of accuracy).
    sd = math.sqrt(0.25 / (2 * N))
    acc = np.asarray(main_batch.accuracy[:4])
    assert np.all(acc < 0.5 + 4 * sd), acc
    assert np.all(acc > 0.5 - 4 * sd - 0.025), acc
    # the four replicates are independent: their mean is within 4 sd / 2 of 1/2 (same margins)
    assert 0.5 - 2 * sd - 0.025 < acc.mean() < 0.5 + 2 * sd, acc


def test_mean_shift_reaches_bayes_accuracy(main_batch):
    # N(0, I) vs N(e1, I): the Bayes classifier thresholds x1 at 1/2 and is right with
    # probability Phi(1/2) = 0.691. Held-out accuracy cannot beat it beyond binomial noise; a
    # small MLP trained on 1600 draws loses at most a little (allowed: 0.02).
    bayes = float(norm.cdf(0.5))
    sd = math.sqrt(bayes * (1 - bayes) / (2 * N))
    acc = float(main_batch.accuracy[4])
    assert bayes - 4 * sd - 0.02 < acc < bayes + 4 * sd, acc


def test_disjoint_sets_are_separable(main_batch):
    # 10 sd apart: Bayes accuracy 1 - Phi(-5) > 0.9999997
    assert float(main_batch.accuracy[5]) > 0.99, main_batch
    assert np.all(np.asarray(main_batch.fold_accuracy[5]) > 0.98), main_batch


def test_main_batch_fields(main_batch):
    assert isinstance(main_batch, C2STResult)
    assert main_batch.accuracy.shape == (6,)
    assert main_batch.fold_accuracy.shape == (6, 5)
    assert main_batch.epochs.shape == (6, 5)
    np.testing.assert_allclose(main_batch.accuracy, main_batch.fold_accuracy.mean(-1), rtol=1e-6)
    # sklearn's stopping rule ends training long before the cap on these easy problems
    assert np.all((np.asarray(main_batch.epochs) > 10) & (np.asarray(main_batch.epochs) < 500))


def test_result_fields_and_determinism():
    p, q = _gaussians(jax.random.key(6), 1.0, n=200)
    res = c2st(jax.random.key(7), p, q, folds=3, epochs=30)
    assert isinstance(res, C2STResult)
    assert res.accuracy.shape == ()
    assert res.fold_accuracy.shape == (3,)
    assert res.epochs.shape == (3,)
    np.testing.assert_allclose(res.accuracy, jnp.mean(res.fold_accuracy), rtol=1e-6)
    assert np.all((np.asarray(res.epochs) >= 1) & (np.asarray(res.epochs) <= 30))
    # settings other than shapes, folds, hidden and batch_size do not recompile
    again = c2st(jax.random.key(7), p, q, folds=3, epochs=30, learning_rate=1e-3, tol=1e-4)
    np.testing.assert_array_equal(res.fold_accuracy, again.fold_accuracy)
    assert ilijax.diagnostics.c2st is c2st


def test_batch_entries_match_single_calls():
    p, q = _gaussians(jax.random.key(8), 1.0, n=200, batch=(2,))
    res = c2st(jax.random.key(9), p, q, folds=3, epochs=20)
    assert res.accuracy.shape == (2,)
    assert res.fold_accuracy.shape == (2, 3)
    keys = jax.random.split(jax.random.key(9), 2)
    for i in range(2):
        one = c2st(keys[i], p[i], q[i], folds=3, epochs=20)
        # batched and single matmuls may round differently; a handful of held-out draws near
        # the decision boundary can flip (each is 1/133 of a fold's accuracy)
        np.testing.assert_allclose(one.fold_accuracy, res.fold_accuracy[i], atol=0.03)
        np.testing.assert_array_equal(one.epochs, res.epochs[i])


def test_one_dimensional_unequal_sizes_and_no_z_score():
    kp, kq = jax.random.split(jax.random.key(10))
    p = 100.0 + 0.01 * jax.random.normal(kp, (500,))  # badly scaled: z-scoring matters
    q = 100.0 + 0.01 * jax.random.normal(kq, (300,)) + 0.05
    with pytest.warns(UserWarning, match=r"500 draws and samples_q 300.*= 0\.625, not 0\.5"):
        res = c2st(jax.random.key(11), p, q, epochs=100)
    assert float(res.accuracy) > 0.95, res
    # the epoch cap is respected
    assert int(jnp.max(res.epochs)) <= 100
    # without z-scoring the raw scale is still a valid input (no NaN), just a harder problem
    with pytest.warns(UserWarning, match="not balanced"):
        raw = c2st(jax.random.key(11), p, q, z_score=False, epochs=5)
    assert int(jnp.max(raw.epochs)) <= 5
    assert np.isfinite(float(raw.accuracy))


def test_constant_column_does_not_give_nan():
    p, q = _gaussians(jax.random.key(12), 1.0, n=200)
    p = p.at[:, 1].set(3.0)
    res = c2st(jax.random.key(13), p, q, folds=3, epochs=10)
    assert np.isfinite(float(res.accuracy))


@pytest.mark.parametrize(
    ("p_shape", "q_shape", "kwargs", "match"),
    [
        ((100, 2), (100, 3), {}, r"samples_q with the dimension of samples_p \(2\); got 3"),
        ((2, 100, 2), (3, 100, 2), {}, r"same batch shape; got \(2,\) and \(3,\)"),
        ((100, 2), (100, 2), {"folds": 1}, r"Expected folds to be an int >= 2; got 1"),
        ((2, 1), (1, 1), {"folds": 5}, r"Expected at least 5 draws in total for 5 folds; got 3"),
        ((100, 2), (100, 2), {"epochs": 0}, r"Expected epochs to be an int >= 1; got 0"),
        ((100, 2), (100, 2), {"hidden": 0}, r"Expected hidden to be an int >= 1; got 0"),
        ((), (100, 2), {}, r"Expected samples_p of shape \(\.\.\., n, dim\) or \(n,\); got"),
    ],
)
def test_bad_shapes_and_settings(p_shape, q_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        c2st(jax.random.key(0), np.zeros(p_shape), np.ones(q_shape), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        # an untrained classifier would read as a "perfect" 0.5
        ({"learning_rate": 0.0}, r"Expected learning_rate to be a finite float > 0; got 0\.0"),
        ({"learning_rate": -1e-3}, r"learning_rate to be a finite float > 0; got -0\.001"),
        ({"learning_rate": float("nan")}, r"learning_rate to be a finite float > 0; got nan"),
        ({"learning_rate": float("inf")}, r"learning_rate to be a finite float > 0; got inf"),
        ({"learning_rate": "1e-3"}, r"learning_rate to be a finite float > 0; got '1e-3'"),
        ({"l2": -1e-4}, r"Expected l2 to be a finite float >= 0; got -0\.0001"),
        ({"l2": float("inf")}, r"Expected l2 to be a finite float >= 0; got inf"),
        ({"tol": 0.0}, r"Expected tol to be a finite float > 0; got 0\.0"),
        ({"tol": float("nan")}, r"Expected tol to be a finite float > 0; got nan"),
        # floats were truncated silently, bools read as 1
        ({"folds": 2.5}, r"Expected folds to be an int >= 2; got 2\.5"),
        ({"folds": True}, r"Expected folds to be an int >= 2; got True"),
        ({"epochs": 10.0}, r"Expected epochs to be an int >= 1; got 10\.0"),
        ({"epochs": True}, r"Expected epochs to be an int >= 1; got True"),
        ({"batch_size": 50.0}, r"Expected batch_size to be an int >= 1; got 50\.0"),
        ({"patience": -1}, r"Expected patience to be an int >= 0; got -1"),
    ],
)
def test_bad_training_settings_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        c2st(jax.random.key(0), np.zeros((20, 2)), np.ones((20, 2)), **kwargs)


def test_valid_numpy_settings_and_equal_sizes_do_not_warn():
    # numpy ints and floats are valid settings; equal set sizes give no warning (warnings are
    # errors in this test suite)
    p, q = _gaussians(jax.random.key(14), 10.0, n=40)
    res = c2st(jax.random.key(15), p, q, folds=np.int64(2), epochs=np.int32(2),
               learning_rate=np.float32(1e-2), l2=0, tol=np.float64(1e-4), batch_size=20)
    assert res.fold_accuracy.shape == (2,) and int(jnp.max(res.epochs)) <= 2


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_draws(bad):
    p = np.zeros((100, 2), np.float32)
    q = np.ones((100, 2), np.float32)
    q[[3, 7], 1] = bad
    with pytest.raises(ValueError, match=r"Expected finite values in samples_q; got 2 rows"):
        c2st(jax.random.key(0), p, q)
