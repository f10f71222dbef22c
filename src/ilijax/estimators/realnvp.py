"""Conditional RealNVP: a stack of affine coupling layers (distrax ``MaskedCoupling``)."""

from __future__ import annotations

import math

import distrax
import jax
import jax.numpy as jnp

from ilijax.estimators._base import (
    Estimator,
    activation_fn,
    check_positive_int,
    standardized,
)
from ilijax.nn.mlp import MLP

__all__ = ["realnvp"]

# Log-scales are squashed to (-_MAX_LOG_SCALE, _MAX_LOG_SCALE) with a tanh, so that one layer can
# stretch or shrink a coordinate by at most e^3 ~ 20x. Unbounded exp scales are the usual cause of
# NaNs early in RealNVP training (Dinh et al. 2017 use a scaled tanh for the same reason).
_MAX_LOG_SCALE = 3.0


def _masks(y_dim: int, transforms: int) -> jax.Array:
    """Alternating checkerboard masks, ``True`` = passed through (conditioning) coordinate.

    For ``y_dim == 1`` every layer transforms the single coordinate (mask ``False``) and its
    conditioner sees the context only.
    """
    if y_dim == 1:
        return jnp.zeros((transforms, 1), bool)
    even = jnp.arange(y_dim) % 2 == 0
    return jnp.stack([even if t % 2 == 0 else ~even for t in range(transforms)])


def realnvp(
    *, hidden: int = 50, transforms: int = 5, layers: int = 2, activation: str = "relu"
) -> Estimator:
    """Conditional RealNVP flow ``q(y | context)`` with a standard normal base.

    Each layer is an affine coupling (distrax ``MaskedCoupling`` over ``ScalarAffine``): with the
    layer's boolean mask ``m`` (``True`` = kept),

        z' = m * z + (1 - m) * (z * exp(s) + t),   (s, t) = g([m * z, context]),

    ``s = 3 tanh(s_raw / 3)``. Masks alternate between even and odd coordinates from layer to
    layer. The generative direction maps base noise ``u ~ N(0, I)`` to ``y``;
    ``log_prob(y) = log N(f^{-1}(y)) + log |det J_{f^{-1}}(y)|``. The conditioners' output layers
    start at zero, so the untrained flow is the identity. Layers share one treedef: their params
    are stacked on a leading axis and applied with ``jax.lax.scan`` (one compiled layer).

    With ``y_dim == 1`` there is nothing to couple on: every layer is an affine map of the single
    coordinate whose shift and scale depend on the context only (the flow is then Gaussian given
    the context).

    Args:
        hidden: Width of each hidden layer of the conditioner MLPs.
        transforms: Number of coupling layers.
        layers: Number of hidden layers per conditioner.
        activation: One of ``"relu"``, ``"tanh"``, ``"silu"``, ``"gelu"``, ``"elu"``.

    Returns:
        A standardized :class:`~ilijax.estimators.Estimator` with
        ``spec = {"name": "realnvp", "config": {...}}``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> est = realnvp(hidden=8, transforms=2)
        >>> params = est.init(jax.random.key(0), jnp.zeros(2), jnp.zeros(3))
        >>> est.sample(params, jax.random.key(1), jnp.zeros(3)).shape
        (2,)

    References:
        Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP", ICLR 2017.
    """
    for name, value in (("hidden", hidden), ("transforms", transforms), ("layers", layers)):
        check_positive_int(name, value)
    act = activation_fn(activation)
    spec = {
        "name": "realnvp",
        "config": {
            "hidden": hidden,
            "transforms": transforms,
            "layers": layers,
            "activation": activation,
        },
    }

    def conditioner_net(y_dim: int) -> MLP:
        return MLP((hidden,) * layers, 2 * y_dim, act, zero_init_output=True)

    def conditioner_input(z, context):
        # With one coordinate the masked z is always zero; the conditioner sees the context only.
        return context if z.shape[-1] == 1 else jnp.concatenate([z, context])

    def coupling(layer_params, mask, context) -> distrax.MaskedCoupling:
        y_dim = mask.shape[-1]

        def conditioner(masked_z):
            out = conditioner_net(y_dim).apply(layer_params, conditioner_input(masked_z, context))
            shift, raw = out[:y_dim], out[y_dim:]
            return shift, _MAX_LOG_SCALE * jnp.tanh(raw / _MAX_LOG_SCALE)

        def bijector(p):
            return distrax.ScalarAffine(shift=p[0], log_scale=p[1])

        return distrax.MaskedCoupling(mask, conditioner, bijector)

    def init_fn(key, y, context):
        y = jnp.asarray(y, jnp.float32)
        context = jnp.asarray(context, jnp.float32)
        if y.ndim != 1 or context.ndim != 1:
            raise ValueError(
                f"Expected one event, y of shape (y_dim,) and context of shape (context_dim,); "
                f"got {y.shape} and {context.shape}"
            )
        net = conditioner_net(y.shape[0])
        example = conditioner_input(y, context)
        return jax.vmap(net.init, in_axes=(0, None))(jax.random.split(key, transforms), example)

    def _y_dim(params) -> int:
        return params["params"][f"Dense_{layers}"]["bias"].shape[-1] // 2

    def log_prob_fn(params, y, context):
        masks = _masks(y.shape[-1], transforms)

        # Normalizing direction: undo the last layer first.
        def step(z, layer):
            layer_params, mask = layer
            z, log_det = coupling(layer_params, mask, context).inverse_and_log_det(z)
            return z, log_det

        u, log_dets = jax.lax.scan(step, y, (params, masks), reverse=True)
        base = -0.5 * jnp.sum(u**2) - 0.5 * u.shape[-1] * math.log(2 * math.pi)
        return base + jnp.sum(log_dets)

    def sample_fn(params, key, context):
        y_dim = _y_dim(params)
        masks = _masks(y_dim, transforms)

        def step(z, layer):
            layer_params, mask = layer
            return coupling(layer_params, mask, context).forward(z), None

        u = jax.random.normal(key, (y_dim,), jnp.float32)
        y, _ = jax.lax.scan(step, u, (params, masks))
        return y

    return standardized(Estimator(init_fn, log_prob_fn, sample_fn, spec))
