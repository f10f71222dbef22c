"""MCMC for one observation, in the unconstrained space: blackjax and numpyro kernels.

Every sampler here has the contract of :mod:`ilijax.samplers`::

    run(key, logdensity_fn, init, num_samples, **options) -> (draws, stats)

- ``logdensity_fn(u) -> ()``: the unnormalised log posterior of one point ``u`` of shape
  ``(dim,)`` in the unconstrained space of the prior's support (``-inf`` where it is zero);
- ``init``: ``(num_chains, dim)`` starting points (prior draws, see
  :meth:`ilijax.Posterior.sample`);
- ``draws``: ``(num_chains, ceil(num_samples / num_chains), dim)`` after warm-up and thinning;
- ``stats``: a dict of arrays, one value per chain (``acceptance``, ``divergences``, ...).

The functions are pure JAX (``lax.scan`` over steps, ``vmap`` over chains), so the posterior
vmaps them over a whole batch of observations and compiles one program for all chains of all
observations.

Samplers:

- ``nuts``: the No-U-Turn sampler (Hoffman & Gelman 2014, JMLR 15) from blackjax, each chain
  with Stan's window adaptation of the step size (dual averaging, Nesterov 2009) and a diagonal
  mass matrix (blackjax ``window_adaptation``).
- ``hmc``: Hamiltonian Monte Carlo (Duane et al. 1987; Neal 2011) with a fixed number of
  leapfrog steps, same adaptation.
- ``mala``: the Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996). MALA is
  HMC with a single leapfrog step (Neal 2011, "MCMC using Hamiltonian dynamics", sec. 5.2): the
  proposal and the acceptance ratio coincide. blackjax's own ``mala`` kernel has no mass matrix,
  so we run blackjax's HMC kernel with one step to get a preconditioned MALA whose step size and
  diagonal mass matrix are tuned by the same window adaptation, at the optimal acceptance rate
  0.574 (Roberts & Rosenthal 1998).
- ``slice``: coordinate-wise slice sampling with doubling (Neal 2003) from blackjax
  (``coordinate_slice``); no tuning needed beyond the initial widths.
- ``aies``: the affine-invariant ensemble sampler (Goodman & Weare 2010, the algorithm of
  emcee, ltu-ili's sampler), numpyro's ``AIES`` kernel; the chains are the walkers.
- ``ess``: ensemble slice sampling (Karamanis & Beutler 2021, zeus), numpyro's ``ESS``
  kernel; its scale ``mu`` is tuned during warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.base import get_filter_adapt_info_fn

from ilijax._checks import check_float, check_int, check_key

Array = jax.Array

__all__ = ["aies", "ess", "hmc", "mala", "nuts", "slice"]


_check_int = check_int


def _check_float(name: str, value: Any, low: float, high: float | None = None) -> None:
    check_float(name, value, low, high)


def _check_moves(moves: Any) -> None:
    if moves is None:
        return
    if not isinstance(moves, dict) or not moves:
        raise ValueError(
            f"Expected moves to be None or a non-empty dict of move -> weight; got {moves!r}"
        )
    weights = list(moves.values())
    if not all(not isinstance(w, bool) and isinstance(w, int | float | np.integer | np.floating)
               and math.isfinite(w) and w >= 0 for w in weights) or not sum(weights) > 0:
        raise ValueError(
            f"Expected moves' weights to be finite numbers >= 0, not all 0; got {weights!r}"
        )


def _check(init: Array, num_samples: int, num_warmup: int, thin: int) -> tuple[int, int, int]:
    if init.ndim != 2:
        raise ValueError(f"Expected init of shape (num_chains, dim); got {init.shape}")
    num_samples = _check_int("num_samples", num_samples, 1)
    _check_int("num_warmup", num_warmup, 0)
    _check_int("thin", thin, 1)
    chains, dim = init.shape
    return chains, dim, -(-num_samples // chains)


def _thinned_scan(step: Callable, state, key: Array, per_chain: int, thin: int):
    """Runs ``per_chain * thin`` steps, keeping every ``thin``-th state's output."""

    def outer(state, k):
        def inner(carry, kk):
            state, _ = carry
            state, out = step(state, kk)
            return (state, out), None

        keys = jax.random.split(k, thin)
        state, out = step(state, keys[0])
        (state, out), _ = jax.lax.scan(inner, (state, out), keys[1:])
        return state, out

    return jax.lax.scan(outer, state, jax.random.split(key, per_chain))


