"""Classifier networks for neural ratio estimation: ``(theta, x) -> logit`` (flax.linen).

Both act on one pair: the input is ``concat(theta, x)`` and the output is a scalar logit, which
the ratio estimators read as ``log r(theta, x)``. Batch them with ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ClassifierMLP", "ClassifierResNet"]


class ClassifierMLP(nn.Module):
    """``blocks`` dense hidden layers of width ``hidden`` on ``concat(theta, x)``, then a linear
    scalar output (sbi's ``classifier_nn("mlp")`` has two hidden layers of 50).

    Attributes:
        hidden: Width of each hidden layer.
        blocks: Number of hidden layers.
        activation: Activation after each hidden layer.
    """

    hidden: int = 50
    blocks: int = 2
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, theta: jax.Array, x: jax.Array) -> jax.Array:
        h = jnp.concatenate([theta, x], axis=-1)
        for _ in range(self.blocks):
            h = self.activation(nn.Dense(self.hidden)(h))
        return nn.Dense(1)(h)[..., 0]


class ClassifierResNet(nn.Module):
    """A residual MLP on ``concat(theta, x)``: a linear map to width ``hidden``, ``blocks``
    pre-activation residual blocks ``h <- h + W2 act(W1 act(h))``, and a linear scalar output.

    The second layer of each block starts at zero, so every block starts as the identity (as in
    sbi's ``ResidualNet``, which initialises it near zero); this keeps deep stacks trainable.

    Attributes:
        hidden: Width of the residual stream and of each block.
        blocks: Number of residual blocks.
        activation: Activation inside the blocks.
    """

    hidden: int = 50
    blocks: int = 2
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, theta: jax.Array, x: jax.Array) -> jax.Array:
        h = nn.Dense(self.hidden)(jnp.concatenate([theta, x], axis=-1))
        for _ in range(self.blocks):
            r = nn.Dense(self.hidden)(self.activation(h))
            r = nn.Dense(self.hidden, kernel_init=nn.initializers.zeros)(self.activation(r))
            h = h + r
        return nn.Dense(1)(self.activation(h))[..., 0]
