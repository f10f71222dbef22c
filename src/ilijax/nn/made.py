"""MADE: a masked autoencoder whose outputs respect an autoregressive ordering (flax.linen).

References:
    Germain, Gregor, Murray and Larochelle, "MADE: Masked Autoencoder for Distribution
    Estimation", ICML 2015.
    Papamakarios, Pavlakou and Murray, "Masked Autoregressive Flow for Density Estimation",
    NeurIPS 2017 (conditional MADE: the context enters the first hidden layer unmasked).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def input_degrees(num_inputs: int, order: Sequence[int] | None = None) -> np.ndarray:
    """Degrees ``1..num_inputs`` of the inputs; ``order[k]`` is the input that comes ``k``-th.

    Args:
        num_inputs: Number of autoregressive inputs ``D``.
        order: A permutation of ``range(D)``; ``None`` is the natural order ``0, 1, ..., D-1``.

    Returns:
        Integer array of shape ``(D,)``: ``degrees[order[k]] = k + 1``.
    """
    if order is None:
        return np.arange(1, num_inputs + 1)
    order = np.asarray(order)
    if sorted(order.tolist()) != list(range(num_inputs)):
        raise ValueError(f"Expected order to be a permutation of range({num_inputs}); got {order}")
    degrees = np.empty(num_inputs, dtype=np.int64)
    degrees[order] = np.arange(1, num_inputs + 1)
    return degrees


def hidden_degrees(num_units: int, num_inputs: int) -> np.ndarray:
    """Degrees of hidden units, cycling through ``0..D-1`` (deterministic masks).

    Degree-0 units see no input, only the context (and, in later layers, other degree-0 units).
    Departure from nflows' MADE, whose hidden degrees start at 1: there, the first output
    (degree 1) can see no hidden unit, so its parameters are constants that ignore the context.
    """
    return np.arange(num_units) % num_inputs


class MaskedDense(nn.Module):
    """A dense layer whose kernel is masked by input/output degrees.

    Unit ``j`` of the output may see input ``i`` only if ``out_degrees[j] >= in_degrees[i]``, or
    ``out_degrees[j] > in_degrees[i]`` when ``strict`` (the output layer of MADE).

    Attributes:
        in_degrees: Degrees of the inputs (a tuple of ints, static).
        out_degrees: Degrees of the outputs; ``len(out_degrees)`` is the number of features.
        strict: Use the strict inequality (output layer).
        kernel_init: Initialiser of the (unmasked) kernel.
    """

    in_degrees: tuple[int, ...]
    out_degrees: tuple[int, ...]
    strict: bool = False
    kernel_init: Callable = nn.initializers.lecun_normal()

    def mask(self) -> np.ndarray:
        """The ``(in, out)`` 0/1 mask of the kernel."""
        i = np.asarray(self.in_degrees)[:, None]
        o = np.asarray(self.out_degrees)[None, :]
        return (o > i if self.strict else o >= i).astype(np.float32)

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """Applies ``h @ (kernel * mask) + bias`` to one input vector (or a batch)."""
        n_in, n_out = len(self.in_degrees), len(self.out_degrees)
        if h.shape[-1] != n_in:
            raise ValueError(f"Expected input of width {n_in}; got shape {h.shape}")
        kernel = self.param("kernel", self.kernel_init, (n_in, n_out), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (n_out,), jnp.float32)
        return h @ (kernel * jnp.asarray(self.mask())) + bias


class MADE(nn.Module):
    """A conditional MADE: ``num_params`` outputs per input dimension, autoregressive in ``z``.

    Output ``out[i, :]`` depends only on the inputs ``z[j]`` that come before ``i`` in ``order``
    (degree of ``j`` < degree of ``i``) and on the context, which enters the first hidden layer
    through an unmasked dense layer. Flows reverse (or permute) the ordering between layers, either
    with ``order`` or by flipping the vector between layers.

    Attributes:
        num_params: Number of outputs per input dimension (e.g. 2 for shift and scale).
        hidden: Widths of the hidden layers (at least one).
        activation: Activation between layers.
        order: Optional permutation of ``range(D)`` giving the autoregressive order.
        zero_init_output: Initialise the output layer at zero (a flow layer starts at identity).

    References:
        Germain et al., "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015.
    """

    num_params: int
    hidden: Sequence[int] = (50, 50)
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    order: tuple[int, ...] | None = None
    zero_init_output: bool = False

    @nn.compact
    def __call__(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Maps ``z`` of shape ``(D,)`` and ``context`` ``(C,)`` to outputs ``(D, num_params)``."""
        if not self.hidden:
            raise ValueError(f"Expected at least one hidden layer; got hidden={self.hidden}")
        num_inputs = z.shape[-1]
        deg_in = tuple(int(d) for d in input_degrees(num_inputs, self.order))
        deg = deg_in
        h = z
        for k, width in enumerate(self.hidden):
            deg_h = tuple(int(d) for d in hidden_degrees(width, num_inputs))
            h = MaskedDense(deg, deg_h, name=f"masked_{k}")(h)
            if k == 0 and context is not None and context.shape[-1] > 0:
                h = h + nn.Dense(width, use_bias=False, name="context")(context)
            h = self.activation(h)
            deg = deg_h
        deg_out = tuple(d for d in deg_in for _ in range(self.num_params))
        init = nn.initializers.zeros if self.zero_init_output else nn.initializers.lecun_normal()
        out = MaskedDense(deg, deg_out, strict=True, kernel_init=init, name="output")(h)
        return out.reshape(*out.shape[:-1], num_inputs, self.num_params)
