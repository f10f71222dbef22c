"""Samplers for posteriors without a direct sampler (NLE, NRE) or as an alternative to it.

All samplers share one contract, for ONE observation (the :class:`~ilijax.Posterior` vmaps it
over a batch of observations and compiles one program for all of them)::

    run(key, logdensity_fn, init, num_samples, **options) -> (draws, stats)

``logdensity_fn(u)`` is the unnormalised log posterior of one point of the unconstrained space
of the prior's support, ``init`` holds ``(num_chains, dim)`` starting points, ``draws`` has
shape ``(num_chains, draws_per_chain, dim)`` and ``stats`` maps names to per-chain arrays.
Choose one with ``posterior.sample(key, x, n, method=...)``:

======== =============================================================== =====================
method   algorithm                                                        library
======== =============================================================== =====================
direct   the estimator's own sampler (NPE only)                           ilijax
nuts     No-U-Turn sampler, window adaptation (default for NLE/NRE)       blackjax
hmc      HMC, fixed leapfrog steps, window adaptation                     blackjax
mala     preconditioned MALA (HMC with one leapfrog step), adaptation     blackjax
slice    coordinate-wise slice sampling with doubling                     blackjax
aies     affine-invariant ensemble sampler (emcee's algorithm)            numpyro
ess      ensemble slice sampling (zeus's algorithm)                       numpyro
vi       a normalizing flow fitted per observation (reverse KL)           ilijax + optax
======== =============================================================== =====================
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

__all__ = ["ENSEMBLE_METHODS", "METHODS", "RHAT_THRESHOLD", "get", "default_num_chains",
           "rhat_threshold"]

#: R-hat above this marks an observation whose chains disagree (Vehtari et al. 2021), for up
#: to 4 chains; more chains get the higher threshold of :func:`rhat_threshold`.
RHAT_THRESHOLD = 1.01

_REGISTRY = {
    "nuts": "ilijax.samplers.mcmc:nuts",
    "hmc": "ilijax.samplers.mcmc:hmc",
    "mala": "ilijax.samplers.mcmc:mala",
    "slice": "ilijax.samplers.mcmc:slice",
    "aies": "ilijax.samplers.mcmc:aies",
    "ess": "ilijax.samplers.mcmc:ess",
    "vi": "ilijax.samplers.vi:run",
}

#: Every ``method`` accepted by ``Posterior.sample``.
METHODS = ("direct", *_REGISTRY)
#: Samplers whose chains are the walkers of one ensemble.
ENSEMBLE_METHODS = ("aies", "ess")


def get(method: str) -> Callable:
    """The ``run`` function of a sampler by name (see the table above)."""
    if method not in _REGISTRY:
        raise ValueError(f"Expected method in {METHODS}; got {method!r}")
    module, attr = _REGISTRY[method].split(":")
    return getattr(importlib.import_module(module), attr)


def default_num_chains(method: str, dim: int, num_samples: int | None = None) -> int:
    """Chains per observation when the caller gives none.

    For the single-chain samplers (nuts, hmc, mala, slice) many short chains: one per 64 kept
    draws, between 4 and 32 (15 for 1,000 draws, 32 from 2,048). Measured on two_moons NLE (sbibm
    observations 1-5, 10^4 draws; ``benchmarks/README.md``): 32 NUTS chains with 200 warm-up
    steps score C2ST 0.556 in the time 4 chains with 500 steps score 0.599, as SIR starts
    spread more chains over the modes by their mass. Without ``num_samples``: 4. For the
    ensemble samplers the smallest even number of walkers that is at least ``max(4 * dim,
    16)``; for ``vi`` 16 starting points, whose mean and spread place the initial variational
    distribution."""
    if method in ENSEMBLE_METHODS:
        n = max(4 * dim, 16)
        return n + n % 2
    if method == "vi":
        return 16
    if num_samples is None:
        return 4
    return int(min(32, max(4, num_samples // 64)))


def rhat_threshold(num_chains: int, ess_target: float = 400.0) -> float:
    """The R-hat above which ``sample`` warns, for ``num_chains`` chains.

    For stationary chains R-hat and the effective sample size are tied: R-hat ~ sqrt(1 + m /
    ESS) for m chains (Vats & Knudson 2021, "Revisiting the Gelman-Rubin diagnostic", Stat.
    Sci. 36). A fixed 1.01 (Vehtari et al. 2021, meant for about 4 chains) therefore fires on
    well-mixed runs of many short chains (32 chains of 63 draws of a Gaussian read 1.014-1.03).
    The threshold is the R-hat that corresponds to ``ess_target`` effective draws (400, Vehtari
    et al.'s bulk-ESS floor), and never below 1.01: 1.01 up to 4 chains, 1.039 for 32."""
    return float(max(RHAT_THRESHOLD, math.sqrt(1.0 + num_chains / ess_target)))
