"""The :class:`Task` bundle and helpers shared by the tasks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from ilijax._rejection import rejection_sample as rejection_sample

__all__ = ["ExactPosterior", "RestrictedToBox", "Task", "rejection_sample"]

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


class ExactPosterior:
    """A task's exact posterior with the batched interface of :class:`ilijax.Posterior`.

    ``sample(key, x, n)`` draws the task's reference posterior for one observation ``(x_dim,)``
    or a batch ``(b, x_dim)`` (observation ``i`` uses ``jax.random.split(key, b)[i]``), and
    ``log_prob(theta, x)`` broadcasts like :meth:`ilijax.Posterior.log_prob`. The density is the
    closed-form posterior where the task has one (``normalized`` is then True); otherwise it is
    ``log p(x | theta) + log p(theta)``, exact up to a constant per observation
    (``normalized`` False), which is all that density ranks (HPD coverage) need. Used as the
    calibrated reference (positive control) of the diagnostics.

    Args:
        task: A :class:`Task` with ``sample_posterior``.
    """

    def __init__(self, task: Task):
        if task.sample_posterior is None:
            raise ValueError(f"Expected a task with exact posterior draws; {task.name} has none")
        self.task = task
        self.prior = task.prior
        self.theta_dim = task.theta_dim
        self.x_dim = task.x_dim
        self.labels = task.labels
        self.method = "exact"
        self.normalized = task.posterior is not None
        if task.posterior is not None:
            post = task.posterior
            self._log_prob_one = lambda theta, x: post(x).log_prob(theta)
        elif task.log_likelihood is not None:
            lik, prior = task.log_likelihood, task.prior
            self._log_prob_one = lambda theta, x: lik(theta, x) + prior.log_prob(theta)
        else:
            self._log_prob_one = None
        self._sample = jax.jit(
            jax.vmap(task.sample_posterior, in_axes=(0, 0, None)), static_argnums=2
        )

    def sample(self, key: jax.Array, x: Any, num_samples: int, **_: Any) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        if x.ndim == 1:
            return self._sample(key[None], x[None], int(num_samples))[0]
        return self._sample(jax.random.split(key, x.shape[0]), x, int(num_samples))

    def log_prob(self, theta: Any, x: Any) -> jax.Array:
        if self._log_prob_one is None:
            raise ValueError(f"Task {self.task.name} has neither a posterior nor a likelihood")
        theta = jnp.asarray(theta, jnp.float32)
        x = jnp.asarray(x, jnp.float32)
        one = self._log_prob_one
        if x.ndim == 1:
            return jax.vmap(one, (0, None))(theta.reshape(-1, self.theta_dim), x).reshape(
                theta.shape[:-1]
            )
        if theta.ndim == 3:
            return jax.vmap(jax.vmap(one, (0, None)), (0, 0))(theta, x)
        return jax.vmap(one)(theta, x)