def _adapted_hmc(key, algorithm, logdensity_fn, init, num_samples, *, num_warmup, thin,
                 target_acceptance, **kernel_options):
    chains, dim, per_chain = _check(init, num_samples, num_warmup, thin)
    _check_float("target_acceptance", target_acceptance, 0.0, 1.0)

    def one_chain(key, position):
        k_warm, k_run = jax.random.split(key)
        if num_warmup > 0:
            adapt = blackjax.window_adaptation(
                algorithm, logdensity_fn, target_acceptance_rate=target_acceptance,
                adaptation_info_fn=get_filter_adapt_info_fn(), **kernel_options)
            (state, params), _ = adapt.run(k_warm, position, num_steps=num_warmup)
        else:
            state = algorithm.init(position, logdensity_fn)
            params = {"step_size": jnp.asarray(0.1), "inverse_mass_matrix": jnp.ones(dim)}
        kernel = algorithm(logdensity_fn, **{**kernel_options, **params})

        def step(state, k):
            state, info = kernel.step(k, state)
            return state, (state.position, info.acceptance_rate, info.is_divergent,
                           info.num_integration_steps)

        _, (pos, acc, div, steps) = _thinned_scan(step, state, k_run, per_chain, thin)
        stats = {"acceptance": jnp.mean(acc), "divergences": jnp.sum(div),
                 "step_size": params["step_size"],
                 "integration_steps": jnp.mean(steps.astype(jnp.float32))}
        return pos, stats

    return jax.vmap(one_chain)(jax.random.split(key, chains), init)


def nuts(key, logdensity_fn, init, num_samples, *, num_warmup: int = 200, thin: int = 1,
         target_acceptance: float = 0.8, max_num_doublings: int = 10):
    """NUTS with window adaptation, every chain on its own (see the module docstring).

    Args:
        key: PRNG key.
        logdensity_fn: ``u -> log density`` of one point in the unconstrained space.
        init: ``(num_chains, dim)`` starting points.
        num_samples: Total draws over the chains (each chain keeps ``ceil(n / num_chains)``).
        num_warmup: Adaptation steps per chain (discarded). 200 by default, measured with
            the many short chains ``Posterior.sample`` runs by default (see
            :func:`ilijax.samplers.default_num_chains`); raise it for few long chains.
        thin: Keep every ``thin``-th step.
        target_acceptance: Target mean acceptance of the step-size adaptation, in ``(0, 1)``
            (Stan: 0.8).
        max_num_doublings: Maximum tree depth (an int >= 1).

    Returns:
        ``(draws (num_chains, per_chain, dim), stats)``.

    Raises:
        ValueError: On a bad option (e.g. ``thin=0``, ``target_acceptance=1.0``,
            ``max_num_doublings=2.5``); the message names it.
    """
    key = check_key(key)
    _check_int("max_num_doublings", max_num_doublings, 1)
    return _adapted_hmc(key, blackjax.nuts, logdensity_fn, init, num_samples,
                        num_warmup=num_warmup, thin=thin, target_acceptance=target_acceptance,
                        max_num_doublings=max_num_doublings)


def hmc(key, logdensity_fn, init, num_samples, *, num_warmup: int = 200, thin: int = 1,
        target_acceptance: float = 0.8, num_integration_steps: int = 16):
    """HMC with a fixed number of leapfrog steps and window adaptation (arguments as
    :func:`nuts`)."""
    key = check_key(key)
    _check_int("num_integration_steps", num_integration_steps, 1)
    return _adapted_hmc(key, blackjax.hmc, logdensity_fn, init, num_samples,
                        num_warmup=num_warmup, thin=thin, target_acceptance=target_acceptance,
                        num_integration_steps=num_integration_steps)


def mala(key, logdensity_fn, init, num_samples, *, num_warmup: int = 200, thin: int = 1,
         target_acceptance: float = 0.574):
    """Preconditioned MALA: HMC with one leapfrog step (see the module docstring), with window
    adaptation of the step size and a diagonal mass matrix (arguments as :func:`nuts`)."""
    key = check_key(key)
    return _adapted_hmc(key, blackjax.hmc, logdensity_fn, init, num_samples,
                        num_warmup=num_warmup, thin=thin, target_acceptance=target_acceptance,
                        num_integration_steps=1)


