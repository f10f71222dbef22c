"""Initialising and training the groups of an ensemble, with shared embeddings where asked.

Shared by :func:`ilijax.npe` and :func:`ilijax.nre`. Without embeddings to share this is
``init_members`` followed by one :func:`ilijax.fit` call over all groups. A group whose bundle
was made by ``ilijax.estimators.embedded(..., share_embedding=True)`` (and that has more than
one member) is trained in two stages instead:

1. **Joint stage.** A single member (the group's first member key) trains its embedding and
   its estimator together, exactly as an unshared member would, with the same fit options.
2. **Head stage.** That member's embedding (with its raw-x standardization) is frozen. The
   summaries ``s = E(x)`` of the training and validation sets are computed once, and the
   group's ``ensemble`` members train fresh inner estimators (new keys; the joint stage's head
   is discarded) on ``(theta, s)``, initialised with the statistics of ``s`` (valid now that
   ``s`` no longer moves). Unshared groups train in the same ``fit`` call on the raw data.

The returned members hold identical copies of the shared embedding and their own heads, so
they are ordinary embedded members: the posterior, saving and loading treat them alike. The
head stage is much cheaper per step than joint training (no embedding forward or backward
pass), and the ensemble then expresses uncertainty about the head only, not about the
embedding. The :class:`~ilijax.train.FitInfo` returned is the head stage's (its validation
losses are ``-log q(theta | x)`` of the full members, as the embedding is deterministic);
checkpointing and resuming options apply to the head stage, and the joint stage, which is
deterministic given the key, runs again on a resume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ilijax import data as _data
from ilijax.estimators.embedded import embedding_parts
from ilijax.train import FitInfo, fit

# Options of fit that belong to one training run (the head stage), not to the joint stage.
_RUN_OPTIONS = ("checkpoint_every", "on_checkpoint", "resume")

# Rows embedded per vectorised call when computing the summaries of a data set.
_EMBED_CHUNK = 4096


def member_counts(ensemble: Any, num_groups: int) -> list[int]:
    """Members per group from ``ensemble``: one int for every group, or a sequence of one int
    per group (e.g. ltu-ili's ``repeats`` per net)."""
    if isinstance(ensemble, int | np.integer) and not isinstance(ensemble, bool):
        counts = [int(ensemble)] * num_groups
    elif isinstance(ensemble, Sequence) and not isinstance(ensemble, str):
        if len(ensemble) != num_groups or not all(
                isinstance(c, int | np.integer) and not isinstance(c, bool) for c in ensemble):
            raise ValueError(f"Expected ensemble to be an int or {num_groups} ints (one per "
                             f"bundle); got {list(ensemble)!r}")
        counts = [int(c) for c in ensemble]
    else:
        raise ValueError(f"Expected ensemble to be an int or a list of ints; got {ensemble!r}")
    if any(c < 1 for c in counts):
        raise ValueError(f"Expected ensemble >= 1 (members per bundle); got {ensemble!r}")
    return counts


def init_group(key: jax.Array, bundle, ensemble: int, theta, x):
    """Stacked params of ``ensemble`` members of ``bundle`` (keys ``split(key, ensemble)``),
    standardised on ``(theta, x)``."""
    keys = jax.random.split(key, int(ensemble))
    # One compiled init per group (eager flax init dispatches op by op: 2-3x slower for a
    # 5-layer spline flow). A lax.map over the member keys rather than a vmap: the draws are
    # bit-identical, but XLA compiles a vmapped threefry about 3x slower on CPU (seconds per
    # network), and initialising a few members one after the other costs nothing.
    init = jax.jit(lambda ks, t, xx: jax.lax.map(lambda k: bundle.init(k, t, xx), ks))
    return init(keys, theta, x)


def shares_embedding(estimator, ensemble: int) -> bool:
    """Whether ``estimator`` is embedded with ``share_embedding=True`` and has members to
    share it with."""
    parts = embedding_parts(estimator)
    return parts is not None and parts.share_embedding and int(ensemble) > 1


def summaries(parts, params, x) -> jax.Array:
    """``(n, out)`` summaries of the raw rows ``x (n, *event)`` under one member's params."""
    fn = jax.jit(lambda p, xx: jax.lax.map(lambda e: parts.embed(p, e), xx,
                                           batch_size=_EMBED_CHUNK))
    return fn(params, x)


def train_groups(
    k_init: jax.Array,
    k_fit: jax.Array,
    estimators: Sequence[Any],
    ensemble: int | Sequence[int],
    train: _data.Dataset,
    val: _data.Dataset,
    *,
    make_bundle: Callable[[Any], Any],
    make_loss: Callable[[Any], Callable],
    fit_options: dict,
) -> tuple[list, list, FitInfo]:
    """Initialises and trains every group (see the module docstring).

    Args:
        k_init: Key of the initialisations (group ``i`` uses ``fold_in(k_init, i)``).
        k_fit: Key of the training.
        estimators: The user's bundles, one per group.
        ensemble: Members per group (an int for all, or one int per group).
        train: Training set.
        val: Validation set.
        make_bundle: ``bundle -> member bundle`` whose ``init(key, theta, x)`` gives one
            member's params and whose ``log_prob(params, theta, x)`` the posterior evaluates
            (NPE: ``on_support``; NRE: the ratio member bundle).
        make_loss: ``bundle -> loss(params, batch, key)`` for that bundle.
        fit_options: Passed to :func:`ilijax.fit`.

    Returns:
        ``(member_bundles, params, info)``: one member bundle and stacked params per group, and
        the :class:`~ilijax.train.FitInfo` of the (last) training.
    """
    bundles = [make_bundle(e) for e in estimators]
    counts = member_counts(ensemble, len(estimators))
    shared = [i for i, e in enumerate(estimators) if shares_embedding(e, counts[i])]
    if not shared:
        params = [init_group(jax.random.fold_in(k_init, i), b, counts[i], train.theta, train.x)
                  for i, b in enumerate(bundles)]
        losses = [make_loss(e) for e in estimators]
        params, info = fit(k_fit, params, losses, train, val, **fit_options)
        return bundles, params, info

    # Stage 1: one member per shared group trains its embedding jointly with its estimator. Its
    # key is the group's first member key, so it starts where an unshared member 0 would.
    first = [init_group(jax.random.fold_in(k_init, i), bundles[i], counts[i], train.theta,
                        train.x) for i in shared]
    first = [jax.tree.map(lambda a: a[:1], p) for p in first]
    stage1 = {k: v for k, v in fit_options.items() if k not in _RUN_OPTIONS}
    first, info1 = fit(jax.random.fold_in(k_fit, 1), first,
                       [make_loss(estimators[i]) for i in shared], train, val, **stage1)
    if not np.all(np.isfinite(info1.best_validation_loss)):
        raise RuntimeError(
            "The joint stage of share_embedding (one member training the embedding) never "
            "reached a finite validation loss; lower the learning rate or check the data"
        )

    # Stage 2: every member's head on the frozen summaries; unshared groups on the raw data.
    train2 = {"theta": train.theta}
    val2 = {"theta": val.theta}
    if len(shared) < len(estimators):
        train2["x"], val2["x"] = train.x, val.x
    params, losses, frozen = [], [], {}
    for i, e in enumerate(estimators):
        key_i = jax.random.fold_in(k_init, i)
        if i not in shared:
            params.append(init_group(key_i, bundles[i], counts[i], train.theta, train.x))
            losses.append(_on_fields(make_loss(e), "x"))
            continue
        parts = embedding_parts(e)
        p1 = jax.tree.map(lambda a: a[0], first[shared.index(i)])
        frozen[i] = {k: p1[k] for k in ("x_shift", "x_scale", "embedding")}
        field = f"s{i}"
        train2[field], val2[field] = summaries(parts, p1, train.x), summaries(parts, p1, val.x)
        head = make_bundle(parts.inner)
        params.append(init_group(jax.random.fold_in(key_i, 1), head, counts[i], train.theta,
                                 train2[field]))
        losses.append(_on_fields(make_loss(parts.inner), field))
    params, info = fit(k_fit, params, losses, train2, val2, **fit_options)

    # Reassemble full embedded members: identical embedding copies, each member's own head.
    out = []
    for i, p in enumerate(params):
        if i in shared:
            tiled = jax.tree.map(lambda a, n=counts[i]: jnp.broadcast_to(a, (n, *a.shape)),
                                 frozen[i])
            p = {**tiled, "estimator": p}
        out.append(p)
    return bundles, out, info


def _on_fields(loss, field: str):
    """A loss on the ``Dataset(theta, batch[field])`` view of a dict minibatch."""

    def wrapped(params, batch, key):
        return loss(params, _data.Dataset(batch["theta"], batch[field]), key)

    return wrapped
