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
    minibatch as in lampe) and are stored in the params, so a saved estimator is self-contained.
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
        return {"y_shift": ys["mean"], "y_scale": ys["std"],
                "c_shift": cs["mean"], "c_scale": cs["std"], "net": net}

    def _context(params, context):
        return (context - params["c_shift"]) / params["c_scale"]

    def log_prob(params, y, context):
        z = (y - params["y_shift"]) / params["y_scale"]
        return core.log_prob(params["net"], z, _context(params, context)) - jnp.sum(
            jnp.log(params["y_scale"])
        )

    def sample(params, key, context):
        z = core.sample(params["net"], key, _context(params, context))
        return z * params["y_scale"] + params["y_shift"]

    return Estimator(init, log_prob, sample, core.spec)
