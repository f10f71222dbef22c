"""Bernoulli generalised linear model (sbibm ``bernoulli_glm``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ilijax.priors import multivariate_normal
from ilijax.tasks._base import Task

__all__ = ["bernoulli_glm", "design_matrix", "prior_precision"]

_T = 100  # time bins
_LAGS = 9  # filter length


def design_matrix() -> np.ndarray:
    """sbibm's ``(100, 10)`` design matrix: a column of ones, then the stimulus at lags 0-8.

    The stimulus is 100 standard-normal values from numpy's legacy generator
    (``RandomState(42).randn(100)``, float32), which is what sbibm's ``stimulus_I.pt`` holds;
    row ``t`` holds ``stimulus[t - j]`` in column ``j + 1`` (zero before the start).
    ``tests/test_references.py`` checks this against the file in sbibm's wheel.
    """
    stimulus = np.random.RandomState(42).randn(_T).astype(np.float32)
    design = np.zeros((_T, _LAGS + 1), np.float32)
    design[:, 0] = 1.0
    for lag in range(_LAGS):
        design[lag:, lag + 1] = stimulus[: _T - lag]
    return design


def prior_precision() -> np.ndarray:
    """The prior precision: 0.5 for the offset; ``F^T F`` for the filter, with
    ``F = D^2 + diag(sqrt(i / 9))``, ``D`` the first-difference matrix (a smoothness prior)."""
    m = _LAGS
    d = np.eye(m) - np.eye(m, k=-1)
    f = d @ d + np.diag(np.sqrt(np.arange(m) / m))
    precision = np.zeros((m + 1, m + 1))
    precision[0, 0] = 0.5
    precision[1:, 1:] = f.T @ f
    return precision


def bernoulli_glm() -> Task:
    """A GLM neuron: 100 Bernoulli spikes driven by a white-noise stimulus through a filter.

    ``theta = (b, w_1..w_9)``, prior ``N(0, P^-1)`` with the smoothness precision
    :func:`prior_precision`. With the design matrix ``X`` (:func:`design_matrix`),
    ``y_t ~ Bernoulli(sigmoid((X theta)_t))`` and the data are the sufficient statistics
    ``x = X^T y`` (the spike count and the 9 spike-triggered sums, sbibm's summary).

    Likelihood: ``p(y | theta) = exp(theta . X^T y - sum_t softplus((X theta)_t))`` depends on
    ``y`` only through ``x``, so ``p(x | theta) = N(x) exp(theta . x - sum_t softplus((X
    theta)_t))`` with ``N(x)`` the number of spike trains with statistics ``x``.
    ``log_likelihood`` omits ``log N(x)``: it is exact up to a constant per observation, which
    leaves posteriors, MCMC and density ranks unchanged. There is no closed-form posterior
    (sbibm's reference draws come from Polya-gamma Gibbs sampling).

    Returns:
        A :class:`~ilijax.tasks.Task` with ``log_likelihood`` (up to a constant in ``x``);
        ``posterior`` and ``sample_posterior`` are None.

    References:
        Lueckmann et al., "Benchmarking Simulation-Based Inference", AISTATS 2021 (sbibm task
        ``bernoulli_glm``); Gonçalves et al., "Training deep neural density estimators to
        identify mechanistic models of neural dynamics", eLife 2020.
    """
    design = jnp.asarray(design_matrix())
    cov = np.linalg.inv(prior_precision())
    prior = multivariate_normal(np.zeros(_LAGS + 1), (cov + cov.T) / 2)

    def simulator(key, theta):
        theta = jnp.asarray(theta, jnp.float32)
        spikes = jax.random.bernoulli(key, jax.nn.sigmoid(design @ theta))
        return design.T @ spikes.astype(jnp.float32)

    def log_likelihood(theta, x):
        return jnp.dot(theta, x) - jnp.sum(jax.nn.softplus(design @ theta))

    labels = ("b", *(f"w_{i + 1}" for i in range(_LAGS)))
    return Task("bernoulli_glm", prior, simulator, _LAGS + 1, _LAGS + 1, log_likelihood, None,
                None, labels)
