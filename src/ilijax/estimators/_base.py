"""The estimator bundle and the combinators every estimator factory uses.

An :class:`Estimator` is a conditional density ``q(y | context)`` written as three pure functions
over *single events* (callers batch with ``jax.vmap``), in the style of optax's
``GradientTransformation``:

- ``init(key, y, context) -> params``. ``y`` and ``context`` are either one example event
  (shapes ``(y_dim,)`` and ``(context_dim,)``) or the whole training set (shapes ``(n, y_dim)`` and
  ``(n, context_dim)``). Dimensions are inferred from them; when a whole set is given, the z-score
  statistics of :func:`standardized` are computed from it in one pass.
- ``log_prob(params, y, context) -> ()``.
- ``sample(params, key, context) -> (y_dim,)``, one draw.

Standardisation statistics are stored in the params wrapped in :class:`Frozen`, which
:func:`ilijax.fit` holds constant (no gradient, no optimizer or weight-decay update), so after
training they are still exactly the training set's mean and standard deviation.

``spec`` is a JSON-serialisable description (``{"name": ..., "config": {...}}``) from which
:func:`ilijax.estimators.build` rebuilds the same bundle; it is what :func:`ilijax.save` stores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = Any
PRNGKey = jax.Array

InitFn = Callable[[PRNGKey, Array, Array], Params]
LogProbFn = Callable[[Params, Array, Array], Array]
SampleFn = Callable[[Params, PRNGKey, Array], Array]


class Estimator(NamedTuple):
    """A conditional density estimator ``q(y | context)`` as pure functions over single events.

    Attributes:
        init: ``(key, y, context) -> params``; ``y``/``context`` are one example event or the whole
            training set (rank 2), from which standardization statistics are taken.
        log_prob: ``(params, y, context) -> Float[Array, ""]`` for one event.
        sample: ``(params, key, context) -> Float[Array, " y_dim"]``, one draw for one context.
        spec: JSON-serialisable ``{"name": str, "config": dict}`` used to rebuild the bundle
            (``ilijax.estimators.build(spec)``); ``None`` for hand-made bundles (not saveable).
    """

    init: InitFn
    log_prob: LogProbFn
    sample: SampleFn
    spec: dict | None = None


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "silu": nn.silu,
    "gelu": nn.gelu,
    "elu": nn.elu,
}


def activation_fn(name: str) -> Callable[[Array], Array]:
    """Looks up an activation by name (``relu``, ``tanh``, ``silu``, ``gelu``, ``elu``); names
    rather than functions keep estimator specs JSON-serialisable."""
    if name not in ACTIVATIONS:
        raise ValueError(f"Expected activation in {sorted(ACTIVATIONS)}; got {name!r}")
    return ACTIVATIONS[name]


def check_positive_int(name: str, value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` is a positive ``int`` (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"Expected {name} to be a positive int; got {value!r}")


class Frozen(NamedTuple):
    """A params subtree that training leaves untouched (standardisation statistics).

    A pytree node with one child, so the leaves and their order are those of ``value`` alone
    (files saved before statistics were frozen load into it unchanged). :func:`ilijax.fit`
    gives every leaf under a ``Frozen`` node a zero update through
    ``optax.multi_transform(..., optax.set_to_zero())``: no optimizer step and no weight decay
    touches it, whatever optimizer is passed. Bundles read it with :func:`frozen_value`, which
    also stops its gradient.

    Attributes:
        value: The constant arrays (any pytree).
    """

    value: Any


def is_frozen(node: Any) -> bool:
    """Whether ``node`` is a :class:`Frozen` subtree (an ``is_leaf`` for ``jax.tree.map``)."""
    return isinstance(node, Frozen)


def frozen_value(node: Any) -> Any:
    """The arrays of a :class:`Frozen` node, behind ``stop_gradient`` (no gradient flows into
    statistics); a plain array is returned as is, also behind ``stop_gradient``."""
    value = node.value if isinstance(node, Frozen) else node
    return jax.tree.map(jax.lax.stop_gradient, value)


def trainable_mask(params: Any) -> Any:
    """A tree of labels, ``"frozen"`` at every :class:`Frozen` node of ``params`` and
    ``"train"`` at every other leaf (the ``param_labels`` of ``optax.multi_transform``)."""
    return jax.tree.map(lambda n: "frozen" if is_frozen(n) else "train", params,
                        is_leaf=is_frozen)


_MIN_STD = 1e-6


def _as_events(a: Array, name: str) -> Array:
    a = jnp.asarray(a, dtype=jnp.float32)
    if a.ndim == 1:
        return a[None, :]
    if a.ndim != 2:
        raise ValueError(
            f"Expected {name} of shape ({name}_dim,) or (n, {name}_dim); got shape {a.shape}"
        )
    return a


def zscore_stats(a: Array) -> dict[str, Array]:
    """Mean and standard deviation of the rows of ``a`` (one pass; a single row gives 0 and 1).

    Columns with (near) zero spread get a standard deviation of 1 rather than 0, so constant
    features pass through unchanged instead of dividing by zero.
    """
    if a.shape[0] < 2:
        return {"mean": jnp.zeros(a.shape[1]), "std": jnp.ones(a.shape[1])}
    mean = jnp.mean(a, axis=0)
    std = jnp.std(a, axis=0)
    std = jnp.where(std < _MIN_STD, 1.0, std)
    return {"mean": mean, "std": std}


def standardized(core: Estimator) -> Estimator:
    """Wraps ``core`` so that it sees z-scored ``y`` and ``context``.

    The statistics come from the data given to ``init`` (the whole training set, not a first
    minibatch as in lampe) and are stored in the params as :class:`Frozen` constants, so a saved
    estimator is self-contained and training never moves them.
    ``log_prob`` is corrected by the affine log-det:
    ``log q(y) = log q_z((y - m) / s) - sum log s``.
    """

    def init(key, y, context):
        y2, c2 = _as_events(y, "y"), _as_events(context, "context")
        if y2.shape[0] != c2.shape[0]:
            raise ValueError(
                f"Expected y and context with the same number of rows; got {y2.shape[0]} and "
                f"{c2.shape[0]}"
            )
        ys, cs = zscore_stats(y2), zscore_stats(c2)
        net = core.init(key, (y2[0] - ys["mean"]) / ys["std"], (c2[0] - cs["mean"]) / cs["std"])
        return {"y_shift": Frozen(ys["mean"]), "y_scale": Frozen(ys["std"]),
                "c_shift": Frozen(cs["mean"]), "c_scale": Frozen(cs["std"]), "net": net}

    def _context(params, context):
        return (context - frozen_value(params["c_shift"])) / frozen_value(params["c_scale"])

    def log_prob(params, y, context):
        y_scale = frozen_value(params["y_scale"])
        z = (y - frozen_value(params["y_shift"])) / y_scale
        return core.log_prob(params["net"], z, _context(params, context)) - jnp.sum(
            jnp.log(y_scale)
        )

    def sample(params, key, context):
        z = core.sample(params["net"], key, _context(params, context))
        return z * frozen_value(params["y_scale"]) + frozen_value(params["y_shift"])

    return Estimator(init, log_prob, sample, core.spec)
