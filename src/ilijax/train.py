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
mesh (``members``) of ``k`` devices, ``k`` chosen to minimise the members per device and then
the padding (2 members on 4 devices use 2 of them, 5 use 3); a group whose size is not a
multiple of ``k`` is padded with inactive members. Every member's arithmetic is unchanged, so
results equal the unsharded run.

Checkpoints: ``fit(..., checkpoint_every=N, on_checkpoint=f)`` hands ``f`` a host-side
:class:`TrainState` (numpy arrays and ints, padding stripped) every ``N`` epochs and at the end;
``fit(..., resume=state)`` continues from it. ``fit`` itself writes no files (DESIGN.md): the
caller persists the state, without pickle, through :func:`state_to_arrays` (a flat dict of
arrays for ``np.savez``) and passes the loaded dict back as ``resume`` (or rebuilds a
:class:`TrainState` with :func:`state_from_arrays`)::

    def save(state):                       # e.g. in the pipeline, atomically
        with open(tmp, "wb") as f:         # a file object: np.savez(name) appends ".npz"
            np.savez(f, **ilijax.train.state_to_arrays(state))
        os.replace(tmp, path)

    params, info = fit(key, params, loss, data, checkpoint_every=10, on_checkpoint=save)
    # ... killed, restarted with the same key, data and options:
    with np.load(path) as f:
        params, info = fit(key, params, loss, data, checkpoint_every=10, on_checkpoint=save,
                           resume=dict(f))

The resumed run replays the same random stream from the next epoch, so it ends with the same
params as an uninterrupted run (bit for bit on CPU).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ilijax import _devices
from ilijax import data as _data
from ilijax._checks import check_float, check_int, check_key
from ilijax.estimators._base import is_frozen, trainable_mask

Array = jax.Array
Params = Any
LossFn = Callable[[Params, Any, Array], Array]

#: Training schedules of :func:`fit` (used when no ``optimizer`` is given).
SCHEDULES = ("cosine", "constant")

#: Minibatch steps of the default cosine run, and its bounds in epochs.
COSINE_STEPS, COSINE_MIN_EPOCHS, COSINE_MAX_EPOCHS = 40_000, 50, 2_000


