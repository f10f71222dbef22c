"""Classifiers ``(theta, x) -> logit`` for neural ratio estimation, as pure-function bundles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ilijax.estimators._base import (
    Frozen,
    _as_events,
    activation_fn,
    check_positive_int,
    frozen_value,
    zscore_stats,
)
from ilijax.nn.classifier import ClassifierMLP, ClassifierResNet

Array = jax.Array
Params = Any

__all__ = ["KINDS", "Classifier", "classifier"]

#: Network kinds of :func:`classifier`.
KINDS = ("mlp", "resnet")


class Classifier(NamedTuple):
    """A ratio classifier ``d(theta, x)`` as pure functions over single pairs.

    Attributes:
        init: ``(key, theta, x) -> params``. ``theta``/``x`` are one example pair (shapes
            ``(theta_dim,)`` and ``(x_dim,)``) or the whole training set (rank 2), from which the
            z-score statistics of ``theta`` and ``x`` are taken and stored in the params.
        log_ratio: ``(params, theta, x) -> Float[Array, ""]``, the logit for one pair. The
            ratio losses of :mod:`ilijax.inference.nre` train it towards
            ``log r(theta, x) = log p(theta, x) - log p(theta) p(x)`` (NRE-B: up to a function
            of ``x``).
        spec: JSON-serialisable ``{"name": "classifier", "config": {...}}``;
            ``ilijax.estimators.build(spec)`` rebuilds the same bundle.
    """

    init: Callable[[Array, Array, Array], Params]
    log_ratio: Callable[[Params, Array, Array], Array]
    spec: dict | None = None


def classifier(
    *, kind: str = "mlp", hidden: int = 50, blocks: int = 2, activation: str = "relu"
) -> Classifier:
    """A classifier on ``concat(theta, x)`` whose scalar output is the logit ``log r(theta, x)``.

    ``theta`` and ``x`` are z-scored with statistics of the training set (stored in the params
    as :class:`~ilijax.estimators.Frozen` constants, so a saved classifier is self-contained and
    training never moves them) before they enter the network:

    - ``"mlp"``: ``blocks`` hidden layers of width ``hidden`` (sbi's ``classifier_nn("mlp")``:
      two layers of 50, ReLU).
    - ``"resnet"``: a linear map to width ``hidden`` and ``blocks`` residual blocks, each
      ``h + W2 act(W1 act(h))`` with ``W2`` starting at zero (sbi's ``"resnet"``).

    Args:
        kind: ``"mlp"`` or ``"resnet"``.
        hidden: Width of the hidden layers.
        blocks: Hidden layers (``"mlp"``) or residual blocks (``"resnet"``).
        activation: Activation name (``relu``, ``tanh``, ``silu``, ``gelu``, ``elu``).

    Returns:
        A :class:`Classifier` with ``spec = {"name": "classifier", "config": {...}}``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> clf = classifier(hidden=8)
        >>> params = clf.init(jax.random.key(0), jnp.zeros(2), jnp.zeros(3))
        >>> clf.log_ratio(params, jnp.zeros(2), jnp.zeros(3)).shape
        ()

    References:
        Hermans, Begy and Louppe, "Likelihood-free MCMC with Amortized Approximate Ratio
        Estimators", ICML 2020.
    """
    if kind not in KINDS:
        raise ValueError(f"Expected kind in {KINDS}; got {kind!r}")
    check_positive_int("hidden", hidden)
    check_positive_int("blocks", blocks)
    act = activation_fn(activation)
    module = {"mlp": ClassifierMLP, "resnet": ClassifierResNet}[kind]
    net = module(hidden=int(hidden), blocks=int(blocks), activation=act)
    spec = {
        "name": "classifier",
        "config": {"kind": kind, "hidden": int(hidden), "blocks": int(blocks),
                   "activation": activation},
    }

    def init(key, theta, x):
        t2, x2 = _as_events(theta, "theta"), _as_events(x, "x")
        if t2.shape[0] != x2.shape[0]:
            raise ValueError(
                f"Expected theta and x with the same number of rows; got {t2.shape[0]} and "
                f"{x2.shape[0]}"
            )
        ts, xs = zscore_stats(t2), zscore_stats(x2)
        params = net.init(key, (t2[0] - ts["mean"]) / ts["std"], (x2[0] - xs["mean"]) / xs["std"])
        return {"theta_shift": Frozen(ts["mean"]), "theta_scale": Frozen(ts["std"]),
                "x_shift": Frozen(xs["mean"]), "x_scale": Frozen(xs["std"]), "net": params}

    def log_ratio(params, theta, x):
        t = ((jnp.asarray(theta, jnp.float32) - frozen_value(params["theta_shift"]))
             / frozen_value(params["theta_scale"]))
        z = ((jnp.asarray(x, jnp.float32) - frozen_value(params["x_shift"]))
             / frozen_value(params["x_scale"]))
        return net.apply(params["net"], t, z)

    return Classifier(init, log_ratio, spec)
