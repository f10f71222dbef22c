"""Masked autoregressive flow (MAF) and the conditional-bijector pieces the flows share.

A *conditional bijector* is a NamedTuple of pure functions with distrax's names:

- ``init(key, z, context) -> params`` for one example event,
- ``forward_and_log_det(params, z, context) -> (y, log|det dy/dz|)``: noise -> data (sampling),
- ``inverse_and_log_det(params, y, context) -> (z, log|det dz/dy|)``: data -> noise (density),
- ``event_dim(params, context) -> int``: the (static) event size, read off parameter shapes, so
  that ``sample`` knows how many base draws to take from ``params`` and ``context`` alone.

A flow is ``y = f(z)`` with ``z ~ N(0, I)``, so
``log q(y | c) = log N(f^{-1}(y)) + log|det J_{f^{-1}}(y)|``.
Layers are stacked with :func:`stack`: parameters of all layers are built with one ``jax.vmap`` and
applied with ``jax.lax.scan``, and the event is reversed after every layer, so consecutive
autoregressive layers use reversed orderings and consecutive coupling layers alternate their masks.

References:
    Papamakarios, Pavlakou and Murray, "Masked Autoregressive Flow for Density Estimation",
    NeurIPS 2017.
    Germain et al., "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ilijax.estimators._base import (
    Estimator,
    activation_fn,
    check_positive_int,
    standardized,
)
from ilijax.nn.made import MADE

Array = jax.Array
Params = Any

class ConditionalBijector(NamedTuple):
    """A bijector ``y = f(z; context)`` as pure functions over single events.

    Attributes:
        init: ``(key, z, context) -> params`` for one example event.
        forward_and_log_det: ``(params, z, context) -> (y, log|det dy/dz|)``, noise -> data.
        inverse_and_log_det: ``(params, y, context) -> (z, log|det dz/dy|)``, data -> noise.
        event_dim: ``(params, context) -> int``, the event size (static, from shapes).
    """

    init: Callable[[Array, Array, Array], Params]
    forward_and_log_det: Callable[[Params, Array, Array], tuple[Array, Array]]
    inverse_and_log_det: Callable[[Params, Array, Array], tuple[Array, Array]]
    event_dim: Callable[[Params, Array], int]


class Transformer(NamedTuple):
    """An elementwise monotone map ``y_i = tau(z_i; params_i)`` used inside flow layers.

    Attributes:
        num_params: Number of unconstrained parameters per dimension.
        forward: ``(params (D, P), z (D,)) -> (y, log|dy/dz|)``, both ``(D,)``; noise -> data.
        inverse: ``(params (D, P), y (D,)) -> (z, log|dz/dy|)``, both ``(D,)``; data -> noise.
    """

    num_params: int
    forward: Callable[[Array, Array], tuple[Array, Array]]
    inverse: Callable[[Array, Array], tuple[Array, Array]]


def affine_transformer(min_scale: float = 1e-3) -> Transformer:
    """``y = z * scale + shift`` with ``scale = softplus(raw + c) + min_scale`` (no overflow).

    ``c`` is chosen so that ``raw = 0`` gives ``scale = 1``: zero conditioner outputs are the
    identity. softplus (as nflows' MAF) grows linearly instead of exponentially, so one large
    conditioner output cannot overflow the scale.
    """
    offset = float(np.log(np.expm1(1.0 - min_scale)))

    def _scale(params):
        return jax.nn.softplus(params[..., 1] + offset) + min_scale

    def forward(params, z):
        scale = _scale(params)
        return z * scale + params[..., 0], jnp.log(scale)

    def inverse(params, y):
        scale = _scale(params)
        return (y - params[..., 0]) / scale, -jnp.log(scale)

    return Transformer(2, forward, inverse)


def masked_autoregressive(
    transformer: Transformer,
    *,
    hidden: int,
    layers: int = 2,
    activation: Callable[[Array], Array] = nn.relu,
) -> ConditionalBijector:
    """A masked autoregressive bijector with a MADE conditioner.

    Data -> noise (density, one MADE pass): ``z_i = tau^{-1}(y_i; MADE(y_{<i}, c)_i)``.
    Noise -> data (sampling, ``D`` MADE passes in a ``lax.fori_loop``): pass ``k`` fixes
    ``y_k``, because ``MADE(y)_k`` only reads ``y_{<k}``, which earlier passes already fixed.

    Args:
        transformer: The elementwise map (affine for MAF, a spline for autoregressive NSF).
        hidden: Width of the MADE hidden layers.
        layers: Number of MADE hidden layers.
        activation: Activation of the MADE.

    Returns:
        A :class:`ConditionalBijector`; its output layer starts at zero (the identity map).

    References:
        Papamakarios et al., "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
    """
    net = MADE(
        num_params=transformer.num_params,
        hidden=(hidden,) * layers,
        activation=activation,
        zero_init_output=True,
    )

    def init(key, z, context):
        return net.init(key, z, context)

    def inverse_and_log_det(params, y, context):
        z, log_det = transformer.inverse(net.apply(params, y, context), y)
        return z, jnp.sum(log_det)

    def forward_and_log_det(params, z, context):
        def body(_, carry):
            y, _ = carry
            return transformer.forward(net.apply(params, y, context), z)

        y, log_det = jax.lax.fori_loop(0, z.shape[-1], body, (jnp.zeros_like(z), jnp.zeros_like(z)))
        return y, jnp.sum(log_det)

    def event_dim(params, context):
        del context
        return params["params"]["output"]["bias"].shape[-1] // transformer.num_params

    return ConditionalBijector(init, forward_and_log_det, inverse_and_log_det, event_dim)


def stack(layer: ConditionalBijector, num_layers: int) -> ConditionalBijector:
    """Composes ``num_layers`` copies of ``layer`` (own params each), reversing between layers.

    Forward: ``y = R f_L(... R f_1(z))`` with ``R`` the reversal. Parameters are stacked on a
    leading axis (``jax.vmap`` of ``init``) and the layers run in a ``jax.lax.scan``, so compile
    time does not grow with ``num_layers``.
    """

    def init(key, z, context):
        keys = jax.random.split(key, num_layers)
        return jax.vmap(layer.init, in_axes=(0, None, None))(keys, z, context)

    def forward_and_log_det(params, z, context):
        def body(carry, p):
            z, total = carry
            y, log_det = layer.forward_and_log_det(p, z, context)
            return (y[::-1], total + log_det), None

        (y, total), _ = jax.lax.scan(body, (z, jnp.zeros((), z.dtype)), params)
        return y, total

    def inverse_and_log_det(params, y, context):
        def body(carry, p):
            y, total = carry
            z, log_det = layer.inverse_and_log_det(p, y[::-1], context)
            return (z, total + log_det), None

        (z, total), _ = jax.lax.scan(body, (y, jnp.zeros((), y.dtype)), params, reverse=True)
        return z, total

    def event_dim(params, context):
        return layer.event_dim(jax.tree.map(lambda a: a[0], params), context)

    return ConditionalBijector(init, forward_and_log_det, inverse_and_log_det, event_dim)


def flow(bijector: ConditionalBijector, spec: dict | None = None) -> Estimator:
    """A normalizing flow ``y = f(z; context)``, ``z ~ N(0, I)``, as an (unstandardized) estimator.

    Args:
        bijector: The conditional bijector ``f``.
        spec: The spec stored on the bundle.

    Returns:
        ``Estimator(init, log_prob, sample, spec)`` over single events.
    """

    def init(key, y, context):
        return bijector.init(key, jnp.asarray(y, jnp.float32), jnp.asarray(context, jnp.float32))

    def log_prob(params, y, context):
        z, log_det = bijector.inverse_and_log_det(params, y, context)
        return jnp.sum(jax.scipy.stats.norm.logpdf(z)) + log_det

    def sample(params, key, context):
        z = jax.random.normal(key, (bijector.event_dim(params, context),), jnp.float32)
        return bijector.forward_and_log_det(params, z, context)[0]

    return Estimator(init, log_prob, sample, spec)


def maf(*, hidden: int = 50, transforms: int = 5, activation: str = "tanh") -> Estimator:
    """Conditional masked autoregressive flow with affine transformers (as sbi's ``maf``).

    Each of the ``transforms`` layers is ``y_i = z_i * s_i + m_i`` with
    ``(m_i, s_i) = MADE(y_{<i}, context)_i`` (two hidden layers of width ``hidden``) and
    ``s_i = softplus(raw_i + c) + 1e-3``; the ordering is reversed between layers. ``log_prob``
    costs one MADE pass per layer, ``sample`` ``y_dim`` passes per layer. Each layer starts at the
    identity (zero-initialised MADE output).

    Args:
        hidden: Width of the MADE hidden layers.
        transforms: Number of autoregressive layers.
        activation: Activation name; ``"tanh"`` by default, as sbi's and ltu-ili's ``maf``.

    Returns:
        A standardized :class:`~ilijax.estimators.Estimator` with
        ``spec = {"name": "maf", "config": {...}}``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> est = maf(hidden=8, transforms=2)
        >>> params = est.init(jax.random.key(0), jnp.zeros(2), jnp.zeros(3))
        >>> est.log_prob(params, jnp.zeros(2), jnp.zeros(3)).shape
        ()

    References:
        Papamakarios, Pavlakou and Murray, "Masked Autoregressive Flow for Density Estimation",
        NeurIPS 2017.
    """
    check_positive_int("hidden", hidden)
    check_positive_int("transforms", transforms)
    act = activation_fn(activation)
    layer = masked_autoregressive(affine_transformer(), hidden=hidden, layers=2, activation=act)
    spec = {
        "name": "maf",
        "config": {"hidden": hidden, "transforms": transforms, "activation": activation},
    }
    return standardized(flow(stack(layer, transforms), spec))