def slice(key, logdensity_fn, init, num_samples, *, num_warmup: int = 200, thin: int = 1,
          width: float = 1.0, max_expansions: int = 10):
    """Coordinate-wise slice sampling with doubling (Neal 2003), blackjax ``coordinate_slice``.

    Args:
        width: Initial bracket width per coordinate in the unconstrained space (finite,
            > 0); doubling grows it up to ``2**max_expansions`` times (an int >= 0), shrinkage
            narrows it.
        num_warmup: Burn-in steps per chain (discarded; nothing is tuned).
        Others as :func:`nuts`.
    """
    key = check_key(key)
    chains, dim, per_chain = _check(init, num_samples, num_warmup, thin)
    _check_float("width", width, 0.0)
    _check_int("max_expansions", max_expansions, 0)
    algo = blackjax.coordinate_slice(logdensity_fn, initial_widths=float(width),
                                     max_expansions=int(max_expansions))

    def one_chain(key, position):
        k_warm, k_run = jax.random.split(key)
        state = algo.init(position)

        def step(state, k):
            state, info = algo.step(k, state)
            return state, (state.position, info)

        if num_warmup > 0:
            state, _ = jax.lax.scan(step, state, jax.random.split(k_warm, num_warmup))
        _, (pos, _) = _thinned_scan(step, state, k_run, per_chain, thin)
        return pos, {"acceptance": jnp.asarray(1.0)}  # slice moves are always accepted

    return jax.vmap(one_chain)(jax.random.split(key, chains), init)


def _ensemble(key, kernel, init, num_samples, num_warmup, thin):
    chains, dim, per_chain = _check(init, num_samples, num_warmup, thin)
    if chains < 2 * dim or chains % 2:
        raise ValueError(
            f"Expected an even num_chains (walkers) >= 2 * dim = {2 * dim} for an ensemble "
            f"sampler; got {chains}"
        )
    # numpyro asks for one raw key per walker; its kernel keeps Python state set by init, so it
    # is built inside the traced function (one per observation under vmap).
    raw = jax.random.key_data(jax.random.split(key, chains + 1))
    state = kernel.init(raw[1:], num_warmup, init_params=init)

    def step(state, _):
        state = kernel.sample(state, (), {})
        return state, state.z

    if num_warmup > 0:
        state, _ = jax.lax.scan(step, state, None, length=num_warmup)

    def thinned(state, _):
        state, _ = jax.lax.scan(step, state, None, length=thin - 1) if thin > 1 else (state, 0)
        return step(state, None)

    state, z = jax.lax.scan(thinned, state, None, length=per_chain)  # (per_chain, chains, dim)
    # AIES keeps a running mean acceptance (warm-up included); ESS has none.
    acc = getattr(state.inner_state, "mean_accept_prob", jnp.nan)
    return jnp.swapaxes(z, 0, 1), {"acceptance": jnp.full((chains,), acc, jnp.float32)}


def aies(key, logdensity_fn, init, num_samples, *, num_warmup: int = 500, thin: int = 10,
         moves: dict | None = None):
    """The affine-invariant ensemble sampler (Goodman & Weare 2010), numpyro's ``AIES``.

    The chains are the walkers: ``num_chains`` must be even and at least ``2 * dim``.

    Args:
        moves: numpyro moves and weights (default: the stretch move ``{AIES.StretchMove(): 1}``).
        thin: Keep every ``thin``-th step (default 10: stretch-move walkers are strongly
            autocorrelated, and a step costs only ``num_chains`` density evaluations).
        Others as :func:`nuts`; warm-up steps are discarded.
    """
    key = check_key(key)
    from numpyro.infer import AIES

    _check_moves(moves)
    kernel = AIES(potential_fn=lambda u: -logdensity_fn(u), moves=moves)
    return _ensemble(key, kernel, init, num_samples, num_warmup, thin)


def ess(key, logdensity_fn, init, num_samples, *, num_warmup: int = 500, thin: int = 1,
        moves: dict | None = None, max_steps: int = 10_000, max_iter: int = 10_000):
    """Ensemble slice sampling (Karamanis & Beutler 2021), numpyro's ``ESS``.

    The chains are the walkers (even, at least ``2 * dim``); the scale ``mu`` is tuned during
    warm-up. Arguments as :func:`aies`; ``max_steps``/``max_iter`` bound the stepping-out and
    shrinking loops.
    """
    key = check_key(key)
    from numpyro.infer import ESS

    _check_moves(moves)
    _check_int("max_steps", max_steps, 1)
    _check_int("max_iter", max_iter, 1)
    kernel = ESS(potential_fn=lambda u: -logdensity_fn(u), moves=moves, max_steps=max_steps,
                 max_iter=max_iter)
    return _ensemble(key, kernel, init, num_samples, num_warmup, thin)
