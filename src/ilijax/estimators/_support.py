"""Learning in the unconstrained space of a prior's support."""

from __future__ import annotations

import jax.numpy as jnp
from numpyro.distributions.transforms import Transform

from ilijax.estimators._base import Estimator

# Points on the boundary of a closed support (a uniform draw equal to its lower bound, say) map to
# +-inf in the unconstrained space. They are moved to this finite value instead (sigmoid(17) is
# 1 - 4e-8, exp(-17) is 4e-8); `ilijax.npe` warns with a count when training data hit it.
BOUNDARY_U = 17.0


def to_unconstrained(bijector: Transform, theta):
    """``bijector^{-1}(theta)`` with boundary points (+-inf) replaced by +-``BOUNDARY_U``."""
    u = bijector.inv(theta)
    return jnp.where(jnp.isinf(u), jnp.sign(u) * BOUNDARY_U, u)


def on_support(core: Estimator, bijector: Transform) -> Estimator:
    """Turns a density over R^d into a density over the support of ``bijector``.

    ``core`` models ``u = bijector^{-1}(theta)``; the returned bundle is the pushforward through
    ``bijector`` (the prior's ``biject_to(support)``), so samples always lie in the support and no
    rejection loop is needed (ltu-ili's rejection sampler leaks or silently returns prior draws,
    its issues #151/#172/#203). By the change of variables,

        log q(theta | x) = log q_u(bijector^{-1}(theta) | x) - log |det J_bijector(u)|,

    and ``theta`` outside the support gets ``-inf``. Boundary points of a closed support are
    evaluated at ``u = +-BOUNDARY_U`` (see :func:`to_unconstrained`).
    """

    def init(key, theta, context):
        return core.init(key, to_unconstrained(bijector, jnp.asarray(theta, jnp.float32)), context)

    def log_prob(params, theta, context):
        u = to_unconstrained(bijector, theta)
        lp = core.log_prob(params, u, context) - bijector.log_abs_det_jacobian(u, theta)
        inside = bijector.codomain(theta)
        return jnp.where(inside & jnp.isfinite(lp), lp, -jnp.inf)

    def sample(params, key, context):
        return bijector(core.sample(params, key, context))

    return Estimator(init, log_prob, sample, core.spec)
