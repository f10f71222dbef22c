"""``fit``: the one training engine for every inference method.

Design (DESIGN.md, "fit"): ensemble members of one architecture are stacked on a leading axis and
trained with one ``jax.vmap``; architectures with different parameter trees are *groups*, all
trained inside the same compiled epoch function. One epoch is one ``lax.scan`` over minibatches.
Members stop independently: a member whose validation loss has not improved for ``patience``
epochs, or whose loss became NaN/inf, is frozen by a mask and keeps its best-validation params.
The epoch function is compiled once, ahead of time, and reused for every epoch; the host reads
back two small arrays per epoch (losses, for the progress bar and the stopping test) and nothing
inside an epoch.

When several devices are present, the member axis of every group is sharded over a one-axis
mesh (``members``); a group whose size is not a multiple of the device count is padded with
inactive members. Every member's arithmetic is unchanged, so results equal the unsharded run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ilijax import data as _data

Array = jax.Array
Params = Any
LossFn = Callable[[Params, Any, Array], Array]

__all__ = ["FitInfo", "fit", "stack_members"]


class FitInfo(NamedTuple):
    """What happened during :func:`fit`, one column per ensemble member (groups concatenated).

    Attributes:
        train_loss: ``(epochs_run, num_members)`` mean training loss per epoch (NaN once a member
            stopped).
        validation_loss: ``(epochs_run, num_members)`` validation loss per epoch (NaN once
            stopped).
        best_validation_loss: ``(num_members,)`` the loss of the params that were kept.
        best_epoch: ``(num_members,)`` 1-based epoch of the kept params (0: none improved).
        epochs: ``(num_members,)`` epochs each member trained.
        diverged: ``(num_members,)`` True for members stopped by a NaN/inf loss.
        group: ``(num_members,)`` index of the group (architecture) of each member.
        compile_time: Seconds spent compiling the epoch function.
        train_time: Seconds spent training, compile excluded.
        epoch_traces: How often the epoch function was traced (1 unless something is wrong).
        sharded: Whether the ensemble axis was sharded over devices, per group.
    """

    train_loss: np.ndarray
    validation_loss: np.ndarray
    best_validation_loss: np.ndarray
    best_epoch: np.ndarray
    epochs: np.ndarray
    diverged: np.ndarray
    group: np.ndarray
    compile_time: float
    train_time: float
    epoch_traces: int
    sharded: tuple[bool, ...]


class _State(NamedTuple):
    params: Params
    opt_state: Any
    best_params: Params
    best_val: Array  # (K,)
    best_epoch: Array  # (K,) int32
    since_best: Array  # (K,) int32
    active: Array  # (K,) bool
    diverged: Array  # (K,) bool
    epochs: Array  # (K,) int32


def stack_members(key: Array, init: Callable[[Array], Params], num_members: int) -> Params:
    """Initialises ``num_members`` members with independent keys, stacked on axis 0."""
    return jax.vmap(init)(jax.random.split(key, num_members))


def _num_members(params: Params) -> int:
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("Expected params with at least one array leaf; got an empty pytree")
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "Expected every params leaf stacked on a leading ensemble axis of one size; got "
            f"leading sizes {sorted(str(s) for s in sizes)} (use stack_members)"
        )
    return sizes.pop()


def _check_rows(data: Any, name: str) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError(f"Expected {name} data with at least one array; got {data!r}")
    rows = {np.shape(leaf)[0] for leaf in leaves}
    if len(rows) != 1:
        raise ValueError(f"Expected all {name} arrays to have the same number of rows; got {rows}")
    n = rows.pop()
    if n < 1:
        raise ValueError(f"Expected at least 1 row of {name} data; got 0")
    return n


def _chunked_mean_loss(loss: LossFn, params: Params, data: Any, key: Array, chunk: int) -> Array:
    """Mean of ``loss`` over all rows of ``data``, evaluated in chunks of at most ``chunk`` rows
    (a ``lax.map`` over full chunks plus one remainder call), weighted by chunk size."""
    n = jax.tree.leaves(data)[0].shape[0]
    if n <= chunk:
        return loss(params, data, key)
    full, rest = divmod(n, chunk)
    head = jax.tree.map(lambda a: a[: full * chunk].reshape(full, chunk, *a.shape[1:]), data)
    keys = jax.random.split(key, full + 1)
    means = jax.lax.map(lambda args: loss(params, args[0], args[1]), (head, keys[:full]))
    total = jnp.sum(means) * chunk
    if rest:
        tail = jax.tree.map(lambda a: a[full * chunk:], data)
        total = total + loss(params, tail, keys[full]) * rest
    return total / n


def fit(
    key: Array,
    params: Params | Sequence[Params],
    loss: LossFn | Sequence[LossFn],
    train: Any,
    validation: Any | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 5e-4,
    batch_size: int = 50,
    validation_fraction: float = 0.1,
    max_epochs: int = 1000,
    patience: int | None = 20,
    clip_norm: float | None = 5.0,
    progress: bool = True,
    shard: bool | None = None,
    validation_chunk: int = 8192,
) -> tuple[Params | list[Params], FitInfo]:
    """Trains stacked ensemble members (one or several groups) by minibatch gradient descent.

    Args:
        key: PRNG key for the split, the per-member shuffles and the loss keys.
        params: Stacked member params (leading axis = members, see :func:`stack_members`), or a
            list of them, one per group (architecture).
        loss: ``loss(params, batch, key) -> scalar`` for one member's params and one minibatch
            (a pytree of arrays whose leading axis is rows), or a list matching ``params``.
        train: Training data, a pytree of arrays with a common leading axis (e.g. a
            :class:`ilijax.data.Dataset`).
        validation: Validation data of the same structure; if ``None`` it is split off ``train``
            with ``validation_fraction``.
        optimizer: Any optax optimizer (default ``optax.adam(learning_rate)``). Gradients are
            clipped to global norm ``clip_norm`` before it.
        learning_rate: Used only when ``optimizer`` is ``None`` (ltu-ili default 5e-4).
        batch_size: Minibatch rows (ltu-ili default 50). Each member shuffles the training rows
            every epoch; the ``n % batch_size`` rows left over change from epoch to epoch.
        validation_fraction: Share of rows held out when ``validation`` is ``None``.
        max_epochs: Upper bound on epochs.
        patience: Epochs without validation improvement before a member stops (ltu-ili/sbi
            default 20); ``None`` trains every member for ``max_epochs``.
        clip_norm: Global-norm gradient clipping (default 5.0, as sbi); ``None`` disables it.
        progress: Show a progress bar (epochs, best validation loss, members still training).
        shard: Shard the member axis over devices; ``None`` does so when more than one device
            is present and there is more than one member (groups are padded to a multiple of
            the device count).
        validation_chunk: Rows per call when evaluating the validation loss.

    Returns:
        ``(params, info)``: the best-validation params of each member (same structure as the
        input: one stacked pytree, or a list per group) and a :class:`FitInfo`.
    """
    single = not isinstance(params, list | tuple)
    groups = [params] if single else list(params)
    losses = [loss] * len(groups) if callable(loss) else list(loss)
    if len(losses) != len(groups):
        raise ValueError(f"Expected one loss per params group ({len(groups)}); got {len(losses)}")
    sizes = [_num_members(g) for g in groups]
    if batch_size < 1 or max_epochs < 1:
        raise ValueError(
            f"Expected batch_size >= 1 and max_epochs >= 1; got {batch_size} and {max_epochs}"
        )
    if patience is not None and patience < 1:
        raise ValueError(f"Expected patience >= 1 or None; got {patience}")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"Expected 0 < validation_fraction < 1; got {validation_fraction}")

    key_split, key_fit = jax.random.split(key)
    train = jax.tree.map(jnp.asarray, train)
    if validation is None:
        train, validation = _data.split(key_split, train, validation_fraction)
    validation = jax.tree.map(jnp.asarray, validation)
    n_train = _check_rows(train, "training")
    _check_rows(validation, "validation")
    batch = min(batch_size, n_train)
    num_batches = n_train // batch

    tx = optimizer if optimizer is not None else optax.adam(learning_rate)
    if clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
    patience_ = np.iinfo(np.int32).max if patience is None else int(patience)

    devices = jax.devices()
    # A lone member gains nothing from a mesh (it would be padded to one copy per device and
    # run them all), so the default shards only ensembles.
    use_mesh = len(devices) > 1 and (bool(shard) if shard is not None else sum(sizes) > 1)
    # With a mesh, a group whose size is not a multiple of the device count is padded with
    # inactive copies of its first member (computed, never trained or returned), so that e.g.
    # 5 members still split 3 + 3 over 2 devices instead of running on one.
    padded = [-(-k // len(devices)) * len(devices) if use_mesh else k for k in sizes]

    def init_state(p, k_real):
        k = _num_members(p)
        # Fresh buffers: the epoch function donates its state, and params/best_params must not
        # alias each other or the caller's arrays.
        p = jax.tree.map(lambda a: jnp.array(a, copy=True), p)
        return _State(
            params=p,
            opt_state=jax.vmap(tx.init)(p),
            best_params=jax.tree.map(lambda a: jnp.array(a, copy=True), p),
            best_val=jnp.full((k,), jnp.inf, jnp.float32),
            best_epoch=jnp.zeros((k,), jnp.int32),
            since_best=jnp.zeros((k,), jnp.int32),
            active=jnp.arange(k) < k_real,
            diverged=jnp.zeros((k,), bool),
            epochs=jnp.zeros((k,), jnp.int32),
        )

    def member_epoch(loss_fn, p, opt_state, key, train, validation):
        k_perm, k_steps, k_val = jax.random.split(key, 3)
        idx = jax.random.permutation(k_perm, n_train)[: num_batches * batch]
        idx = idx.reshape(num_batches, batch)

        def step(carry, inp):
            p, opt_state = carry
            rows, k = inp
            mb = jax.tree.map(lambda a: a[rows], train)
            value, grads = jax.value_and_grad(loss_fn)(p, mb, k)
            updates, opt_state = tx.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), value

        (p, opt_state), values = jax.lax.scan(
            step, (p, opt_state), (idx, jax.random.split(k_steps, num_batches))
        )
        val = _chunked_mean_loss(loss_fn, p, validation, k_val, validation_chunk)
        return p, opt_state, jnp.mean(values), val

    traces = [0]

    def epoch(states, key, epoch_index, train, validation):
        traces[0] += 1  # runs only while tracing: counts compilations of the epoch
        new_states, train_losses, val_losses = [], [], []
        for g, (s, loss_fn) in enumerate(zip(states, losses, strict=True)):
            gkey = jax.random.fold_in(key, g)
            keys = jax.random.split(gkey, sizes[g])
            if padded[g] > sizes[g]:
                extra = jax.random.split(jax.random.fold_in(gkey, 2**31 - 1),
                                         padded[g] - sizes[g])
                keys = jnp.concatenate([keys, extra])
            p, o, tl, vl = jax.vmap(
                lambda p, o, k, f=loss_fn: member_epoch(f, p, o, k, train, validation)
            )(s.params, s.opt_state, keys)
            finite = jnp.isfinite(tl) & jnp.isfinite(vl)
            improved = s.active & finite & (vl < s.best_val)
            diverged = s.diverged | (s.active & ~finite)

            def pick(mask, a, b):
                return jax.tree.map(
                    lambda x, y: jnp.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, y),
                    a, b,
                )

            best_params = pick(improved, p, s.best_params)
            # Frozen members keep their params; a diverged one falls back to its best params.
            params = pick(s.active & finite, p, pick(diverged, best_params, s.params))
            opt_state = pick(s.active & finite, o, s.opt_state)
            since = jnp.where(improved, 0, s.since_best + s.active.astype(jnp.int32))
            new_states.append(_State(
                params=params,
                opt_state=opt_state,
                best_params=best_params,
                best_val=jnp.where(improved, vl, s.best_val),
                best_epoch=jnp.where(improved, epoch_index + 1, s.best_epoch),
                since_best=since,
                active=s.active & finite & (since < patience_),
                diverged=diverged,
                epochs=s.epochs + s.active.astype(jnp.int32),
            ))
            train_losses.append(jnp.where(s.active, tl, jnp.nan)[: sizes[g]])
            val_losses.append(jnp.where(s.active, vl, jnp.nan)[: sizes[g]])
        return tuple(new_states), jnp.concatenate(train_losses), jnp.concatenate(val_losses)

    states = tuple(
        init_state(_pad_members(g, kp), k) for g, k, kp in zip(groups, sizes, padded, strict=True)
    )
    states, sharded, data = _maybe_shard(states, use_mesh, (train, validation))
    train, validation = data

    t0 = time.perf_counter()
    compiled = (
        jax.jit(epoch, donate_argnums=0)
        .lower(states, key_fit, jnp.int32(0), train, validation)
        .compile()
    )
    compile_time = time.perf_counter() - t0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_epochs, desc="fit", unit="epoch", leave=True)
    history_t, history_v = [], []
    t0 = time.perf_counter()
    for e in range(max_epochs):
        states, tl, vl = compiled(
            states, jax.random.fold_in(key_fit, e), jnp.int32(e), train, validation
        )
        pairs = list(zip(states, sizes, strict=True))
        still = np.concatenate([np.asarray(s.active)[:k] for s, k in pairs])
        history_t.append(np.asarray(tl))
        history_v.append(np.asarray(vl))
        if bar is not None:
            best = min(float(np.min(np.asarray(s.best_val)[:k])) for s, k in pairs)
            bar.set_postfix(best_val=f"{best:.4g}", training=f"{int(still.sum())}/{still.size}")
            bar.update(1)
        if not still.any():
            break
    jax.block_until_ready(states)
    train_time = time.perf_counter() - t0
    if bar is not None:
        bar.close()

    def host(field):
        return np.concatenate(
            [np.asarray(getattr(s, field))[:k] for s, k in zip(states, sizes, strict=True)]
        )

    info = FitInfo(
        train_loss=np.stack(history_t),
        validation_loss=np.stack(history_v),
        best_validation_loss=host("best_val"),
        best_epoch=host("best_epoch"),
        epochs=host("epochs"),
        diverged=host("diverged"),
        group=np.concatenate([np.full(k, g) for g, k in enumerate(sizes)]),
        compile_time=compile_time,
        train_time=train_time,
        epoch_traces=traces[0],
        sharded=tuple(sharded),
    )
    best = [
        jax.tree.map(lambda a, k=k: a[:k], s.best_params)
        for s, k in zip(states, sizes, strict=True)
    ]
    return (best[0] if single else best), info


def _pad_members(params: Params, num: int) -> Params:
    """Appends copies of member 0 until there are ``num`` members."""
    k = _num_members(params)
    if num == k:
        return params
    return jax.tree.map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[:1], num - k, axis=0)]), params
    )


def _maybe_shard(states, use_mesh, data):
    """Places each group's (padded) member axis on a one-axis device mesh (``members``) and
    replicates the data on every device."""
    if not use_mesh:
        return states, [False] * len(states), data
    mesh = Mesh(np.asarray(jax.devices()), ("members",))
    spec = NamedSharding(mesh, PartitionSpec("members"))
    out = tuple(jax.tree.map(lambda a: jax.device_put(a, spec), s) for s in states)
    replicated = NamedSharding(mesh, PartitionSpec())
    return out, [True] * len(states), jax.tree.map(lambda a: jax.device_put(a, replicated), data)
