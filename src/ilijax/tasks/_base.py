"""The :class:`Task` bundle and helpers shared by the tasks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

__all__ = ["RestrictedToBox", "Task", "rejection_sample"]

class Task(NamedTuple):
    """A simulator with a prior and, where known, its exact likelihood and posterior.

    Attributes:
        name: Registry name (``ilijax.tasks.get(name)``).
        prior: numpyro distribution with ``event_shape == (theta_dim,)``.
        simulator: ``(key, theta) -> x``, a JAX function for ONE ``(theta_dim,)`` parameter
            vector returning ``(x_dim,)`` float32; batch it with ``jax.vmap``.
        theta_dim: Number of parameters.
        x_dim: Length of one observation.
        log_likelihood: ``(theta, x) -> ()`` exact ``log p(x | theta)`` for one pair, or None.
        posterior: ``(x) -> Distribution``, the exact normalised posterior for one observation,
            or None where it has no closed form.
        sample_posterior: ``(key, x, num_samples) -> (num_samples, theta_dim)`` exact reference
            posterior draws for one observation (``num_samples`` static), or None.
        labels: One name per parameter, for plots and reports.
    """

    name: str
    prior: dist.Distribution
    simulator: Callable[[jax.Array, jax.Array], jax.Array]
    theta_dim: int
    x_dim: int
    log_likelihood: Callable[[jax.Array, jax.Array], jax.Array] | None
    posterior: Callable[[jax.Array], dist.Distribution] | None
    sample_posterior: Callable[[jax.Array, jax.Array, int], jax.Array] | None
    labels: tuple[str, ...]


def rejection_sample(
    key: jax.Array,
    propose: Callable[[jax.Array, int], jax.Array],
    accept: Callable[[jax.Array], jax.Array],
    num_samples: int,
    dim: int,
    *,
    max_rounds: int = 1000,
) -> jax.Array:
    """Exact rejection sampling in a ``lax.while_loop`` (jittable and vmappable).

    Each round draws ``num_samples`` proposals and keeps the accepted ones, in proposal order,
    until ``num_samples`` are kept. The kept draws are i.i.d. from the proposal restricted to the
    acceptance region.

    Args:
        key: PRNG key.
        propose: ``(key, m) -> (m, dim)`` proposals.
        accept: ``(m, dim) -> (m,)`` booleans.
        num_samples: Draws to return (static).
        dim: Dimension of one draw (static).
        max_rounds: Bound on the number of rounds; rows still unfilled then are NaN, so a
            failure is visible instead of silent.

    Returns:
        ``(num_samples, dim)`` float32 draws.
    """

    def cond(state):
        _, _, count, i = state
        return (count < num_samples) & (i < max_rounds)

    def body(state):
        key, buf, count, i = state
        key, sub = jax.random.split(key)
        cand = jnp.asarray(propose(sub, num_samples), jnp.float32)
        ok = accept(cand)
        pos = count + jnp.cumsum(ok) - 1
        idx = jnp.where(ok, pos, num_samples)  # rejected -> out of range -> dropped
        buf = buf.at[idx].set(cand, mode="drop")
        return key, buf, count + jnp.sum(ok, dtype=jnp.int32), i + 1

    buf0 = jnp.full((num_samples, dim), jnp.nan, jnp.float32)
    state = (key, buf0, jnp.int32(0), jnp.int32(0))
    return jax.lax.while_loop(cond, body, state)[1]


class RestrictedToBox(dist.Distribution):
    """A distribution on a box whose ``log_prob`` is ``-inf`` outside the box.

    numpyro's truncated distributions do not mask ``log_prob`` outside their support; this
    wrapper does, so an exact posterior never gives finite density outside the prior box.

    Attributes:
        base_dist: The distribution (already normalised on the box).
        low: Lower corner, ``(d,)``.
        high: Upper corner, ``(d,)``.
    """

    arg_constraints = {}
    pytree_data_fields = ("base_dist", "low", "high")

    def __init__(self, base_dist: dist.Distribution, low: Any, high: Any):
        self.base_dist = base_dist
        self.low = jnp.asarray(low, jnp.float32)
        self.high = jnp.asarray(high, jnp.float32)
        super().__init__(batch_shape=base_dist.batch_shape, event_shape=base_dist.event_shape)

    @property
    def support(self):
        return dist.constraints.independent(dist.constraints.interval(self.low, self.high), 1)

    def sample(self, key, sample_shape=()):
        return self.base_dist.sample(key, sample_shape)

    def log_prob(self, value):
        inside = jnp.all((value >= self.low) & (value <= self.high), axis=-1)
        # clip so the base never sees out-of-support values (numpyro would warn)
        safe = jnp.clip(value, self.low, self.high)
        return jnp.where(inside, self.base_dist.log_prob(safe), -jnp.inf)

    @property
    def mean(self):
        return self.base_dist.mean
