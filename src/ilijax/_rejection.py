"""Batch rejection sampling with static shapes, shared by the sbibm tasks' exact posteriors and
theta-space NPE (:func:`ilijax.estimators._support.truncated_to_support`)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ilijax._checks import check_key


def rejection_sample(
    key: jax.Array,
    propose: Callable[[jax.Array, int], jax.Array],
    accept: Callable[[jax.Array], jax.Array],
    num_samples: int,
    dim: int,
    *,
    max_rounds: int = 1000,
    block: int | None = None,
) -> jax.Array:
    """Exact rejection sampling in a ``lax.while_loop`` (jittable and vmappable).

    Each round draws ``block`` proposals (default ``num_samples``) and writes the accepted ones,
    in proposal order, into the ``(num_samples, dim)`` buffer until ``num_samples`` are kept.
    The kept draws are i.i.d. from the proposal restricted to the acceptance region (the
    stopping rule looks only at their count). A smaller block wastes fewer proposals (at most
    one block beyond those needed) at the price of more rounds; ``propose`` is traced once.

    Args:
        key: PRNG key.
        propose: ``(key, m) -> (m, dim)`` proposals.
        accept: ``(m, dim) -> (m,)`` booleans.
        num_samples: Draws to return (static).
        dim: Dimension of one draw (static).
        max_rounds: Bound on the number of rounds; rows still unfilled then are NaN, so a
            failure is visible instead of silent.
        block: Proposals per round (static); default ``num_samples``.

    Returns:
        ``(num_samples, dim)`` float32 draws.
    """
    key = check_key(key)
    block = num_samples if block is None else block

    def cond(state):
        _, _, count, i = state
        return (count < num_samples) & (i < max_rounds)

    def body(state):
        key, buf, count, i = state
        key, sub = jax.random.split(key)
        cand = jnp.asarray(propose(sub, block), jnp.float32)
        ok = accept(cand)
        pos = count + jnp.cumsum(ok) - 1
        idx = jnp.where(ok, pos, num_samples)  # rejected -> out of range -> dropped
        buf = buf.at[idx].set(cand, mode="drop")
        return key, buf, count + jnp.sum(ok, dtype=jnp.int32), i + 1

    buf0 = jnp.full((num_samples, dim), jnp.nan, jnp.float32)
    state = (key, buf0, jnp.int32(0), jnp.int32(0))
    return jax.lax.while_loop(cond, body, state)[1]
