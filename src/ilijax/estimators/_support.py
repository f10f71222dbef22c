"""Learning in the unconstrained space of a prior's support."""

from __future__ import annotations

import jax.numpy as jnp
from numpyro.distributions.transforms import Transform

from ilijax.estimators._base import Estimator


def on_support(core: Estimator, bijector: Transform) -> Estimator:
    """Turns a density over R^d into a density over the support of ``bijector``.

    ``core`` models ``u = bijector^{-1}(theta)``; the returned bundle is the pushforward through
    ``bijector`` (the prior's ``biject_to(support)``), so samples always lie in the support and no
    rejection loop is needed (ltu-ili's rejection sampler leaks or silently returns prior draws,
    its issues #151/#172/#203). By the change of variables,

        log q(theta | x) = log q_u(bijector^{-1}(theta) | x) - log |det J_bijector(u)|,

    and ``theta`` outside the support gets ``-inf``.
    """

    def init(key, theta, context):
        return core.init(key, bijector.inv(jnp.asarray(theta, jnp.float32)), context)

    def log_prob(params, theta, context):
        u = bijector.inv(theta)
        lp = core.log_prob(params, u, context) - bijector.log_abs_det_jacobian(u, theta)
        inside = bijector.codomain(theta)
        return jnp.where(inside & jnp.isfinite(lp), lp, -jnp.inf)

    def sample(params, key, context):
        return bijector(core.sample(params, key, context))

    return Estimator(init, log_prob, sample, core.spec)
