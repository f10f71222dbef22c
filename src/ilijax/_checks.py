"""Argument checks shared by the public entry points.

Every message names the field, what was expected and what was got (DESIGN.md, "Conventions").
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_float", "check_int", "check_key", "is_traced"]


def _describe(value: Any) -> str:
    if isinstance(value, jax.Array | np.ndarray):
        return f"an array of dtype {value.dtype} and shape {tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 60 else text[:57] + '...'}"


def check_key(key: Any, name: str = "key") -> jax.Array:
    """Returns ``key`` if it is one JAX PRNG key, else raises ``TypeError``.

    Accepted: a typed key from ``jax.random.key(seed)`` (shape ``()``), or a legacy raw key from
    ``jax.random.PRNGKey(seed)`` (``uint32`` of shape ``(2,)``), returned wrapped as the typed
    key of the same bits (so both give the same results). An int seed, a float array or a
    batch of keys gets a ``TypeError`` that names the field and says to pass
    ``jax.random.key(seed)``, instead of JAX's "invalid PRNG key data" deep inside a trace.
    """
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", ()))
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if shape == ():
            return key
        raise TypeError(
            f"Expected {name} to be one JAX PRNG key (shape ()); got a batch of keys of shape "
            f"{shape}. Pass one key, e.g. jax.random.key(seed)"
        )
    if dtype is not None and np.dtype(dtype) == np.uint32 and shape == (2,):
        return jax.random.wrap_key_data(key)  # a legacy jax.random.PRNGKey
    raise TypeError(
        f"Expected {name} to be a JAX PRNG key; got {_describe(key)}. Pass "
        f"jax.random.key(seed) (e.g. {name}=jax.random.key(0)), not a seed"
    )


def is_traced(*values: Any) -> bool:
    """Whether any leaf of ``values`` is a tracer (inside ``jit``, ``grad``, ``vmap``...)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(values))


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int; ``ValueError`` naming ``name`` unless it is an int (bools and floats
    rejected: a float would be truncated silently) in ``[low, high]``."""
    ok = not isinstance(value, bool) and isinstance(value, int | np.integer)
    if ok:
        ok = (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        want = ("" if low is None and high is None else f" >= {low}" if high is None
                else f" <= {high}" if low is None else f" in [{low}, {high}]")
        raise ValueError(f"Expected {name} to be an int{want}; got {value!r}")
    return int(value)


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                closed: bool = False) -> Any:
    """``value`` as a finite float in ``(low, high)`` (``[low, high)`` with ``closed``); else a
    ``ValueError`` naming ``name``. Bools and non-numbers are rejected, 0-d numeric arrays
    accepted; a traced value (an option vmapped over) cannot be checked and is returned as is.
    """
    v = value
    if isinstance(v, jax.core.Tracer):
        return value
    if isinstance(v, np.ndarray | jax.Array) and v.shape == () \
            and np.issubdtype(v.dtype, np.number):
        v = v.item()
    ok = not isinstance(v, bool) and isinstance(v, int | float | np.integer | np.floating)
    if ok:
        v = float(v)
        ok = math.isfinite(v) and (low is None or (v >= low if closed else v > low)) \
            and (high is None or v < high)
    if not ok:
        lo = "[" if closed else "("
        want = ("" if low is None and high is None
                else f" {'>=' if closed else '>'} {low:g}" if high is None
                else f" < {high:g}" if low is None else f" in {lo}{low:g}, {high:g})")
        raise ValueError(f"Expected {name} to be a finite float{want}; got {value!r}")
    return v