def cosine_epochs(num_train: int, batch_size: int) -> int:
    """Epochs of the default ``"cosine"`` run: enough for 40,000 minibatch steps (the recipe
    measured on sbibm's tasks at 10^4 simulations, 222 epochs there), at least 50 epochs (large
    sets still see every row many times) and at most 2,000 (small sets: 10^3 rows give 2,000
    epochs of 18 steps)."""
    steps_per_epoch = max(1, num_train // max(1, min(batch_size, num_train)))
    epochs = -(-COSINE_STEPS // steps_per_epoch)
    return int(min(max(epochs, COSINE_MIN_EPOCHS), COSINE_MAX_EPOCHS))

__all__ = [
    "FitInfo",
    "GroupState",
    "SCHEDULES",
    "TrainState",
    "cosine_epochs",
    "fit",
    "stack_members",
    "state_from_arrays",
    "state_to_arrays",
]


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
        start_epoch: Epochs already done when this call began (``resume``); 0 for a fresh
            run. The loss histories and per-member counts include those epochs.
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
    start_epoch: int = 0


class GroupState(NamedTuple):
    """Training state of one group (architecture); every leaf has a leading member axis ``K``.

    Inside :func:`fit` the leaves are device arrays; in a :class:`TrainState` handed to
    ``on_checkpoint`` they are numpy arrays.

    Attributes:
        params: Current params of the members (stacked pytree).
        opt_state: Optimizer state (the gradient-clipping chain included), stacked.
        best_params: Params with the best validation loss so far, stacked.
        best_val: ``(K,)`` float32 best validation loss (``inf`` before any improvement).
        best_epoch: ``(K,)`` int32 1-based epoch of ``best_params`` (0: none yet).
        since_best: ``(K,)`` int32 epochs since the last improvement (the patience counter).
        active: ``(K,)`` bool, False once a member stopped (patience or divergence).
        diverged: ``(K,)`` bool, True for members stopped by a NaN/inf loss.
        epochs: ``(K,)`` int32 epochs each member trained.
    """

    params: Params
    opt_state: Any
    best_params: Params
    best_val: Array
    best_epoch: Array
    since_best: Array
    active: Array
    diverged: Array
    epochs: Array


class TrainState(NamedTuple):
    """Everything :func:`fit` needs to continue a run exactly, on the host.

    A pytree of numpy arrays and ints (no device arrays, no padding members), so it can be
    persisted without pickle: :func:`state_to_arrays` flattens it to a dict for ``np.savez``
    and :func:`state_from_arrays` (or ``fit(..., resume=arrays)``) restores it.

    Attributes:
        groups: One :class:`GroupState` per params group, members in input order.
        epoch: Epochs completed; a resumed run starts with epoch index ``epoch``.
        train_loss: ``(epoch, num_members)`` training-loss history (as :class:`FitInfo`).
        validation_loss: ``(epoch, num_members)`` validation-loss history.
        key: ``uint32`` key data of the stream the epochs draw from (epoch ``e`` uses
            ``fold_in(key, e)``); a resume must be called with the ``key`` that made it.
        num_train: Training rows of the run (checked on resume).
        num_validation: Validation rows of the run (checked on resume).
    """

    groups: tuple[GroupState, ...]
    epoch: int
    train_loss: np.ndarray
    validation_loss: np.ndarray
    key: np.ndarray
    num_train: int
    num_validation: int


_STATE_FORMAT_KEY = "__ilijax_train_state__"
_STATE_FORMAT = 1
_INT_FIELDS = ("epoch", "num_train", "num_validation")
_HISTORY_FIELDS = ("train_loss", "validation_loss")


def _named_leaves(tree: Any) -> tuple[list[str], list[Any], Any]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [jax.tree_util.keystr(path).lstrip(".") for path, _ in flat]
    return names, [leaf for _, leaf in flat], treedef


def state_to_arrays(state: TrainState) -> dict[str, np.ndarray]:
    """Flattens a :class:`TrainState` to named numpy arrays, e.g. for ``np.savez(path, **d)``.

    Names are the leaves' pytree paths (``"groups[0].params['w']"``, ``"epoch"``, ...) plus a
    format marker, so a file made from them needs no pickle to read back.

    Args:
        state: A state from ``fit``'s ``on_checkpoint``.

    Returns:
        A dict from leaf path to numpy array (the ints become 0-d int64 arrays).
    """
    if not isinstance(state, TrainState):
        raise ValueError(f"Expected a TrainState; got {type(state).__name__}")
    names, leaves, _ = _named_leaves(state)
    out = {_STATE_FORMAT_KEY: np.asarray(_STATE_FORMAT, np.int64)}
    for name, leaf in zip(names, leaves, strict=True):
        out[name] = np.asarray(leaf)
    return out


def _group_count(names: Any) -> int:
    found = [re.match(r"groups\[(\d+)\]", n) for n in names]
    return 1 + max((int(m.group(1)) for m in found if m), default=-1)


def _limited(items: Sequence[str], most: int = 5) -> str:
    items = sorted(items)
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def state_from_arrays(arrays: Mapping[str, Any], template: TrainState) -> TrainState:
    """Rebuilds a :class:`TrainState` from :func:`state_to_arrays` output, e.g. an ``np.load``.

    The template gives the tree structure (the optimizer's state classes); only its structure,
    leaf shapes and dtypes are used. A state from another run of the same set-up (e.g. the
    first ``on_checkpoint`` state) serves; ``fit(..., resume=arrays)`` builds its own template,
    so a restarted process does not need one.

    Args:
        arrays: Mapping from leaf path to array (a dict or an open ``np.load`` archive).
        template: A :class:`TrainState` (leaves may be arrays or ``jax.ShapeDtypeStruct``)
            with the structure expected.

    Returns:
        A :class:`TrainState` of numpy arrays (cast to the template's dtypes) and ints.

    Raises:
        ValueError: If the arrays are not a train state, or their groups, members, leaf
            names or shapes differ from the template's; the message names the first mismatch.
    """
    got_names = set(arrays.keys())
    if _STATE_FORMAT_KEY not in got_names:
        raise ValueError(
            f"Expected arrays from ilijax.train.state_to_arrays (with a {_STATE_FORMAT_KEY!r} "
            f"entry); got keys {_limited([str(k) for k in got_names])}"
        )
    fmt = int(np.asarray(arrays[_STATE_FORMAT_KEY]))
    if fmt != _STATE_FORMAT:
        raise ValueError(f"Expected train state format {_STATE_FORMAT}; got {fmt}")
    got_names.discard(_STATE_FORMAT_KEY)
    names, tleaves, treedef = _named_leaves(template)
    want_groups, got_groups = len(template.groups), _group_count(got_names)
    if got_groups != want_groups:
        raise ValueError(
            f"Expected a resume state with {want_groups} params group(s); got {got_groups}"
        )
    for g, gs in enumerate(template.groups):
        name = f"groups[{g}].active"
        if name in got_names:
            want, got = tuple(np.shape(gs.active)), np.shape(arrays[name])
            if want != got:
                raise ValueError(
                    f"Expected {want[0]} member(s) in group {g} of the resume state; got "
                    f"{got[0] if got else got}"
                )
    missing, extra = set(names) - got_names, got_names - set(names)
    if missing or extra:
        raise ValueError(
            "Expected a resume state with the structure of these params and optimizer; got "
            f"missing leaves [{_limited(missing)}] and unexpected leaves [{_limited(extra)}]"
        )
    leaves = []
    for name, t in zip(names, tleaves, strict=True):
        a = np.asarray(arrays[name])
        if name in _INT_FIELDS:
            if a.shape != () or a.dtype.kind not in "iu":
                raise ValueError(f"Expected {name} to be an integer scalar; got {a.dtype} "
                                 f"of shape {a.shape}")
            leaves.append(int(a))
            continue
        want = tuple(np.shape(t))
        if name in _HISTORY_FIELDS:
            if a.ndim != 2 or a.shape[1:] != want[1:]:
                raise ValueError(
                    f"Expected {name} of shape (epochs, {want[1]}); got {a.shape}"
                )
        elif a.shape != want:
            raise ValueError(f"Expected {name} of shape {want} in the resume state; got "
                             f"{a.shape}")
        leaves.append(a.astype(t.dtype, copy=False))
    state = jax.tree_util.tree_unflatten(treedef, leaves)
    for name in _HISTORY_FIELDS:
        rows = getattr(state, name).shape[0]
        if rows != state.epoch:
            raise ValueError(f"Expected {name} with one row per epoch ({state.epoch}); got "
                             f"{rows}")
    return state


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
    schedule: str = "cosine",
    learning_rate: float | None = None,
    batch_size: int = 50,
    validation_fraction: float = 0.1,
    max_epochs: int | None = None,
    patience: int | None | str = "auto",
    clip_norm: float | None = 5.0,
    progress: bool = True,
    shard: bool | None = None,
    validation_chunk: int = 8192,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    resume: TrainState | Mapping[str, Any] | None = None,
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
        optimizer: An optax optimizer, which replaces ``schedule`` and ``learning_rate`` (then
            ``max_epochs`` defaults to 1000 and ``patience`` to 20, as ``"constant"``); or a
            function of the rate, e.g. ``lambda lr: optax.adamw(lr, weight_decay=1e-4)``, called
            with the ``schedule``'s rate (an optax schedule for ``"cosine"``) in place of Adam.
            Gradients are clipped to global norm ``clip_norm`` before it. Leaves under an
            :class:`ilijax.estimators.Frozen` node (standardisation statistics) are constants:
            they get no update from the optimizer, weight decay included
            (``optax.multi_transform`` with ``optax.set_to_zero``), and no gradient.
        schedule: Training when ``optimizer`` is ``None``. ``"cosine"`` (the default): Adam
            with the rate decayed from ``learning_rate`` (default 1e-3) to 1% of it along a
            cosine (Loshchilov and Hutter 2017, "SGDR") over the whole run, every epoch run
            (``patience`` default ``None``) and each member's best-validation params kept; the
            run is ``max_epochs`` epochs, by default enough for 40,000 minibatch steps
            (:func:`cosine_epochs`: 222 epochs at 10^4 rows, batch 50), between 50 and 2,000
            epochs. ``"constant"``: sbi's and ltu-ili's training, Adam at ``learning_rate``
            (default 5e-4) with early stopping after ``patience`` (default 20) epochs without
            improvement, at most ``max_epochs`` (default 1000). The cosine schedule is the
            default because it wins on sbibm's tasks with every method (C2ST, in
            ``benchmarks/README.md``), at about the same training time at 10^4 simulations.
        learning_rate: The peak (``"cosine"``) or constant rate; ``None`` for the schedule's
            default. Ignored when ``optimizer`` is given.
        batch_size: Minibatch rows (ltu-ili default 50). Each member shuffles the training rows
            every epoch; the ``n % batch_size`` rows left over change from epoch to epoch.
        validation_fraction: Share of rows held out when ``validation`` is ``None``.
        max_epochs: Epochs (``"cosine"``: the length the rate decays over) or their upper
            bound (``"constant"``); ``None`` for the schedule's default.
        patience: Epochs without validation improvement before a member stops; ``None`` trains
            every member for ``max_epochs``; ``"auto"``: ``None`` with ``"cosine"`` (its low-rate
            end is where it gains), 20 otherwise (ltu-ili/sbi).
        clip_norm: Global-norm gradient clipping (default 5.0, as sbi); ``None`` disables it.
        progress: Show a progress bar (epochs, best validation loss, members still training):
            tqdm on a terminal or in a notebook; in a log file (not a terminal) whole lines,
            at most one every 10 s (``ILIJAX_PROGRESS_SECONDS``).
        shard: Shard the member axis over devices (``None`` or ``True``) or keep every member
            on one device (``False``). Sharding uses the number of devices ``k`` that minimises
            the members per device, then the padding (groups are padded to a multiple of
            ``k``); a lone member, gaining nothing from it, is never sharded.
        validation_chunk: Rows per call when evaluating the validation loss.
        checkpoint_every: Call ``on_checkpoint`` after every ``checkpoint_every``-th epoch
            (counted from the start of the run, resumes included); ``None``: only at the end.
        on_checkpoint: ``on_checkpoint(state)``, called on the host between epochs with a
            :class:`TrainState` snapshot (numpy copies, safe to keep), after the epochs chosen
            by ``checkpoint_every`` and after the last epoch (once if both). ``fit`` writes
            nothing itself; persist the state with :func:`state_to_arrays`. An exception
            raised here stops ``fit`` and propagates.
        resume: A :class:`TrainState` from ``on_checkpoint``, or its :func:`state_to_arrays`
            dict (e.g. ``dict(np.load(path))``), to continue from instead of starting afresh.
            Call with the same ``key``, ``params`` structure, data, optimizer and options as
            the run that made it: its groups, members, leaf shapes, key and row counts are
            checked (``ValueError`` on a mismatch); ``params`` then only supplies the
            structure. The run continues at epoch ``state.epoch`` and, the random stream being
            the same, ends as the uninterrupted run would. The state passed is not modified.

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
    key = check_key(key)
    batch_size = check_int("batch_size", batch_size, 1)
    if schedule not in SCHEDULES:
        raise ValueError(f"Expected schedule in {SCHEDULES}; got {schedule!r}")
    if max_epochs is not None:
        max_epochs = check_int("max_epochs", max_epochs, 1)
    cosine = schedule == "cosine" and not isinstance(optimizer, optax.GradientTransformation)
    if isinstance(patience, str):
        if patience != "auto":
            raise ValueError(f"Expected patience to be an int >= 1, None or 'auto'; got "
                             f"{patience!r}")
        patience = None if cosine else 20
    if learning_rate is None:
        learning_rate = 1e-3 if cosine else 5e-4
    validation_chunk = check_int("validation_chunk", validation_chunk, 1)
    if patience is not None:
        patience = check_int("patience", patience, 1)
    check_float("validation_fraction", validation_fraction, low=0.0, high=1.0)
    # A negative or NaN rate makes optax train uphill (or not at all) and early stopping then
    # returns an early epoch without a word; check it even when an optimizer is given.
    check_float("learning_rate", learning_rate, low=0.0)
    if clip_norm is not None:
        check_float("clip_norm", clip_norm, low=0.0)
    factory = None
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        if not callable(optimizer):
            raise ValueError(
                f"Expected optimizer to be an optax GradientTransformation (e.g. "
                f"optax.adam(1e-3)) or a function of the learning rate (e.g. lambda lr: "
                f"optax.adamw(lr, weight_decay=1e-4)); got {type(optimizer).__name__}"
            )
        factory, optimizer = optimizer, None
    if checkpoint_every is not None:
        integral = isinstance(checkpoint_every, int | np.integer)
        if isinstance(checkpoint_every, bool) or not integral or checkpoint_every < 1:
            raise ValueError(f"Expected checkpoint_every >= 1 or None; got {checkpoint_every!r}")
        if on_checkpoint is None:
            raise ValueError("Expected on_checkpoint (a callable) with checkpoint_every; got None")
    if on_checkpoint is not None and not callable(on_checkpoint):
        raise ValueError(f"Expected on_checkpoint to be callable; got {on_checkpoint!r}")
    if resume is not None and not isinstance(resume, TrainState | Mapping):
        raise ValueError(
            f"Expected resume to be a TrainState or a dict from state_to_arrays; got "
            f"{type(resume).__name__}"
        )

    key_split, key_fit = jax.random.split(key)
    train = jax.tree.map(jnp.asarray, train)
    if validation is None:
        train, validation = _data.split(key_split, train, validation_fraction)
    validation = jax.tree.map(jnp.asarray, validation)
    n_train = _check_rows(train, "training")
    n_val = _check_rows(validation, "validation")
    batch = min(batch_size, n_train)
    num_batches = n_train // batch

    if max_epochs is None:
        max_epochs = cosine_epochs(n_train, batch) if cosine else 1000
    if optimizer is not None:
        tx = optimizer
    else:
        rate = (optax.cosine_decay_schedule(learning_rate, max_epochs * num_batches, alpha=0.01)
                if cosine else learning_rate)
        tx = (factory or optax.adam)(rate)
        if not isinstance(tx, optax.GradientTransformation):
            raise ValueError(f"Expected optimizer(learning_rate) to return an optax "
                             f"GradientTransformation; got {type(tx).__name__}")
    if clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
    if any(is_frozen(n) for g in groups for n in jax.tree.leaves(g, is_leaf=is_frozen)):
        # Standardisation statistics (Frozen nodes) are constants of training: a zero update
        # whatever the optimizer does (weight decay, noise, schedules); the clipping norm sees
        # the trainable gradients only.
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, trainable_mask)
    patience_ = np.iinfo(np.int32).max if patience is None else int(patience)

    # Shard over the k devices that leave the fewest members per device, then the least
    # padding: a lone member stays on one device (k == 1, no mesh), 2 members on 4 devices use
    # 2 of them rather than 4 with two idle copies. A group whose size is not a multiple of k
    # is padded with inactive copies of its first member (computed, never trained or
    # returned), so that e.g. 5 members split 2 + 2 + 2 over 3 devices.
    num_shards = (1 if shard is not None and not shard
                  else _devices.split_count(sizes, jax.device_count()))
    padded = [-(-k // num_shards) * num_shards for k in sizes]

    def init_state(p, k_real):
        k = _num_members(p)
        # Fresh buffers: the epoch function donates its state, and params/best_params must not
        # alias each other or the caller's arrays.
        p = jax.tree.map(lambda a: jnp.array(a, copy=True), p)
        return GroupState(
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
            new_states.append(GroupState(
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

    key_data = np.asarray(
        jax.random.key_data(key_fit)
        if jnp.issubdtype(key_fit.dtype, jax.dtypes.prng_key) else key_fit
    )
    num_members = sum(sizes)
    if resume is None:
        start = 0
        history_t, history_v = [], []
        states = tuple(
            init_state(_pad_members(g, kp), k)
            for g, k, kp in zip(groups, sizes, padded, strict=True)
        )
    else:
        template = TrainState(
            groups=tuple(
                jax.eval_shape(lambda p, k=k: init_state(p, k), g)
                for g, k in zip(groups, sizes, strict=True)
            ),
            epoch=0,
            train_loss=np.zeros((0, num_members), np.float32),
            validation_loss=np.zeros((0, num_members), np.float32),
            key=key_data,
            num_train=n_train,
            num_validation=n_val,
        )
        arrays = state_to_arrays(resume) if isinstance(resume, TrainState) else resume
        state = state_from_arrays(arrays, template)
        if not np.array_equal(state.key, key_data):
            raise ValueError(
                "Expected the resume state to come from a fit with the same key (its random "
                "stream would not continue otherwise); got a state made with another key"
            )
        if (state.num_train, state.num_validation) != (n_train, n_val):
            raise ValueError(
                f"Expected the resume state to come from a fit on the same data; got a state "
                f"of {state.num_train} training and {state.num_validation} validation rows "
                f"for {n_train} and {n_val}"
            )
        start = state.epoch
        history_t, history_v = list(state.train_loss), list(state.validation_loss)
        states = tuple(
            _pad_state(jax.tree.map(lambda a: jnp.array(a, copy=True), gs), k, kp)
            for gs, k, kp in zip(state.groups, sizes, padded, strict=True)
        )
    states, sharded, data = _maybe_shard(states, num_shards, (train, validation))
    train, validation = data

    still = np.concatenate([np.asarray(s.active)[:k] for s, k in zip(states, sizes, strict=True)])
    # A resume from a finished run has no epoch left to run, and nothing to compile.
    stop = max_epochs if still.any() else start
    t0 = time.perf_counter()
    if start < stop:
        compiled = (
            jax.jit(epoch, donate_argnums=0)
            .lower(states, key_fit, jnp.int32(0), train, validation)
            .compile()
        )
    compile_time = time.perf_counter() - t0

    def snapshot(epochs_done):
        # Host copies (the next epoch donates the device buffers), padding members dropped.
        return TrainState(
            groups=tuple(
                jax.tree.map(lambda a, k=k: np.array(a)[:k], s)
                for s, k in zip(states, sizes, strict=True)
            ),
            epoch=epochs_done,
            train_loss=_stack_rows(history_t, num_members),
            validation_loss=_stack_rows(history_v, num_members),
            key=key_data.copy(),
            num_train=n_train,
            num_validation=n_val,
        )

    bar = None
    if progress:
        from ilijax._progress import progress_bar

        bar = progress_bar(total=max_epochs, initial=min(start, max_epochs), desc="fit",
                           unit="epoch", leave=True)
    t0 = time.perf_counter()
    done, saved = start, start
    try:
        for e in range(start, stop):
            states, tl, vl = compiled(
                states, jax.random.fold_in(key_fit, e), jnp.int32(e), train, validation
            )
            done = e + 1
            pairs = list(zip(states, sizes, strict=True))
            still = np.concatenate([np.asarray(s.active)[:k] for s, k in pairs])
            history_t.append(np.asarray(tl))
            history_v.append(np.asarray(vl))
            if bar is not None:
                best = min(float(np.min(np.asarray(s.best_val)[:k])) for s, k in pairs)
                bar.set_postfix(best_val=f"{best:.4g}",
                                training=f"{int(still.sum())}/{still.size}")
                bar.update(1)
            if on_checkpoint is not None and checkpoint_every and done % checkpoint_every == 0:
                saved = done
                on_checkpoint(snapshot(done))
            if not still.any():
                break
        if on_checkpoint is not None and saved != done:
            on_checkpoint(snapshot(done))
        jax.block_until_ready(states)
    finally:
        if bar is not None:
            bar.close()
    train_time = time.perf_counter() - t0

    def host(field):
        return np.concatenate(
            [np.asarray(getattr(s, field))[:k] for s, k in zip(states, sizes, strict=True)]
        )

    info = FitInfo(
        train_loss=_stack_rows(history_t, num_members),
        validation_loss=_stack_rows(history_v, num_members),
        best_validation_loss=host("best_val"),
        best_epoch=host("best_epoch"),
        epochs=host("epochs"),
        diverged=host("diverged"),
        group=np.concatenate([np.full(k, g) for g, k in enumerate(sizes)]),
        compile_time=compile_time,
        train_time=train_time,
        epoch_traces=traces[0],
        sharded=tuple(sharded),
        start_epoch=start,
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


def _pad_state(state: GroupState, num_real: int, num: int) -> GroupState:
    """Pads a group's state to ``num`` members with inactive copies of member 0."""
    if num == num_real:
        return state
    state = jax.tree.map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[:1], num - num_real, axis=0)]), state
    )
    return state._replace(active=state.active.at[num_real:].set(False))


def _stack_rows(rows: list, num_members: int) -> np.ndarray:
    if not rows:
        return np.zeros((0, num_members), np.float32)
    return np.stack(rows)


def _maybe_shard(states, num_shards, data):
    """Places each group's (padded) member axis on a one-axis mesh (``members``) of the first
    ``num_shards`` devices and replicates the data on them; 1: no mesh."""
    if num_shards < 2:
        return states, [False] * len(states), data
    mesh = Mesh(np.asarray(jax.devices()[:num_shards]), ("members",))
    spec = NamedSharding(mesh, PartitionSpec("members"))
    out = tuple(jax.tree.map(lambda a: jax.device_put(a, spec), s) for s in states)
    replicated = NamedSharding(mesh, PartitionSpec())
    return out, [True] * len(states), jax.tree.map(lambda a: jax.device_put(a, replicated), data)
