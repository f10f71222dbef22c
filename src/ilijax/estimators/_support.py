"""NPE over a bounded prior: in the unconstrained space of its support (:func:`on_support`), or
in theta space truncated to the support by rejection (:func:`truncated_to_support`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from numpyro.distributions.transforms import Transform

from ilijax._rejection import rejection_sample
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


# ----------------------------------------------------------------------------- theta space

#: Monte Carlo draws ``M`` behind the in-support mass ``Z(x)`` in :func:`truncated_to_support`.
NUM_MASS_DRAWS = 4096
#: Seed of the fixed key of that estimate (so ``log_prob`` is deterministic).
MASS_SEED = 0
#: Candidates drawn per iteration of the rejection sampler.
NUM_CANDIDATES = 4
#: Iterations of the rejection sampler before it gives up (NaN): ``NUM_CANDIDATES *
#: MAX_ITERATIONS = 2048`` candidates, so a mass of 1% leaves a draw empty with probability
#: ``0.99 ** 2048 ~ 1e-9``, a mass of 0.1% with probability 0.13. The batch sampler
#: (``TruncationParts.sample_many``) has the same budget, ``2048 * n`` candidates for ``n`` draws.
MAX_ITERATIONS = 512
#: The batch sampler draws its candidates in blocks of ``ceil(n / BLOCKS_PER_REQUEST)``, so at
#: most that many candidates are drawn beyond the ones needed (a quarter of a request).
BLOCKS_PER_REQUEST = 4
# Draws of the mass estimate evaluated at once (a scan over chunks bounds the memory when
# log_prob is vmapped over many observations).
_MASS_CHUNK = 256


class TruncationParts(NamedTuple):
    """The pieces of a bundle made by :func:`truncated_to_support` (see
    :func:`truncation_parts`).

    Attributes:
        core: The bundle over theta itself (its density is not normalised on the support).
        prior: The prior whose support the draws are rejected into.
        num_mass_draws: ``M``, draws of the mass estimate in ``log_prob``.
        mass_seed: Seed of the fixed key of that estimate.
        num_candidates: Candidates per iteration of the sampler.
        max_iterations: Iterations before the sampler returns NaN.
        log_mass: ``(params, context) -> ()``, ``log Z_hat(x)``: the log of the in-support
            fraction of ``M`` draws with the fixed key (at least one draw counted, see
            :func:`truncated_to_support`), behind ``stop_gradient``.
        log_prob_given_mass: ``(params, theta, context, log_mass) -> ()``, the truncated
            density with the log-mass computed once per context (what ``log_prob`` does per
            call); the Posterior uses it so MCMC does not redraw ``M`` points per step.
        sample_many: ``(params, key, context, n) -> (n, theta_dim)`` with ``n`` static: ``n``
            draws of one context by batch-level rejection (see :func:`truncated_to_support`);
            what the Posterior's direct sampler uses.
    """

    core: Estimator
    prior: Any
    num_mass_draws: int
    mass_seed: int
    num_candidates: int
    max_iterations: int
    log_mass: Callable[[Any, jax.Array], jax.Array]
    log_prob_given_mass: Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]
    sample_many: Callable[[Any, jax.Array, jax.Array, int], jax.Array]


class _TruncatedEstimator(Estimator):
    """An :class:`Estimator` that also carries its :class:`TruncationParts`."""


def truncation_parts(bundle: Any) -> TruncationParts | None:
    """The :class:`TruncationParts` of a bundle made by :func:`truncated_to_support`, else
    ``None``."""
    return getattr(bundle, "truncation_parts", None)


def _in_support(prior, theta) -> jax.Array:
    # An infinite coordinate is outside every support a flow can be truncated to (numpyro's
    # real constraint would accept it); NaN fails every constraint check.
    return prior.support(theta) & jnp.all(jnp.isfinite(theta))


def _mass_count(core: Estimator, prior, params, context, key, num_draws: int) -> jax.Array:
    """How many of ``num_draws`` core draws (keys ``split(key, num_draws)``) lie in the
    support, as float32; chunks of ``_MASS_CHUNK`` draws are scanned over."""
    keys = jax.random.split(key, num_draws)
    one = lambda k: _in_support(prior, core.sample(params, k, context))  # noqa: E731
    chunk = min(_MASS_CHUNK, num_draws)
    full, rest = divmod(num_draws, chunk)

    def body(total, ks):
        return total + jnp.sum(jax.vmap(one)(ks).astype(jnp.float32)), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32),
                            keys[:full * chunk].reshape(full, chunk))
    if rest:
        total = total + jnp.sum(jax.vmap(one)(keys[full * chunk:]).astype(jnp.float32))
    return total


def truncated_to_support(
    core: Estimator,
    prior,
    *,
    num_mass_draws: int = NUM_MASS_DRAWS,
    mass_seed: int = MASS_SEED,
    num_candidates: int = NUM_CANDIDATES,
    max_iterations: int = MAX_ITERATIONS,
) -> Estimator:
    """Truncates a density over theta itself to the prior's support (NPE in theta space).

    ``core`` models theta directly (the factories of ``ilijax.estimators`` z-score it by the
    training theta; there is no bijector), so some of its mass can lie outside the prior's
    support. The returned bundle is that density restricted to the support and renormalised,
    as sbi does for its posteriors ("leakage correction"):

        log q(theta | x) = log q_core(theta | x) - log Z(x)   inside the support,
                           -inf                                outside,

        Z(x) = P_{theta ~ q_core(. | x)}(theta in support)
             ~ Z_hat(x) = (1 / M) sum_m 1[theta_m in support],  theta_m ~ q_core(. | x),

    with ``M = num_mass_draws`` draws made with the fixed key ``jax.random.key(mass_seed)``, so
    ``log_prob`` is a deterministic function of ``(params, theta, x)``, differentiable in theta
    (``Z_hat`` does not depend on it) and in ``x`` through ``log q_core``; ``Z_hat`` itself is
    held constant under ``jax.grad`` (an indicator's gradient is zero almost everywhere). Its
    Monte Carlo standard error is ``sqrt(Z (1 - Z) / M)`` (:func:`support_mass` returns both);
    ``log_prob`` integrates over the support to ``Z / Z_hat``, one within that error. When no
    draw lands in the support, one is counted (``Z_hat = 1 / M``) so the density stays finite.
    Cost: one ``log_prob`` call draws ``M`` points from the core for its context (evaluate
    many theta of one ``x`` in one vmapped call, which computes ``Z_hat`` once, as
    :meth:`ilijax.Posterior.log_prob` does).

    ``sample`` rejects: each iteration draws ``num_candidates`` candidates (vmapped
    ``core.sample``) and keeps the first inside the support; a ``jax.lax.while_loop`` stops at
    the first acceptance or after ``max_iterations`` iterations, when the draw is NaN (never a
    point outside the support). Shapes are static, so it works under ``jit`` and ``vmap`` (a
    vmapped loop runs until its last lane accepts). The accepted draws are exact draws of the
    truncated density; the expected number of candidates per draw is ``1 / Z(x)``.

    ``sample_many`` (in :func:`truncation_parts`) makes ``n`` draws of one context at once, which
    is how :meth:`ilijax.Posterior.sample` draws: a ``while_loop`` draws blocks of
    ``ceil(n / BLOCKS_PER_REQUEST)`` candidates and writes the accepted ones, in order, into an
    ``(n, theta_dim)`` buffer until it is full. The accepted candidates are i.i.d. draws of the
    truncated density and the stopping rule looks only at their count, so the first ``n`` are
    exact draws. It costs about ``n / Z(x)`` flow draws plus at most one block, where the
    per-draw loop under ``vmap`` runs until its slowest lane accepts (``num_candidates`` flow
    draws for every lane in every iteration: 8 ``n`` at ``Z = 0.9``, about 28 ``n`` at
    ``Z = 0.3`` for ``n = 10^4``). Its budget is ``n * num_candidates * max_iterations``
    candidates; slots still empty then are NaN.

    Training: the maximum-likelihood NPE loss uses ``core.log_prob`` unnormalised, as sbi does
    (``Z(x)`` is not estimated per training row); only the posterior evaluates this bundle.

    Args:
        core: A bundle over theta (``init``, ``log_prob``, ``sample`` on theta itself).
        prior: The prior (numpyro distribution with event shape ``(theta_dim,)``); its
            ``support`` decides what is inside.
        num_mass_draws: ``M``, draws of the mass estimate (static).
        mass_seed: Seed of its fixed key.
        num_candidates: Candidates per rejection iteration (static).
        max_iterations: Rejection iterations before a draw is NaN (static).

    Returns:
        An :class:`Estimator` with ``core``'s ``init`` and ``spec``; its parts are
        :func:`truncation_parts`.

    References:
        Greenberg, Nonnenmacher and Macke, "Automatic Posterior Transformation for
        Likelihood-Free Inference", ICML 2019 (Section 2, leakage of the posterior mass
        outside the prior support). sbi's documentation of ``DirectPosterior``
        (``leakage_correction``: rejection sampling into the prior support, and
        ``log_prob`` normalised by the accepted fraction).
    """
    for name, value in (("num_mass_draws", num_mass_draws), ("num_candidates", num_candidates),
                        ("max_iterations", max_iterations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected {name} to be an int >= 1; got {value!r}")
    if isinstance(mass_seed, bool) or not isinstance(mass_seed, int) or mass_seed < 0:
        raise ValueError(f"Expected mass_seed to be an int >= 0; got {mass_seed!r}")
    num_mass_draws, num_candidates = int(num_mass_draws), int(num_candidates)
    max_iterations = int(max_iterations)

    def log_mass(params, context):
        count = _mass_count(core, prior, params, context, jax.random.key(mass_seed),
                            num_mass_draws)
        return jax.lax.stop_gradient(jnp.log(jnp.maximum(count, 1.0) / num_mass_draws))

    def log_prob_given_mass(params, theta, context, lm):
        lp = core.log_prob(params, theta, context) - lm
        return jnp.where(_in_support(prior, theta) & ~jnp.isnan(lp), lp, -jnp.inf)

    def log_prob(params, theta, context):
        return log_prob_given_mass(params, theta, context, log_mass(params, context))

    def candidates(params, key, context):
        keys = jax.random.split(key, num_candidates)
        theta = jax.vmap(core.sample, in_axes=(None, 0, None))(params, keys, context)
        ok = jax.vmap(lambda t: _in_support(prior, t))(theta)
        first = jnp.argmax(ok)  # the first accepted candidate (0 when none is)
        return theta[first], ok[first]

    def sample(params, key, context):
        def cond(state):
            i, done, _, _ = state
            return (~done) & (i < max_iterations)

        def body(state):
            i, _, _, key = state
            key, sub = jax.random.split(key)
            theta, ok = candidates(params, sub, context)
            return i + 1, ok, jnp.where(ok, theta, jnp.nan), key

        # The flow is traced once, in the loop body (the shape comes from an abstract call).
        shape = jax.eval_shape(core.sample, params, key, context)
        start = (jnp.zeros((), jnp.int32), jnp.zeros((), bool),
                 jnp.full(shape.shape, jnp.nan, shape.dtype), key)
        return jax.lax.while_loop(cond, body, start)[2]

    def sample_many(params, key, context, n):
        # Batch-level rejection: blocks of ceil(n / BLOCKS_PER_REQUEST) candidates, the same
        # budget of candidates per draw as `sample`.
        block = -(-n // BLOCKS_PER_REQUEST)
        dim = jax.eval_shape(core.sample, params, key, context).shape[0]
        propose = lambda k, m: jax.vmap(core.sample, in_axes=(None, 0, None))(  # noqa: E731
            params, jax.random.split(k, m), context)
        accept = jax.vmap(lambda t: _in_support(prior, t))
        return rejection_sample(key, propose, accept, n, dim, block=block,
                                max_rounds=-(-(n * num_candidates * max_iterations) // block))

    bundle = _TruncatedEstimator(core.init, log_prob, sample, core.spec)
    bundle.truncation_parts = TruncationParts(core, prior, num_mass_draws, int(mass_seed),
                                              num_candidates, max_iterations, log_mass,
                                              log_prob_given_mass, sample_many)
    return bundle


def support_mass(
    bundle: Estimator,
    params: Any,
    context: jax.Array,
    *,
    num_draws: int | None = None,
    key: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The in-support mass ``Z_hat(x)`` of a truncated bundle's core, and its standard error.

    With the defaults this is exactly the estimate that the bundle's ``log_prob`` divides by
    (its ``M`` draws with its fixed key, before the one-draw floor), so ``exp(log_prob)``
    integrates over the support to ``Z / Z_hat``. Pass ``num_draws`` and another ``key`` for
    an independent, more precise estimate. For one member and one context; vmap for more.

    Args:
        bundle: A bundle made by :func:`truncated_to_support`.
        params: One member's params.
        context: One context (observation) of the core.
        num_draws: Draws (static); default the bundle's ``num_mass_draws``.
        key: PRNG key of the draws; default the bundle's fixed key.

    Returns:
        ``(mass, stderr)``, float32 scalars: the fraction of draws inside the support, and the
        binomial standard error ``sqrt(mass (1 - mass) / num_draws)``.
    """
    parts = truncation_parts(bundle)
    if parts is None:
        raise ValueError("Expected a bundle made by truncated_to_support (theta space); got "
                         "one without truncation parts")
    n = parts.num_mass_draws if num_draws is None else num_draws
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Expected num_draws to be an int >= 1; got {num_draws!r}")
    key = jax.random.key(parts.mass_seed) if key is None else key
    mass = _mass_count(parts.core, parts.prior, params, context, key, int(n)) / n
    return mass, jnp.sqrt(mass * (1.0 - mass) / n)
