"""Mixture density network with full-covariance Gaussian components."""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from ilijax.estimators._base import (
    Estimator,
    activation_fn,
    check_positive_int,
    standardized,
)
from ilijax.nn.mlp import MLP

__all__ = ["mdn"]

# Smallest standard deviation of a component along any axis, in standardized units. It keeps the
# Cholesky solve well conditioned in float32 and stops a component collapsing onto one point
# (the unbounded-likelihood degeneracy of Gaussian mixtures).
_MIN_DIAG = 1e-3
# softplus^{-1}(1 - _MIN_DIAG): a raw diagonal of 0 gives a unit standard deviation at init.
_DIAG_OFFSET = math.log(math.expm1(1.0 - _MIN_DIAG))


class _MDNHead(nn.Module):
    """Context -> (mixture logits, means, Cholesky factors of the covariances)."""

    y_dim: int
    components: int
    hidden: tuple[int, ...]
    activation: Callable[[jax.Array], jax.Array]

    @nn.compact
    def __call__(self, context: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        k, d = self.components, self.y_dim
        n_tril = d * (d - 1) // 2
        out = MLP(self.hidden, k * (1 + 2 * d + n_tril), self.activation)(context)
        logits = out[:k]
        means = out[k : k + k * d].reshape(k, d)
        raw_diag = out[k + k * d : k + 2 * k * d].reshape(k, d)
        raw_tril = out[k + 2 * k * d :].reshape(k, n_tril)
        diag = jax.nn.softplus(raw_diag + _DIAG_OFFSET) + _MIN_DIAG
        rows, cols = jnp.tril_indices(d, -1)
        chol = jnp.zeros((k, d, d), out.dtype).at[:, rows, cols].set(raw_tril)
        chol = chol + jax.vmap(jnp.diag)(diag)
        return logits, means, chol


def mdn(
    *, hidden: int = 50, components: int = 10, layers: int = 2, activation: str = "relu"
) -> Estimator:
    """Mixture density network ``q(y | context)`` with full-covariance Gaussian components.

    An MLP maps the (standardized) context to mixture logits ``a_k``, means ``mu_k`` and lower
    Cholesky factors ``L_k`` of the covariances ``Sigma_k = L_k L_k^T``:

        q(y | c) = sum_k softmax(a)_k N(y; mu_k(c), L_k(c) L_k(c)^T).

    ``L_k`` is stored unconstrained: its strictly lower triangle is the raw network output and its
    diagonal is ``softplus(raw) + 1e-3`` (in standardized units), so every covariance is positive
    definite. ``log_prob`` is a ``logsumexp`` over components of triangular-solve Gaussian
    log-densities; ``sample`` draws a component from the categorical and then
    ``mu_k + L_k eps``, ``eps ~ N(0, I)``. ``y`` and the context are z-scored by
    :func:`~ilijax.estimators.standardized`.

    Args:
        hidden: Width of each hidden layer of the MLP.
        components: Number of mixture components.
        layers: Number of hidden layers.
        activation: One of ``"relu"``, ``"tanh"``, ``"silu"``, ``"gelu"``, ``"elu"``.

    Returns:
        A standardized :class:`~ilijax.estimators.Estimator` with
        ``spec = {"name": "mdn", "config": {...}}``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> est = mdn(hidden=8, components=3)
        >>> params = est.init(jax.random.key(0), jnp.zeros(2), jnp.zeros(3))
        >>> est.log_prob(params, jnp.zeros(2), jnp.zeros(3)).shape
        ()

    References:
        Bishop, "Mixture Density Networks", Aston University technical report NCRG/94/004, 1994.
    """
    for name, value in (("hidden", hidden), ("components", components), ("layers", layers)):
        check_positive_int(name, value)
    act = activation_fn(activation)
    spec = {
        "name": "mdn",
        "config": {
            "hidden": hidden,
            "components": components,
            "layers": layers,
            "activation": activation,
        },
    }

    def head(y_dim: int) -> _MDNHead:
        return _MDNHead(y_dim, components, (hidden,) * layers, act)

    def init_fn(key, y, context):
        y = jnp.asarray(y, jnp.float32)
        context = jnp.asarray(context, jnp.float32)
        if y.ndim != 1 or context.ndim != 1:
            raise ValueError(
                f"Expected one event, y of shape (y_dim,) and context of shape (context_dim,); "
                f"got {y.shape} and {context.shape}"
            )
        return head(y.shape[0]).init(key, context)

    def _mixture(params, context):
        # The last layer's width fixes y_dim; recover it from the params so the closure is static.
        out_dim = params["params"]["MLP_0"][f"Dense_{layers}"]["bias"].shape[0]
        y_dim = _y_dim_from_width(out_dim // components)
        return head(y_dim).apply(params, context)

    def log_prob_fn(params, y, context):
        logits, means, chol = _mixture(params, context)
        d = means.shape[-1]
        # Solve L_k z_k = y - mu_k per component; log N = -|z|^2/2 - sum log diag L - d/2 log 2pi.
        z = jax.vmap(lambda L, r: solve_triangular(L, r, lower=True))(chol, y - means)
        log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        comp = -0.5 * jnp.sum(z**2, axis=-1) - log_det - 0.5 * d * math.log(2 * math.pi)
        return jax.nn.logsumexp(jax.nn.log_softmax(logits) + comp)

    def sample_fn(params, key, context):
        logits, means, chol = _mixture(params, context)
        k_cat, k_eps = jax.random.split(key)
        k = jax.random.categorical(k_cat, logits)
        eps = jax.random.normal(k_eps, means.shape[-1:], means.dtype)
        return means[k] + chol[k] @ eps

    return standardized(Estimator(init_fn, log_prob_fn, sample_fn, spec))


def _y_dim_from_width(per_component: int) -> int:
    """Solves ``1 + 2 d + d (d - 1) / 2 = per_component`` for the event dimension ``d``."""
    # d^2 + 3 d + 2 (1 - w) = 0  =>  d = (-3 + sqrt(9 - 8 (1 - w))) / 2
    d = int(round((-3 + math.sqrt(9 - 8 * (1 - per_component))) / 2))
    if 1 + 2 * d + d * (d - 1) // 2 != per_component:
        raise ValueError(f"Expected MDN params from this factory; got output width {per_component}")
    return d
