"""ilijax: JAX-native implicit likelihood inference (simulation-based inference).

Simulate ``(theta, x)`` pairs, train ensembles of neural posterior estimators in one compiled
program, sample posteriors for whole test sets in one call (directly for NPE, by MCMC or VI for
NLE and NRE, all chains of all observations in one compiled program), and save them without
pickle::

    import jax, ilijax
    task = ilijax.tasks.two_moons()
    data = ilijax.simulate(jax.random.key(0), task.prior, task.simulator, 10_000)
    posterior, info = ilijax.npe(jax.random.key(1), data.theta, data.x, prior=task.prior,
                                 estimator=ilijax.estimators.nsf(), ensemble=5)
    draws = posterior.sample(jax.random.key(2), data.x[:100], 1_000)   # (100, 1000, 2)
    ilijax.save(posterior, "posterior.npz")
"""

from ilijax import data as data
from ilijax import diagnostics as diagnostics
from ilijax import estimators as estimators
from ilijax import loaders as loaders
from ilijax import nn as nn
from ilijax import plots as plots
from ilijax import priors as priors
from ilijax import samplers as samplers
from ilijax import tasks as tasks
from ilijax._version import __version__ as __version__
from ilijax.data import Dataset as Dataset
from ilijax.diagnostics import validate as validate
from ilijax.estimators import Estimator as Estimator
from ilijax.inference.nle import nle as nle
from ilijax.inference.npe import npe as npe
from ilijax.inference.nre import nre as nre
from ilijax.inference.sequential import RoundInfo as RoundInfo
from ilijax.inference.sequential import sequential as sequential
from ilijax.io import load as load
from ilijax.io import save as save
from ilijax.posterior import Posterior as Posterior
from ilijax.posterior import SamplingInfo as SamplingInfo
from ilijax.simulate import simulate as simulate
from ilijax.train import FitInfo as FitInfo
from ilijax.train import fit as fit

__all__ = [
    "Dataset",
    "Estimator",
    "FitInfo",
    "Posterior",
    "RoundInfo",
    "SamplingInfo",
    "__version__",
    "data",
    "diagnostics",
    "estimators",
    "fit",
    "load",
    "loaders",
    "nle",
    "nn",
    "npe",
    "nre",
    "plots",
    "priors",
    "samplers",
    "sequential",
    "save",
    "simulate",
    "tasks",
    "validate",
]
