"""A plain multilayer perceptron (flax.linen)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
    """Dense layers with an activation between them and a linear output layer.

    Attributes:
        hidden: Widths of the hidden layers.
        out_dim: Width of the output layer (no activation after it).
        activation: Activation between layers (default ReLU, as sbi).
        zero_init_output: Initialise the last layer at zero, so that a flow layer built on it starts
            at the identity (stabilises training of deep flows).
    """

    hidden: Sequence[int]
    out_dim: int
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    zero_init_output: bool = False

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        for width in self.hidden:
            h = self.activation(nn.Dense(width)(h))
        if self.zero_init_output:
            return nn.Dense(self.out_dim, kernel_init=nn.initializers.zeros)(h)
        return nn.Dense(self.out_dim)(h)
