"""Two moons task (sbibm ``two_moons``)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ilijax.priors import uniform
from ilijax.tasks._base import Task, rejection_sample

__all__ = ["two_moons"]

_R_LOC, _R_SCALE, _SHIFT = 0.1, 0.01, 0.25
_SQRT2 = math.sqrt(2.0)


def _offset(theta):
    """``g(theta) = (-|theta1 + theta2| / sqrt2, (-theta1 + theta2) / sqrt2)``."""
    return jnp.stack(
        [-jnp.abs(theta[0] + theta[1]) / _SQRT2, (-theta[0] + theta[1]) / _SQRT2]
    )


def _draw_p(key, shape=()):
    ka, kr = jax.random.split(key)
    a = jax.random.uniform(ka, shape, jnp.float32, -math.pi / 2, math.pi / 2)
    r = _R_LOC + _R_SCALE * jax.random.normal(kr, shape, jnp.float32)
    return jnp.stack([r * jnp.cos(a) + _SHIFT, r * jnp.sin(a)], axis=-1)


def two_moons() -> Task:
    """Two moons: a bimodal, crescent-shaped posterior in 2-D.

    Prior ``U(-1, 1)^2``. Simulator: ``a ~ U(-pi/2, pi/2)``, ``r ~ N(0.1, 0.01^2)``,
    ``p = (r cos a + 0.25, r sin a)``, ``x = p + g(theta)`` with
    ``g(theta) = (-|theta1 + theta2| / sqrt2, (-theta1 + theta2) / sqrt2)``.

    Likelihood (change of variables from polar ``(r, a)`` to ``u = p - (0.25, 0)``, Jacobian
    ``r``): ``p(x | theta) = N(|u|; 0.1, 0.01^2) / (pi |u|)`` for ``u_1 > 0``, else 0, with
    ``u = x - g(theta) - (0.25, 0)``. This ignores draws with ``r < 0`` (probability ~1e-23).

    Reference posterior (exact, as in sbibm): draw ``p``, set ``q = x - p``, solve
    ``g(theta) = q`` (``|theta1 + theta2| = -sqrt2 q1``, ``theta2 - theta1 = sqrt2 q2``), pick
    the sign of ``theta1 + theta2`` by a fair coin (both branches have equal likelihood and the
    map is linear with constant Jacobian), and reject draws outside the prior box.

    Returns:
        A :class:`~ilijax.tasks.Task` with exact ``log_likelihood`` and ``sample_posterior``
        (``posterior`` is None: no closed-form normaliser).

    References:
        Greenberg, Nonnenmacher, Macke, "Automatic Posterior Transformation for
        Likelihood-Free Inference", ICML 2019. Lueckmann et al., "Benchmarking Simulation-Based
        Inference", AISTATS 2021 (sbibm task ``two_moons``).
    """
    prior = uniform([-1.0, -1.0], [1.0, 1.0])

    def simulator(key, theta):
        theta = jnp.asarray(theta, jnp.float32)
        return _draw_p(key) + _offset(theta)

    def log_likelihood(theta, x):
        u = x - _offset(theta) - jnp.array([_SHIFT, 0.0], jnp.float32)
        r = jnp.sqrt(jnp.sum(u**2))
        log_r = -0.5 * ((r - _R_LOC) / _R_SCALE) ** 2 - math.log(_R_SCALE * math.sqrt(2 * math.pi))
        lp = log_r - math.log(math.pi) - jnp.log(r)
        return jnp.where(u[0] > 0, lp, -jnp.inf)

    def sample_posterior(key, x, num_samples):
        x = jnp.asarray(x, jnp.float32)

        def propose(k, m):
            kp, ks = jax.random.split(k)
            q = x - _draw_p(kp, (m,))
            abs_s = -_SQRT2 * q[:, 0]  # |theta1 + theta2|; negative -> no solution
            d = _SQRT2 * q[:, 1]  # theta2 - theta1
            sign = jnp.where(jax.random.bernoulli(ks, 0.5, (m,)), 1.0, -1.0)
            s = sign * abs_s
            theta = jnp.stack([(s - d) / 2, (s + d) / 2], axis=-1)
            # encode "no solution" as a point outside the box
            return jnp.where((abs_s >= 0)[:, None], theta, 2.0)

        def accept(theta):
            return jnp.all(jnp.abs(theta) <= 1.0, axis=-1)

        return rejection_sample(key, propose, accept, num_samples, 2)

    return Task("two_moons", prior, simulator, 2, 2, log_likelihood, None, sample_posterior,
                ("theta_1", "theta_2"))
