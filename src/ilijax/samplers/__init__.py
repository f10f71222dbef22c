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
from collections.abc import Callable

__all__ = ["ENSEMBLE_METHODS", "METHODS", "get", "default_num_chains"]

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


def default_num_chains(method: str, dim: int) -> int:
    """4 chains for the single-chain samplers; for the ensemble samplers the smallest even
    number of walkers that is at least ``max(4 * dim, 16)``; for ``vi`` 16 starting points,
    whose mean and spread place the initial variational distribution."""
    if method in ENSEMBLE_METHODS:
        n = max(4 * dim, 16)
        return n + n % 2
    return 16 if method == "vi" else 4
