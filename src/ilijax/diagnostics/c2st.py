"""Classifier two-sample test (C2ST): can a classifier tell two sets of draws apart?

A classifier is trained to separate draws from ``p`` (label 0) from draws from ``q`` (label 1),
and its accuracy on held-out draws is the statistic (Lopez-Paz & Oquab 2017). With balanced
sets, 0.5 means the classifier cannot tell them apart (indistinguishable at this sample size) and
1.0 means the sets are fully separable. This is the headline metric of sbibm (Lueckmann et al.
2021), where ``p`` holds reference posterior draws and ``q`` an algorithm's draws for one
observation.

The defaults follow sbibm's ``c2st`` (``sbibm/metrics/c2st.py``): z-score both sets with the
mean and (unbiased) standard deviation of ``samples_p``; classify with an MLP of two hidden
layers of ``10 * dim`` ReLU units and a logistic output, trained as scikit-learn's
``MLPClassifier`` trains it (Adam, learning rate 1e-3, minibatches of ``min(200, n)``, L2 penalty
1e-4, Glorot-uniform initialisation, stop when the training loss has not improved by ``tol`` for
more than ``patience`` epochs); report the mean accuracy over shuffled K folds. Here the whole
cross-validation is one compiled program: the folds are ``jax.vmap``-ed, every epoch is a
``lax.scan`` over minibatches and the epochs are a ``lax.while_loop`` that ends when every fold
has met the stopping rule.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ilijax._checks import check_int, check_key
from ilijax.diagnostics._common import check_real

__all__ = ["C2STResult", "c2st"]


class C2STResult(NamedTuple):
    """Result of :func:`c2st`.

    Attributes:
        accuracy: ``(*batch)`` mean held-out accuracy over the folds; 0.5 for indistinguishable
            balanced sets, 1.0 for separable ones.
        fold_accuracy: ``(*batch, folds)`` held-out accuracy of each fold's classifier.
        epochs: ``(*batch, folds)`` epochs each fold's classifier trained before the stopping
            rule (or the ``epochs`` cap) ended it.
    """

    accuracy: jax.Array
    fold_accuracy: jax.Array
    epochs: jax.Array


def _as_samples(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim < 2:
        raise ValueError(f"Expected {name} of shape (..., n, dim) or (n,); got shape {a.shape}")
    if a.shape[-2] < 1:
        raise ValueError(f"Expected at least one draw in {name}; got shape {a.shape}")
    bad = ~np.isfinite(a).all(axis=-1)
    if bad.any():
        raise ValueError(
            f"Expected finite values in {name}; got {int(bad.sum())} rows with NaN or inf "
            f"(of {bad.size})"
        )
    return a


def c2st(
    key: jax.Array,
    samples_p,
    samples_q,
    *,
    folds: int = 5,
    hidden: int | None = None,
    epochs: int = 500,
    z_score: bool = True,
    learning_rate: float = 1e-3,
    batch_size: int = 200,
    l2: float = 1e-4,
    tol: float = 1e-4,
    patience: int = 10,
) -> C2STResult:
    """Classifier two-sample test accuracy between two sets of draws, cross-validated.

    The draws of both sets are pooled with labels 0 (``samples_p``) and 1 (``samples_q``),
    shuffled and split into ``folds`` folds. For each fold an MLP classifier is trained on the
    other folds and its accuracy (``logit > 0`` is label 1) is measured on the held-out one; the
    result is the mean over folds. With ``n_p == n_q`` chance is 0.5; otherwise it is
    ``max(n_p, n_q) / (n_p + n_q)``.

    Leading batch axes are allowed (``(..., n, dim)``, the same on both sets): e.g. the draws for
    10 observations are tested in one call. Every batch entry and every fold gets its own
    shuffle and initialisation, and is trained until its own stopping rule holds.

    Departures from sbibm/scikit-learn, all minor: ``(n_p + n_q) % folds`` draws (fewer than
    ``folds``) are always in the training part and never held out, so that every fold has the
    same static shape; each epoch uses ``floor(n_train / batch_size)`` full minibatches of a
    fresh shuffle (scikit-learn also runs the last, partial one); the epochs are capped at
    ``epochs`` (sbibm's cap is 10,000). The cap binds when the two sets are nearly the same in
    several dimensions: the classifier then overfits and its training loss keeps improving by
    more than ``tol`` (10,000 + 10,000 draws in 10-D hit 500 epochs here, and scikit-learn ran
    for over 20 minutes on the same data). Held-out accuracy is close to 0.5 either way.

    Args:
        key: PRNG key for the fold split, the initialisations and the minibatch shuffles.
        samples_p: ``(..., n_p, dim)`` draws of the first distribution (in sbibm, the reference
            posterior); they also provide the z-score statistics. ``(n_p,)`` means ``dim == 1``.
        samples_q: ``(..., n_q, dim)`` draws of the second distribution, same batch shape and
            ``dim`` as ``samples_p``.
        folds: Number of cross-validation folds (an int >= 2).
        hidden: Units in each of the two hidden layers (default ``10 * dim``, as sbibm).
        epochs: Upper bound on training epochs per fold (an int >= 1).
        z_score: Standardise both sets with the mean and standard deviation of ``samples_p``
            (a zero standard deviation is replaced by 1).
        learning_rate: Adam step size, finite and > 0 (scikit-learn default 1e-3).
        batch_size: Minibatch rows, ``min(batch_size, n_train)`` (scikit-learn default 200).
        l2: L2 penalty on the weights, ``0.5 * l2 * ||W||^2 / batch`` added to the mean
            log-loss, finite and >= 0 (scikit-learn's ``alpha``, default 1e-4).
        tol: Minimum decrease of the epoch's mean training loss that counts as an improvement
            (finite, > 0).
        patience: Training stops once more than ``patience`` epochs in a row brought no
            improvement (scikit-learn's ``n_iter_no_change``, default 10).

    Returns:
        A :class:`C2STResult` with ``accuracy`` ``(*batch)``, ``fold_accuracy`` and ``epochs``
        ``(*batch, folds)``.

    Raises:
        ValueError: For shape mismatches, non-finite draws, too few draws for ``folds`` or
            invalid settings (a float ``folds`` or ``epochs`` is not truncated, a non-finite or
            non-positive ``learning_rate`` or ``tol`` is rejected), saying what was expected and
            what was got.

    Warns:
        UserWarning: If ``n_p != n_q``: chance accuracy is then ``max(n_p, n_q) / (n_p + n_q)``,
            not 0.5 (the sets are not balanced here).

    Examples:
        >>> import jax
        >>> from ilijax.diagnostics import c2st
        >>> kp, kq = jax.random.split(jax.random.key(0))
        >>> p = jax.random.normal(kp, (500, 2))
        >>> q = jax.random.normal(kq, (500, 2)) + 3.0
        >>> res = c2st(jax.random.key(1), p, q)
        >>> bool(res.accuracy > 0.9), res.fold_accuracy.shape
        (True, (5,))

    References:
        Lopez-Paz & Oquab, "Revisiting Classifier Two-Sample Tests", ICLR 2017.
        Lueckmann, Boelts, Greenberg, Gonçalves, Macke, "Benchmarking Simulation-Based
        Inference", AISTATS 2021 (sbibm ``c2st``).
    """
    key = check_key(key)
    p = _as_samples(samples_p, "samples_p")
    q = _as_samples(samples_q, "samples_q")
    if p.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"Expected samples_q with the dimension of samples_p ({p.shape[-1]}); got "
            f"{q.shape[-1]} (shapes {p.shape} and {q.shape})"
        )
    if p.shape[:-2] != q.shape[:-2]:
        raise ValueError(
            f"Expected samples_p and samples_q with the same batch shape; got {p.shape[:-2]} "
            f"and {q.shape[:-2]}"
        )
    folds = check_int("folds", folds, 2)
    epochs = check_int("epochs", epochs, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    patience = check_int("patience", patience, 0)
    # an untrained (or diverging) classifier reads as a "perfect" 0.5: reject settings that
    # cannot train
    learning_rate = check_real("learning_rate", learning_rate, low=0.0)
    l2 = check_real("l2", l2, low=0.0, closed=True)
    tol = check_real("tol", tol, low=0.0)
    dim = p.shape[-1]
    hidden = 10 * dim if hidden is None else check_int("hidden", hidden, 1)
    n_p, n_q = p.shape[-2], q.shape[-2]
    n = n_p + n_q
    if n // folds < 1 or n - n // folds < 1:
        raise ValueError(
            f"Expected at least {folds} draws in total for {folds} folds; got {n} "
            f"({n_p} + {n_q})"
        )
    if n_p != n_q:
        warnings.warn(
            f"c2st: samples_p has {n_p} draws and samples_q {n_q}; they are not balanced, so "
            f"chance accuracy is max(n_p, n_q) / (n_p + n_q) = {max(n_p, n_q) / n:.3f}, not 0.5. "
            "Pass the same number of draws in both sets to compare with 0.5",
            UserWarning,
            stacklevel=2,
        )

    batch_shape = p.shape[:-2]
    size = math.prod(batch_shape)
    p = p.reshape(size, n_p, dim)
    q = q.reshape(size, n_q, dim)
    if z_score:
        # sbibm z-scores with torch.std (unbiased); a constant column is left unscaled
        mean = p.mean(axis=1, keepdims=True)
        std = p.std(axis=1, ddof=1, keepdims=True) if n_p > 1 else np.ones_like(mean)
        std = np.where(std > 0, std, 1.0).astype(np.float32)
        p, q = (p - mean) / std, (q - mean) / std
    # one key per batch entry, as Posterior.sample: entry i uses split(key, b)[i]
    keys = key[None] if not batch_shape else jax.random.split(key, size)
    acc, epochs_run = _c2st_batch(
        keys, jnp.asarray(p), jnp.asarray(q), jnp.int32(epochs), jnp.float32(learning_rate),
        jnp.float32(l2), jnp.float32(tol), jnp.int32(patience),
        folds=folds, hidden=hidden, batch_size=batch_size,
    )
    acc = acc.reshape(*batch_shape, folds)
    epochs_run = epochs_run.reshape(*batch_shape, folds)
    return C2STResult(jnp.mean(acc, axis=-1), acc, epochs_run)


# ----------------------------------------------------------------------------------------------
# the compiled part


def _init_mlp(key, sizes):
    # scikit-learn's MLP initialisation (`_init_coef`): weights and biases uniform in
    # +-sqrt(6 / (fan_in + fan_out)) for ReLU networks (the same factor for the output layer).
    # All layers come from one uniform draw: every PRNG call is a threefry hash that XLA compiles
    # separately, and separate draws per array took seconds of compile time.
    shapes = [((a, b), (b,)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    total = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    u = jax.random.uniform(key, (total,), jnp.float32, -1.0, 1.0)
    params, start = [], 0
    for (w_shape, b_shape), fan_in, fan_out in zip(shapes, sizes[:-1], sizes[1:], strict=True):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = u[start:start + fan_in * fan_out].reshape(w_shape) * bound
        start += fan_in * fan_out
        b = u[start:start + fan_out].reshape(b_shape) * bound
        start += fan_out
        params.append({"w": w, "b": b})
    return params


def _logits(params, z):
    h = z
    for layer in params[:-1]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    out = params[-1]
    return (h @ out["w"] + out["b"])[..., 0]


def _fold_indices(n: int, folds: int):
    # A shuffled split into `folds` equal test blocks of m = n // folds rows (positions
    # 0 .. folds*m - 1 of the permutation); training rows are the other blocks plus the
    # remainder positions folds*m .. n-1, which are never held out.
    m = n // folds
    k = np.arange(folds)[:, None]
    test = k * m + np.arange(m)[None, :]
    train = (k * m + m + np.arange((folds - 1) * m)[None, :]) % (folds * m)
    rest = np.broadcast_to(np.arange(folds * m, n)[None, :], (folds, n - folds * m))
    return test, np.concatenate([train, rest], axis=1)


@functools.partial(jax.jit, static_argnames=("folds", "hidden", "batch_size"))
def _c2st_batch(keys, p, q, max_epochs, learning_rate, l2, tol, patience, *, folds, hidden,
                batch_size):
    # Only the shapes, `folds`, `hidden` and `batch_size` are static: other settings are traced
    # scalars, so changing them does not recompile.
    n_p, n_q, dim = p.shape[1], q.shape[1], p.shape[2]
    n = n_p + n_q
    test_pos, train_pos = _fold_indices(n, folds)
    n_train = train_pos.shape[1]
    batch = min(batch_size, n_train)
    num_batches = n_train // batch
    sizes = (dim, hidden, hidden, 1)
    # Adam with b1 0.9, b2 0.999, eps 1e-8: scikit-learn's values
    tx = optax.adam(learning_rate)  # a traced scalar: tx is built inside the jit
    labels = jnp.concatenate([jnp.zeros(n_p, jnp.float32), jnp.ones(n_q, jnp.float32)])

    def loss_fn(params, z, y):
        logit = _logits(params, z)
        # mean binary log-loss (stable form) + scikit-learn's L2 term, scaled by the batch size
        log_loss = jnp.mean(jax.nn.softplus(logit) - y * logit)
        penalty = sum(jnp.sum(layer["w"] ** 2) for layer in params)
        return log_loss + 0.5 * l2 * penalty / z.shape[0]

    def train_fold(k_init, k_loop, z, y):
        params = _init_mlp(k_init, sizes)

        def step(carry, idx):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, z[idx], y[idx])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        def epoch(state):
            params, opt_state, best, since, count = state
            # a fresh shuffle per epoch: argsort of random bits (one PRNG call, see _init_mlp)
            bits = jax.random.bits(jax.random.fold_in(k_loop, count), (n_train,))
            idx = jnp.argsort(bits)[: num_batches * batch]
            (params, opt_state), losses = jax.lax.scan(
                step, (params, opt_state), idx.reshape(num_batches, batch)
            )
            loss = jnp.mean(losses)
            # scikit-learn `_update_no_improvement_count` (early_stopping=False)
            since = jnp.where(loss > best - tol, since + 1, 0)
            best = jnp.minimum(best, loss)
            return params, opt_state, best, since, count + 1

        def cond(state):
            return (state[3] <= patience) & (state[4] < max_epochs)

        state = (params, tx.init(params), jnp.float32(jnp.inf), jnp.int32(0), jnp.int32(0))
        params, *_, count = jax.lax.while_loop(cond, epoch, state)
        return params, count

    def one(key, p, q):
        data = jnp.concatenate([p, q])
        # one split for everything (each PRNG call costs compile time, see _init_mlp)
        ks = jax.random.split(key, 1 + 2 * folds)
        perm = jnp.argsort(jax.random.bits(ks[0], (n,)))
        test_idx, train_idx = perm[test_pos], perm[train_pos]

        def fold(k_init, k_loop, tr, te):
            params, count = train_fold(k_init, k_loop, data[tr], labels[tr])
            pred = (_logits(params, data[te]) > 0).astype(jnp.float32)
            return jnp.mean(pred == labels[te]), count

        return jax.vmap(fold)(ks[1:1 + folds], ks[1 + folds:], train_idx, test_idx)

    return jax.vmap(one)(keys, p, q)
