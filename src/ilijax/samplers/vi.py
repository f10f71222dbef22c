"""Variational inference for one observation: a normalizing flow fitted by maximising the ELBO.

The sampler has the contract of :mod:`ilijax.samplers`::

    run(key, logdensity_fn, init, num_samples, **options) -> (draws, stats)

It fits an unconditional flow ``q_phi(u)`` to the unnormalised posterior ``p(u)`` of one
observation in the unconstrained space by maximising the evidence lower bound

    ELBO(phi) = E_{z ~ N(0, I)} [log p(T_phi(z)) - log q_phi(T_phi(z))]  <=  log Z,

i.e. minimising the reverse KL divergence ``KL(q_phi || p / Z)``, with reparameterised draws
(Rezende & Mohamed 2015) and Adam (gradients clipped to global norm 10) on a cosine schedule, as
one ``lax.scan`` over the steps; it then returns ``num_samples`` independent draws of the fitted
``q_phi``. This is what sbi's (and so ltu-ili's) ``VIPosterior`` does for NLE/NRE posteriors
(Glöckler, Deistler & Macke 2022), written in pure JAX so that :class:`ilijax.Posterior` can
``vmap`` it over a batch of observations and compile one program for all of them.

The flow. With ``z ~ N(0, I_dim)``, the generative map is

    u = m0 + L0 S (g(z) + a),    S = diag(exp(d)) (I + R),    g = c_K o ... o c_1,

- ``c_k`` are affine couplings (Dinh et al. 2017): ``z' = z`` on the kept coordinates ``M_k``
  and ``z' = z * exp(s) + t`` on the others, ``(s, t) = MLP_k(z masked to M_k)``, with
  ``s = 3 tanh(s_raw / 3)`` and the MLPs' output layers initialised at zero (so ``g`` starts at
  the identity). The masks split the coordinates by the bits of their index, so that every pair
  of coordinates is separated by some layer once ``transforms >= 2 ceil(log2 dim)``;
- ``a``, ``d`` and the strictly lower triangular ``R`` make a learned full-rank Gaussian (it
  starts at ``a = 0, S = I``). The shift ``a`` acts before ``S`` and ``R`` is scaled by the
  row's ``exp(d)``, so every step moves ``u`` relative to the current scale of ``q``: Adam's
  roughly constant step size then also resolves a posterior far narrower than ``init``;
- ``m0, L0`` are fixed: the mean and the Cholesky factor of the covariance of ``init`` (prior
  draws resampled by weight), so the learned parameters live on the posterior's scale and one
  learning rate serves every problem. A degenerate ``init`` (one distinct point) gets ``L0 = I``.

The draws and their densities come from the forward pass,

    log q(u) = log N(z; 0, I) - sum_k log|det dc_k/dz| - sum_i d_i - sum_i log (L0)_ii.

``flow="gaussian"`` drops the couplings (a full-rank Gaussian, the "Gaussian base alone"). With
``dim == 1`` a coupling has nothing to condition on, so the flow is Gaussian there too.

Gradient estimator. Each particle's term is ``log p(u) - log q_{phi'}(u)`` at ``u = T_phi(z)``
with ``phi'`` a stopped copy of ``phi`` ("sticking the landing", Roeder, Wu and Duvenaud 2017):
the dropped score term has expectation zero, and the estimator's variance vanishes as ``q``
approaches ``p / Z``. ``log q`` at a given ``u`` inverts the flow (a triangular solve and the
couplings in reverse), which is as cheap as the forward pass.

Non-finite log densities. A draw ``u`` with ``logdensity_fn(u)`` not finite (``-inf`` outside
the support, or NaN) makes the ELBO ``-inf`` and its gradient undefined. Such "bad" particles
are masked out of the pathwise gradient and counted in the stats; the log density's backward
pass selects a zero gradient for them with ``where`` (a custom VJP), so the ``0 * inf = NaN`` of
a masked particle cannot leak into the flow's gradient. Masking alone ignores the mass that
``q`` puts in the bad region: on a normal truncated at its mode, ``q`` then fits the untruncated
normal and half its draws fall outside. So the objective is ``E_q[where(good, log p - log q,
c)]`` with a floor ``c`` one nat below the worst finite term of the step (but at most three
robust standard deviations below the mean term). Its gradient is the pathwise one on the good
particles plus the jump at the border, ``-(ELBO - c) grad P_q(bad)``, estimated with the score
function ``E_q[1_bad(u) grad_phi log q_phi(u)]`` (Williams 1992) at the bad particles: it lowers
``q`` where they landed (on the truncated normal, about 1% of the draws then fall outside).

Stats (all arrays, so they ``vmap``):

- ``elbo``: ``(steps,)`` the ELBO estimate of each step (mean over its finite particles);
- ``num_nonfinite``: ``(steps,)`` particles per step with a non-finite log density;
- ``final_elbo``: ELBO estimate from the returned draws (mean over the finite ones), and
  ``final_elbo_se`` its Monte Carlo standard error;
- ``nonfinite_fraction``: fraction of the returned draws with a non-finite log density;
- ``pareto_k``: Pareto-k-hat of the importance ratios ``log p - log q`` over the returned draws
  (PSIS, Vehtari et al. 2024, blackjax ``psis_weights``; ``inf`` for fewer than 25 draws): below
  0.5 ``q`` is close to ``p``, up to 0.7 it is usable for importance sampling, and above 0.7
  ``q`` misses mass of ``p`` and its intervals should not be trusted (Yao et al. 2018).

References:
    Rezende and Mohamed, "Variational inference with normalizing flows", ICML 2015.
    Glöckler, Deistler and Macke, "Variational methods for simulation-based inference",
    ICLR 2022.
    Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP", ICLR 2017.
    Roeder, Wu and Duvenaud, "Sticking the landing: simple, lower-variance gradient estimators
    for variational inference", NeurIPS 2017.
    Kingma and Ba, "Adam: a method for stochastic optimization", ICLR 2015.
    Loshchilov and Hutter, "SGDR: stochastic gradient descent with warm restarts", ICLR 2017.
    Williams, "Simple statistical gradient-following algorithms for connectionist
    reinforcement learning", Machine Learning 8, 1992.
    Yao, Vehtari, Simpson and Gelman, "Yes, but did it work?: Evaluating variational
    inference", ICML 2018.
    Vehtari, Simpson, Gelman, Yao and Gabry, "Pareto smoothed importance sampling", JMLR 25,
    2024.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.diagnostics import psis_weights

from ilijax._checks import check_float, check_int, check_key
from ilijax.nn.mlp import MLP

Array = jax.Array

__all__ = ["run"]

FLOWS = ("realnvp", "gaussian")

# Log-scales of a coupling are squashed to (-3, 3), as in ilijax.estimators.realnvp: one layer
# stretches a coordinate by at most e^3; unbounded exp scales are the usual source of NaNs.
_MAX_LOG_SCALE = 3.0
# The Gaussian part's parameters are stored divided by this (see _make_flow.affine).
_AFFINE_GAIN = 10.0
# Global gradient-norm clip before Adam (see run).
_CLIP_NORM = 10.0
# PSIS needs a tail of at least 5 draws (blackjax psis_weights).
_MIN_PSIS_DRAWS = 25
# Relative ridge added to the covariance of ``init`` before its Cholesky factor is taken.
_RIDGE = 1e-3


_check_int = check_int


def _check_float(name: str, value: Any) -> None:
    check_float(name, value, 0.0)


def _masks(dim: int, transforms: int) -> np.ndarray:
    """``(transforms, dim)`` boolean masks, ``True`` = kept (conditioning) coordinate.

    Layers come in pairs that split the coordinates by one bit of their index (the pair's two
    layers swap the halves); successive pairs use successive bits, so any two coordinates land
    on different sides in some pair (bit ``b`` of ``i`` and ``j`` differ for some ``b``).
    """
    bits = max(1, math.ceil(math.log2(dim))) if dim > 1 else 1
    index = np.arange(dim)
    rows = [((index >> ((t // 2) % bits)) & 1) == (t % 2) for t in range(transforms)]
    return np.stack(rows) if rows else np.zeros((0, dim), bool)


def _preconditioner(init: Array) -> tuple[Array, Array]:
    """Mean and Cholesky factor of the covariance of the ``(n, dim)`` starting points.

    A relative ridge keeps the factor full rank when the points are few or repeated (resampled
    by weight); coordinates with no spread at all, and a single point, get a unit scale.
    """
    n, dim = init.shape
    mean = jnp.mean(init, axis=0)
    if n < 2:
        return mean, jnp.eye(dim, dtype=init.dtype)
    centred = init - mean
    cov = centred.T @ centred / (n - 1)
    var = jnp.diag(cov)
    degenerate = ~(var > 1e-12)
    var = jnp.where(degenerate, 1.0, var)
    cov = jnp.where(degenerate[:, None] | degenerate[None, :], 0.0, cov)
    cov = cov + jnp.diag(jnp.where(degenerate, 1.0, 0.0) + _RIDGE * var)
    chol = jnp.linalg.cholesky(cov)
    ok = jnp.all(jnp.isfinite(chol)) & jnp.all(jnp.isfinite(mean))
    chol = jnp.where(ok, chol, jnp.diag(jnp.sqrt(var)))
    chol = jnp.where(jnp.all(jnp.isfinite(chol)), chol, jnp.eye(dim, dtype=init.dtype))
    return jnp.where(jnp.isfinite(mean), mean, 0.0), chol


def _make_flow(dim: int, flow: str, transforms: int, hidden: int, activation: Callable,
               m0: Array, chol0: Array):
    """Returns ``(init_fn, forward_fn, log_prob_fn)`` of the flow.

    ``forward_fn(params, z) -> (u, log q(u))`` is the generative pass;
    ``log_prob_fn(params, u) -> log q(u)`` inverts it (a triangular solve and the couplings in
    reverse), for the gradient estimators, which need ``log q`` at a point held fixed.
    """
    num_layers = transforms if flow == "realnvp" else 0
    masks = jnp.asarray(_masks(dim, num_layers))
    net = MLP((hidden, hidden), 2 * dim, activation, zero_init_output=True)
    tril = jnp.tril(jnp.ones((dim, dim), bool), -1)
    log_norm = 0.5 * dim * math.log(2 * math.pi) + jnp.sum(jnp.log(jnp.diag(chol0)))

    def init_fn(key):
        params = {"loc": jnp.zeros(dim), "scale_tril": jnp.zeros((dim, dim)),
                  "log_diag": jnp.zeros(dim)}
        if num_layers:
            keys = jax.random.split(key, num_layers)
            params["couplings"] = jax.vmap(net.init, in_axes=(0, None))(keys, jnp.zeros(dim))
        return params

    def conditioner(layer_params, keep, h):
        out = net.apply(layer_params, jnp.where(keep, h, 0.0))
        log_scale = _MAX_LOG_SCALE * jnp.tanh(out[dim:] / _MAX_LOG_SCALE)
        return jnp.where(keep, 0.0, out[:dim]), jnp.where(keep, 0.0, log_scale)

    def affine(params):
        # S = diag(exp(d)) (I + R) with R strictly lower triangular, and the shift a applied
        # before S: every Gaussian parameter then moves u relative to the current scale, so
        # Adam's (roughly constant) step size resolves a posterior much narrower than init.
        # Stored divided by _AFFINE_GAIN: the Gaussian part must travel further than the
        # couplings' weights.
        log_diag = _AFFINE_GAIN * params["log_diag"]
        unit = jnp.where(tril, _AFFINE_GAIN * params["scale_tril"], 0.0) + jnp.eye(dim)
        scale = jnp.exp(log_diag)[:, None] * unit
        return _AFFINE_GAIN * params["loc"], scale, jnp.sum(log_diag)

    def forward_fn(params, z):
        h, log_det = z, jnp.zeros((), z.dtype)
        if num_layers:
            def layer(h, xs):
                shift, log_scale = conditioner(*xs, h)
                return h * jnp.exp(log_scale) + shift, jnp.sum(log_scale)

            h, log_dets = jax.lax.scan(layer, h, (params["couplings"], masks))
            log_det = jnp.sum(log_dets)
        loc, scale, affine_log_det = affine(params)
        u = m0 + chol0 @ (scale @ (h + loc))
        return u, -0.5 * jnp.sum(z**2) - log_norm - log_det - affine_log_det

    def log_prob_fn(params, u):
        loc, scale, log_det = affine(params)
        w = jax.scipy.linalg.solve_triangular(chol0, u - m0, lower=True)
        h = jax.scipy.linalg.solve_triangular(scale, w, lower=True) - loc
        if num_layers:
            def layer(h, xs):
                # The kept coordinates pass through, so the conditioner sees what it saw forward.
                shift, log_scale = conditioner(*xs, h)
                return (h - shift) * jnp.exp(-log_scale), jnp.sum(log_scale)

            h, log_dets = jax.lax.scan(layer, h, (params["couplings"], masks), reverse=True)
            log_det = log_det + jnp.sum(log_dets)
        return -0.5 * jnp.sum(h**2) - log_norm - log_det

    return init_fn, forward_fn, log_prob_fn


def _sanitized(logdensity_fn: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """``logdensity_fn`` whose gradient is zero wherever its value or its gradient is not finite.

    A masked particle still runs its backward pass (with a zero cotangent), and ``0 * inf`` is
    NaN; selecting with ``where`` in the backward pass keeps such NaNs out of the flow's gradient.
    """

    @jax.custom_vjp
    def safe(u):
        return logdensity_fn(u)

    def safe_fwd(u):
        log_p, pullback = jax.vjp(logdensity_fn, u)
        return log_p, (log_p, pullback)

    def safe_bwd(residuals, cotangent):
        log_p, pullback = residuals
        (grad,) = pullback(cotangent)
        ok = jnp.isfinite(log_p) & jnp.all(jnp.isfinite(grad))
        return (jnp.where(ok, grad, 0.0),)

    safe.defvjp(safe_fwd, safe_bwd)
    return safe


def run(
    key: Array,
    logdensity_fn: Callable[[Array], Array],
    init: Array,
    num_samples: int,
    *,
    steps: int = 1000,
    learning_rate: float = 1e-2,
    num_particles: int = 32,
    flow: str = "realnvp",
    transforms: int = 4,
    hidden: int = 32,
    activation: Callable[[Array], Array] = jnp.tanh,
) -> tuple[Array, dict[str, Array]]:
    """Fits a normalizing flow to ``logdensity_fn`` by maximising the ELBO and draws from it.

    See the module docstring for the flow, the objective and the stats.

    Args:
        key: PRNG key (split into flow initialisation, optimisation and final draws).
        logdensity_fn: ``u -> ()`` unnormalised log density of one point ``u`` of shape
            ``(dim,)`` in the unconstrained space; may be ``-inf``.
        init: ``(num_chains, dim)`` points (prior draws resampled by weight) whose mean and
            covariance set the flow's fixed location and scale.
        num_samples: Number of draws returned.
        steps: Optimisation steps (one ``lax.scan``).
        learning_rate: Peak Adam learning rate, decayed on a cosine schedule to 1% of it. The
            flow is parameterised relative to ``init``'s location and scale, so one value serves
            problems of any scale.
        num_particles: Reparameterised draws per ELBO estimate.
        flow: ``"realnvp"`` (Gaussian + affine couplings) or ``"gaussian"`` (full-rank
            Gaussian only).
        transforms: Number of coupling layers (``realnvp`` only).
        hidden: Width of the two hidden layers of each coupling's MLP.
        activation: Activation of the coupling MLPs (smooth, so the flow is smooth).

    Returns:
        ``(draws, stats)``: draws of shape ``(1, num_samples, dim)`` (one "chain" of
        independent draws) in the unconstrained space, and a dict of arrays with ``elbo``
        ``(steps,)``, ``num_nonfinite`` ``(steps,)``, ``final_elbo``, ``final_elbo_se``,
        ``nonfinite_fraction`` and ``pareto_k`` (scalars).

    Raises:
        ValueError: On a bad argument; the message names it.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> logdensity = lambda u: -0.5 * jnp.sum((u - 1.0) ** 2)
        >>> init = jax.random.normal(jax.random.key(0), (16, 2))
        >>> draws, stats = run(jax.random.key(1), logdensity, init, 100, steps=200)
        >>> draws.shape, stats["elbo"].shape
        ((1, 100, 2), (200,))
    """
    key = check_key(key)
    _check_int("num_samples", num_samples, 1)
    _check_int("steps", steps, 1)
    _check_int("num_particles", num_particles, 1)
    _check_int("transforms", transforms, 0)
    _check_int("hidden", hidden, 1)
    _check_float("learning_rate", learning_rate)
    if not isinstance(flow, str) or flow not in FLOWS:
        raise ValueError(f"Expected flow in {FLOWS}; got {flow!r}")
    if not callable(activation):
        raise ValueError(
            f"Expected activation to be a callable (e.g. jnp.tanh); got {activation!r}"
        )
    init = jnp.asarray(init)
    if init.ndim != 2 or init.shape[0] < 1 or init.shape[1] < 1:
        raise ValueError(f"Expected init of shape (num_chains, dim); got {init.shape}")
    if not jnp.issubdtype(init.dtype, jnp.floating):
        init = init.astype(jnp.float32)
    dim, dtype = init.shape[1], init.dtype

    m0, chol0 = jax.lax.stop_gradient(_preconditioner(init))
    init_fn, forward_fn, log_prob_fn = _make_flow(
        dim, flow, transforms, hidden, activation, m0, chol0)
    safe_logdensity = _sanitized(logdensity_fn)
    k_init, k_fit, k_draw = jax.random.split(key, 3)
    params = init_fn(k_init)
    # Clipping: while q is far wider than p (init much broader than the posterior, or a
    # degenerate init), gradients are orders of magnitude larger than near the optimum; unclipped,
    # they fill Adam's second moments for thousands of steps and freeze the fit.
    optimizer = optax.chain(
        optax.clip_by_global_norm(_CLIP_NORM),
        optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01)),
    )

    def particle(params, z):
        u, _ = forward_fn(params, z)
        log_p = safe_logdensity(u)
        ok = jnp.isfinite(log_p)
        # Good particles: log q with its parameters stopped, differentiated along the path u(phi)
        # only ("sticking the landing"). Bad particles: log q at the fixed point u, differentiated
        # in phi only (the score of q, for the score-function term). One inverse pass serves both.
        frozen = jax.lax.stop_gradient(params)
        params_in = jax.tree.map(lambda f, p: jnp.where(ok, f, p), frozen, params)
        log_q = log_prob_fn(params_in, jnp.where(ok, u, jax.lax.stop_gradient(u)))
        return log_p, log_q

    def loss_fn(params, z):
        log_p, log_q = jax.vmap(particle, in_axes=(None, 0))(params, z)
        terms = log_p - log_q
        ok = jnp.isfinite(terms)
        count = jnp.sum(ok)
        elbo = jnp.sum(jnp.where(ok, terms, 0.0)) / jnp.maximum(count, 1)
        elbo = jnp.where(count > 0, elbo, -jnp.inf)
        # The border's jump ELBO - c weights the score-function gradient of P_q(bad), with the
        # floor c one nat below the worst finite term, but never more than 3 robust standard
        # deviations (1.4826 MAD) below the ELBO: one far-tail particle must not blow up the step
        # (and Adam's second moments with it).
        worst = jnp.min(jnp.where(ok, terms, jnp.inf))
        finite = jnp.where(ok, terms, jnp.nan)
        mad = jnp.nanmedian(jnp.abs(finite - jnp.nanmedian(finite)))
        gap = jnp.minimum(elbo - worst, 3.0 * 1.4826 * mad)
        weight = jax.lax.stop_gradient(jnp.where(count > 0, gap, 0.0) + 1.0)
        good_part = jnp.sum(jnp.where(ok, terms, 0.0))
        bad_part = jnp.sum(jnp.where(ok | ~jnp.isfinite(log_q), 0.0, log_q))
        loss = (weight * bad_part - good_part) / num_particles
        return loss, (jax.lax.stop_gradient(elbo), num_particles - count)

    def step(carry, k):
        params, opt_state = carry
        z = jax.random.normal(k, (num_particles, dim), dtype)
        grads, (elbo, num_bad) = jax.grad(loss_fn, has_aux=True)(params, z)
        # Never let a non-finite gradient entry (the flow itself overflowing) into Adam's moments.
        grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (elbo, num_bad)

    (params, _), (elbo_trace, bad_trace) = jax.lax.scan(
        step, (params, optimizer.init(params)), jax.random.split(k_fit, steps))

    z = jax.random.normal(k_draw, (num_samples, dim), dtype)
    u, log_q = jax.vmap(forward_fn, in_axes=(None, 0))(params, z)
    log_ratio = jax.vmap(logdensity_fn)(u) - log_q
    ok = jnp.isfinite(log_ratio)
    count = jnp.sum(ok)
    final_elbo = jnp.where(
        count > 0, jnp.sum(jnp.where(ok, log_ratio, 0.0)) / jnp.maximum(count, 1), -jnp.inf)
    centred = jnp.where(ok, log_ratio - final_elbo, 0.0)
    elbo_se = jnp.sqrt(jnp.sum(centred**2) / jnp.maximum(count - 1, 1) / jnp.maximum(count, 1))
    if num_samples >= _MIN_PSIS_DRAWS:
        _, pareto_k = psis_weights(jnp.where(ok, log_ratio, -jnp.inf))
        # Equal ratios (q = p / Z exactly, e.g. a Gaussian fitted to a Gaussian) leave the
        # Pareto fit undefined (NaN); bounded ratios mean a light tail, k = -inf.
        pareto_k = jnp.where(jnp.isnan(pareto_k) & (elbo_se <= 1e-6 * (1.0 + jnp.abs(final_elbo))),
                             -jnp.inf, pareto_k)
    else:
        pareto_k = jnp.inf
    stats = {
        "elbo": elbo_trace,
        "num_nonfinite": bad_trace.astype(jnp.int32),
        "final_elbo": final_elbo,
        "final_elbo_se": elbo_se,
        "nonfinite_fraction": (num_samples - count).astype(dtype) / num_samples,
        "pareto_k": jnp.asarray(pareto_k, dtype),
    }
    return u[None], stats
