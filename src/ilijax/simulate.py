"""Running a simulator over draws from the prior.

:func:`simulate` accepts two kinds of simulators:

- ``"jax"``: a JAX function ``simulator(key, theta) -> x`` for ONE parameter vector. It is
  vmapped over a batch and jit-compiled once; the last batch is padded to the batch size so all
  batches share one compiled program. Simulation ``i`` gets the key
  ``jax.random.fold_in(key_sim, i)``, so results do not depend on ``batch_size``.
- ``"numpy"``: any Python callable ``simulator(theta_batch) -> x_batch`` on a whole
  ``(b, theta_dim)`` float32 numpy batch, returning ``(b, ...)``. It receives no key; seed its
  random generator yourself.

``kind="auto"`` (the default) traces ``simulator(key, theta)`` once with abstract batch values
(``jax.jit(...).trace``); if tracing raises, the simulator is treated as ``"numpy"``. The trace
is reused for compilation, so auto-detection costs no extra trace. Pass ``kind`` explicitly to
skip the guess (e.g. for a Python simulator with side effects).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ilijax._checks import check_key
from ilijax.data import Dataset, check_data
from ilijax.priors import validate_prior

__all__ = ["run_simulator", "simulate"]

_KINDS = ("auto", "jax", "numpy")


def simulate(
    key: jax.Array,
    prior: Any,
    simulator: Callable[..., Any],
    num_simulations: int,
    *,
    batch_size: int = 1000,
    kind: str = "auto",
    nan_policy: str = "drop",
    progress: bool = True,
) -> Dataset:
    """Draws parameters from the prior and simulates data for each.

    Args:
        key: PRNG key; split into one key for the prior draws and one for the simulator.
        prior: A prior (numpyro distribution with ``event_shape == (theta_dim,)``).
        simulator: ``(key, theta) -> x`` for one theta (``kind="jax"``) or
            ``(theta_batch) -> x_batch`` on numpy batches (``kind="numpy"``); see the module
            docstring for ``"auto"``.
        num_simulations: Number of prior draws (rows before NaN rows are dropped).
        batch_size: Simulations per call of the (vmapped) simulator.
        kind: ``"auto"``, ``"jax"`` or ``"numpy"``.
        nan_policy: Passed to :func:`ilijax.data.check_data`: ``"drop"`` removes simulations
            with NaN/inf in theta or x with a counting ``UserWarning``; ``"raise"`` raises.
        progress: Show a progress bar (stderr; whole lines when it is not a terminal) when
            there is more than one batch.

    Returns:
        A float32 :class:`~ilijax.data.Dataset` with at most ``num_simulations`` rows.

    Raises:
        ValueError: On bad arguments, a simulator output whose leading axis is not the batch,
            or a simulator that fails both as a JAX and as a numpy function (``"auto"``).
    """
    key = check_key(key)
    prior = validate_prior(prior)
    if kind not in _KINDS:
        raise ValueError(f"Expected kind in {_KINDS}; got {kind!r}")
    if not isinstance(num_simulations, int | np.integer) or num_simulations < 1:
        raise ValueError(f"Expected num_simulations to be an int >= 1; got {num_simulations!r}")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"Expected batch_size to be an int >= 1; got {batch_size!r}")
    n, bs = int(num_simulations), int(min(batch_size, num_simulations))
    key_theta, key_sim = jax.random.split(key)
    theta = jnp.asarray(prior.sample(key_theta, (n,)), jnp.float32)
    x = run_simulator(key_sim, simulator, theta, batch_size=bs, kind=kind, progress=progress)
    return check_data(theta, x, nan_policy=nan_policy, min_rows=1)


def run_simulator(
    key: jax.Array,
    simulator: Callable[..., Any],
    theta: Any,
    *,
    batch_size: int = 1000,
    kind: str = "auto",
    progress: bool = False,
) -> np.ndarray:
    """Runs a simulator on given parameters (e.g. posterior draws for a predictive check).

    Row ``i`` is simulated with ``jax.random.fold_in(key, i)`` for a JAX simulator, so the result
    does not depend on ``batch_size``; see the module docstring for the two kinds.

    Args:
        key: PRNG key of the simulations (unused by numpy simulators).
        simulator: ``(key, theta) -> x`` (JAX) or ``(theta_batch) -> x_batch`` (numpy).
        theta: ``(n, theta_dim)`` parameters.
        batch_size: Simulations per call.
        kind: ``"auto"``, ``"jax"`` or ``"numpy"``.
        progress: Show a progress bar when there is more than one batch (see
            :mod:`ilijax._progress`).

    Returns:
        ``(n, x_dim)`` numpy array (a scalar output per simulation becomes ``x_dim == 1``). Rows
        are not checked for NaN here.
    """
    key = check_key(key)
    if kind not in _KINDS:
        raise ValueError(f"Expected kind in {_KINDS}; got {kind!r}")
    theta = jnp.asarray(theta, jnp.float32)
    if theta.ndim != 2 or theta.shape[0] < 1:
        raise ValueError(f"Expected theta of shape (n, theta_dim) with n >= 1; got {theta.shape}")
    n = int(theta.shape[0])
    bs = int(min(batch_size, n))
    key_sim = key
    starts = range(0, n, bs)

    run_batch = None
    jax_error: Exception | None = None
    if kind in ("auto", "jax"):
        batched = jax.jit(jax.vmap(simulator))
        keys0 = jax.vmap(jax.random.fold_in, (None, 0))(key_sim, jnp.arange(bs))
        try:
            traced = batched.trace(keys0, theta[:bs])
        except Exception as e:  # noqa: BLE001 -- any failure means "not a JAX simulator"
            if kind == "jax":
                raise
            jax_error = e
        else:
            compiled = traced.lower().compile()

            def run_batch(start: int) -> np.ndarray:
                idx = np.minimum(np.arange(start, start + bs), n - 1)  # pad by repeating
                keys = jax.vmap(jax.random.fold_in, (None, 0))(key_sim, jnp.asarray(idx))
                out = np.asarray(compiled(keys, theta[idx]))
                return out[: min(bs, n - start)]

    if run_batch is None:
        theta_np = np.asarray(theta)

        def run_batch(start: int) -> np.ndarray:
            batch = theta_np[start : start + bs]
            try:
                out = np.asarray(simulator(batch.copy()))
            except Exception as e:
                if jax_error is not None:
                    raise ValueError(
                        "Expected simulator to be a JAX function (key, theta) -> x or a numpy "
                        f"batch function (theta_batch) -> x_batch; tracing it as JAX failed "
                        f"with {jax_error!r} and calling it on a numpy batch failed with {e!r}"
                    ) from e
                raise
            if out.ndim < 1 or out.shape[0] != batch.shape[0]:
                raise ValueError(
                    f"Expected the numpy simulator to return one row per theta, shape "
                    f"({batch.shape[0]}, ...); got shape {out.shape}"
                )
            return out

    outputs = []
    iterator = starts
    if progress and len(starts) > 1:
        from ilijax._progress import progress_bar

        iterator = progress_bar(starts, desc="simulate", unit="batch", leave=False)
    for start in iterator:
        outputs.append(run_batch(start))
    x = np.concatenate(outputs, axis=0)
    if x.ndim == 1:
        x = x[:, None]  # scalar output per simulation -> x_dim 1
    return x
