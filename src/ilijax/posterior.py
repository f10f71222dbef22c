"""Posterior objects over trained ensembles.

A :class:`Posterior` holds one or more *groups* (an estimator bundle and its members' params
stacked on axis 0), the mixture weights of all members, and the prior. Its density is the
mixture ``log q(theta | x) = logsumexp_k(log w_k + log q_k(theta | x))``; for NPE the members are
wrapped by :func:`ilijax.estimators.on_support`, so it is a normalised density on the prior's
support and draws never leave it. NPE trained in theta space (``space="theta"``) wraps them by
:func:`~ilijax.estimators._support.truncated_to_support` instead: each member is its flow
truncated to the support, normalised by a Monte Carlo estimate of its in-support mass and sampled
by rejection, so draws never leave the support either (they are NaN when rejection gives up).

Sampling a mixture with static shapes: for ``n`` draws, member ``k`` gets ``c_k`` draws where
``c_k`` comes from systematic resampling (Kitagawa 1996) of the weights with one uniform offset
per observation. ``c_k`` differs from ``n w_k`` by less than one, so every member is drawn at most
``floor(n w_k) + 2`` times (a static bound); the kept draws are shuffled. Each draw is marginally
a draw from the mixture; the counts are stratified rather than multinomial, which lowers the
variance of mixture estimates.
"""

from __future__ import annotations

import collections
import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ilijax import _devices
from ilijax._checks import check_int, check_key, is_traced
from ilijax.estimators._base import Estimator
from ilijax.samplers import RHAT_THRESHOLD as RHAT_THRESHOLD  # noqa: F401 (re-export)

Array = jax.Array

__all__ = ["METHODS", "SPACES", "Group", "Posterior", "SamplingInfo", "member_bundle",
           "resolve_space", "trace_counts"]

#: Inference methods a Posterior can come from.
METHODS = ("npe", "nle", "nre")

#: Where an NPE posterior's flows live: ``"unconstrained"`` (pushed through the prior's support
#: bijection, :func:`ilijax.estimators.on_support`) or ``"theta"`` (theta itself, truncated to
#: the support by rejection, :func:`~ilijax.estimators._support.truncated_to_support`).
SPACES = ("unconstrained", "theta")

#: Direct sampling of a theta-space posterior warns about observations where less than this
#: share of the flow's mass lies in the prior support (rejection slow, draws possibly NaN).
SUPPORT_MASS_THRESHOLD = 0.01


def check_space(space: Any) -> str:
    """``space`` if it is one of :data:`SPACES`, else ``ValueError`` naming the field."""
    if not isinstance(space, str) or space not in SPACES:
        raise ValueError(f"Expected space in {SPACES}; got {space!r}")
    return space


def resolve_space(space: Any, prior, method: str = "npe") -> str:
    """The space an ``npe``/``sequential`` call trains in: ``"auto"`` (their default) is
    ``"theta"`` for an NPE whose prior has a bounded support (a box, a positive or a
    half-bounded one) and ``"unconstrained"`` otherwise: for NLE/NRE, and for an unbounded
    support, where the two are the same density and the unconstrained one needs no mass
    estimate. Otherwise ``space`` must be one of :data:`SPACES`; ``"theta"`` is for NPE only.

    Theta space is the default because it measured better on the three sbibm box tasks
    compared in both spaces (C2ST at 10^4 simulations: two_moons 0.559 against 0.574,
    gaussian_mixture 0.585 against 0.596, slcp 0.867 against 0.880; ``benchmarks/README.md``);
    it is over-confident on the toy task's edge-piled curvature (issue 14's note).
    """
    from ilijax.priors import has_unbounded_support

    if not isinstance(space, str) or space not in ("auto", *SPACES):
        raise ValueError(f"Expected space in {('auto', *SPACES)}; got {space!r}")
    if space == "auto":
        if method != "npe" or has_unbounded_support(prior):
            return "unconstrained"
        return "theta"
    if method != "npe" and space != "unconstrained":
        raise ValueError(f"Expected space='unconstrained' or 'auto' for method={method!r} "
                         f"(theta space is an NPE option); got space={space!r}")
    return space


def _no_sample(params, key, context):
    raise TypeError(
        "This member models a likelihood or a ratio, not the posterior: it has no direct sampler. "
        "Use Posterior.sample, which runs MCMC (method='nuts' by default)"
    )


def member_bundle(method: str, bundle, prior: dist.Distribution, *,
                  space: str = "unconstrained") -> Estimator:
    """The bundle a :class:`Posterior` evaluates for one member: ``log_prob(params, theta, x)``.

    - ``"npe"``: with ``space="unconstrained"``, ``bundle`` models ``q(theta | x)`` in the
      unconstrained space; it is wrapped by :func:`ilijax.estimators.on_support`, so
      ``log_prob`` is the normalised density on the prior's support. With ``space="theta"``,
      ``bundle`` models theta itself and is wrapped by
      :func:`~ilijax.estimators._support.truncated_to_support` (rejection into the support,
      ``log_prob`` normalised by the estimated in-support mass).
    - ``"nle"``: ``bundle`` models ``q(x | theta)`` (``y = x``, ``context = theta``); the member
      term is ``log q(x | theta)``.
    - ``"nre"``: ``bundle`` is a classifier (``init(key, theta, x)``,
      ``log_ratio(params, theta, x)``); the member term is ``log r(theta, x)``.

    ``init`` always takes ``(key, theta, x)`` (one example or the training set), so saving and
    loading treat every method alike. ``space="theta"`` is for ``"npe"`` only.
    """
    from ilijax.estimators._support import on_support, truncated_to_support
    from ilijax.priors import support_bijector

    check_space(space)
    if method != "npe" and space != "unconstrained":
        raise ValueError(f"Expected space='unconstrained' for method={method!r} (theta space is "
                         f"an NPE option); got space={space!r}")
    if method == "npe":
        if space == "theta":
            return truncated_to_support(bundle, prior)
        return on_support(bundle, support_bijector(prior))
    if method == "nle":
        from ilijax.estimators.embedded import embedding_parts

        if embedding_parts(bundle) is not None:
            raise ValueError(
                "Expected an estimator without an embedding network for NLE; got an embedded "
                "one. NLE models the density of x itself (y = x, context = theta), so there is "
                "no context to embed: use the embedding with npe or nre, or compress x before "
                "NLE"
            )
        return Estimator(
            init=lambda key, theta, x: bundle.init(key, x, theta),
            log_prob=lambda params, theta, x: bundle.log_prob(params, x, theta),
            sample=_no_sample,
            spec=bundle.spec,
        )
    if method == "nre":
        return Estimator(init=bundle.init, log_prob=bundle.log_ratio, sample=_no_sample,
                         spec=bundle.spec)
    raise ValueError(f"Expected method in {METHODS}; got {method!r}")


class Group(NamedTuple):
    """Ensemble members of one architecture.

    Attributes:
        estimator: The bundle (for NPE: already wrapped by ``on_support``, or by
            ``truncated_to_support`` in theta space).
        params: Member params stacked on axis 0.
        spec: The unwrapped estimator's spec (for saving), or ``None``.
    """

    estimator: Estimator
    params: Any
    spec: dict | None


class SamplingInfo(NamedTuple):
    """What :meth:`Posterior.sample` did, from ``return_info=True``.

    Attributes:
        method: The sampler (``"direct"``, ``"nuts"``, ...).
        num_chains: Chains (walkers for ``aies``/``ess``) per observation.
        rhat: Rank-normalised split R-hat (Vehtari et al. 2021) per observation and parameter,
            ``(b, theta_dim)`` (``(theta_dim,)`` for one observation); NaN for ``direct``.
        ess: Bulk effective sample size, same shape; NaN for ``direct``.
        stats: Sampler statistics per observation and chain (``acceptance``, ``divergences``,
            ``step_size``, ...; ``elbo`` for ``vi``), numpy arrays. ``direct`` sampling of a
            theta-space posterior gives ``accepted_fraction`` per observation, ``(b,)``: the
            estimated in-support mass of the mixture (:meth:`Posterior.support_mass`), the
            expected share of rejection candidates accepted.
        idata: arviz DataTree with group ``posterior`` (``theta`` with dims
            ``chain, draw, obs, parameter``), ``observed_data`` (``x``) and ``sample_stats``.
        seconds: Wall time of the call (compilation included on the first call).
    """

    method: str
    num_chains: int
    rhat: np.ndarray
    ess: np.ndarray
    stats: dict
    idata: Any
    seconds: float



def _members(params) -> int:
    return jax.tree.leaves(params)[0].shape[0]


_LOG_PROB_CHUNK = 1 << 18
# Observations whose in-support masses (theta space) are estimated at once: each draws
# members x 4096 flow samples, scanned in chunks of 256, so this bounds the memory of a whole
# test set's estimate.
_MASS_OBS_CHUNK = 64


def _spec_key(spec: Any) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def _prior_key(prior: dist.Distribution) -> Any:
    """What identifies a prior in the compile cache: its JSON spec where it has one (two equal
    priors built separately share programs), else the object itself."""
    from ilijax.priors import prior_to_spec

    try:
        return ("spec", _spec_key(prior_to_spec(prior)))
    except (ValueError, TypeError):
        return ("object", prior)


@dataclass(frozen=True, eq=False)
class _Static:
    """The static (hashable) part of a :class:`Posterior`: its pytree aux data.

    Equality and hash go by ``key``: the method, the space, the shapes, the labels, the prior's
    spec and each group's estimator spec (a hand-made bundle without a spec counts by
    identity). So two posteriors that differ only in their arrays (members trained again, a
    reloaded file, the next sequential round) have equal aux data and share every compiled
    program; the functions held here are then interchangeable, as bundles built from one spec
    are.
    """

    method: str
    theta_dim: int
    x_shape: tuple[int, ...]
    labels: tuple[str, ...]
    prior: dist.Distribution
    bundles: tuple[Estimator, ...]
    specs: tuple[dict | None, ...]
    space: str
    key: tuple

    def __eq__(self, other):
        return isinstance(other, _Static) and self.key == other.key

    def __hash__(self):
        return hash(self.key)


def _make_static(method, theta_dim, x_shape, labels, prior, bundles, specs,
                 space="unconstrained") -> _Static:
    groups = tuple(("spec", _spec_key(sp)) if sp is not None else ("bundle", b)
                   for b, sp in zip(bundles, specs, strict=True))
    key = (method, space, theta_dim, x_shape, labels, _prior_key(prior), groups)
    return _Static(method, theta_dim, x_shape, labels, prior, tuple(bundles), tuple(specs),
                   space, key)


#: How often each compiled program of every Posterior was traced (see :func:`trace_counts`).
_TRACES: collections.Counter = collections.Counter()


def trace_counts() -> dict[str, int]:
    """How many times the compiled programs shared by all posteriors have been traced, by name
    (``"log_prob"``, ``"direct"``, ``"mcmc"``, ``"support_mass"``).

    A new trace means a compilation. Posteriors of the same structure (same method, shapes,
    labels, prior and estimator specs, same member counts) share the programs, so e.g. every
    round of a sequential run, or a posterior reloaded from a file, samples without tracing
    again. Useful to check a workflow for recompilation::

        before = ilijax.posterior.trace_counts()
        post2.sample(key, x, 1000)
        assert ilijax.posterior.trace_counts() == before
    """
    return dict(_TRACES)


@jax.jit
def _log_prob_program(post: Posterior, theta: Array, x: Array) -> Array:
    _TRACES["log_prob"] += 1  # runs only while tracing
    return post._log_prob_grid(theta, x)


@partial(jax.jit, static_argnames=("num_samples", "chunk", "caps"))
def _direct_program(post: Posterior, keys: Array, x: Array, num_samples: int, chunk: int,
                    caps: tuple[int, ...] | None) -> Array:
    _TRACES["direct"] += 1
    return post._sample_batch(keys, x, num_samples, chunk, caps)


@partial(jax.jit, static_argnames=("num_draws",))
def _mass_program(post: Posterior, x: Array, key: Array | None, num_draws: int | None):
    _TRACES["support_mass"] += 1
    return jax.lax.map(lambda xo: post._support_mass_one(xo, num_draws, key), x,
                       batch_size=min(_MASS_OBS_CHUNK, x.shape[0]))


@partial(jax.jit, static_argnames=("method", "num_samples", "num_chains", "init",
                                   "num_candidates", "options", "chunk_size"))
def _mcmc_program(post: Posterior, keys: Array, x: Array, *, method: str, num_samples: int,
                  num_chains: int, init: str, num_candidates: int, options: tuple,
                  chunk_size: int | None):
    from ilijax import samplers

    _TRACES["mcmc"] += 1
    run = partial(samplers.get(method), **dict(options))
    return post._mcmc_batch(run, num_samples, num_chains, init, num_candidates, chunk_size,
                            keys, x)


def _first_bad(mask: np.ndarray, most: int = 10) -> str:
    idx = np.flatnonzero(mask)
    more = f" and {idx.size - most} more" if idx.size > most else ""
    return ", ".join(str(i) for i in idx[:most]) + more


@jax.tree_util.register_pytree_node_class
class Posterior:
    """An ensemble posterior ``q(theta | x)``: exact log-density and batched sampling.

    A registered JAX pytree: the members' params (one stacked tree per group) and the mixture
    weights are its leaves; the estimator bundles, their specs, the prior, the method, the
    labels and the shapes are static aux data. So a posterior is an ordinary argument of
    ``jax.jit``, ``jax.grad`` and ``jax.vmap``, can be ``jax.device_put`` (or sharded) and
    ``jax.tree.map``-ed, and the compiled programs behind ``log_prob`` and ``sample`` take it
    as an argument: every posterior of the same structure (method, shapes, labels, prior and
    estimator specs, member counts) reuses them (:func:`trace_counts`)::

        @jax.jit
        def score(post, theta, x):
            return jax.grad(lambda t: post.log_prob(t, x))(theta)

        score(posterior, theta, x_obs)       # traced once, for every posterior of this shape

    Args:
        groups: The trained groups (see :class:`Group`).
        weights: Mixture weights of all members, groups concatenated in order; normalised here.
        prior: The prior (a numpyro distribution with event shape ``(theta_dim,)``).
        x_dim: Dimension of one vector observation ``(x_dim,)`` (checked on every call).
            Give ``x_shape`` instead for observations with more axes.
        x_shape: Shape of one observation, e.g. ``(64,)``, ``(32, 32)`` or ``(100, 3)`` (for
            estimators with an embedding network, see :func:`ilijax.estimators.embedded`).
            A call tells one observation (``x.shape == x_shape``) from a batch
            (``x.shape == (b, *x_shape)``) by it.
        method: The inference method that produced it (``"npe"``).
        labels: Optional parameter names, used by plots.
        space: For NPE, where the groups' bundles model theta: ``"unconstrained"`` (bundles
            wrapped by :func:`ilijax.estimators.on_support`) or ``"theta"`` (wrapped by
            :func:`~ilijax.estimators._support.truncated_to_support`); see
            :func:`ilijax.npe`. Part of the static structure and of the saved file.

    Attributes:
        groups: The :class:`Group` s (bundle, stacked params, spec).
        weights: ``(num_members,)`` mixture weights (a leaf).
        prior: The prior.
        method: ``"npe"``, ``"nle"`` or ``"nre"``.
        space: ``"unconstrained"`` or ``"theta"`` (NPE trained in theta space).
        labels: Parameter names.
        theta_dim: Number of parameters.
        x_shape: Shape of one observation.
        x_dim: Number of values in one observation (``prod(x_shape)``; the length of a vector
            observation).
        normalized: True: ``log_prob`` is a normalised density, so the diagnostics use it as is
            (``log_prob_of_truth`` is exact). Posteriors known only up to a constant per
            observation (likelihood or ratio estimates) set it False.
    """

    def __init__(
        self,
        groups: Sequence[Group],
        weights: Any,
        prior: dist.Distribution,
        *,
        x_dim: int | None = None,
        x_shape: Sequence[int] | None = None,
        method: str = "npe",
        labels: Sequence[str] | None = None,
        space: str = "unconstrained",
    ):
        from ilijax.estimators._support import truncation_parts
        from ilijax.priors import validate_prior

        groups = tuple(groups)
        if not groups or not all(isinstance(g, Group) for g in groups):
            raise ValueError(f"Expected a non-empty sequence of Group; got {groups!r}")
        # Members trained sharded over several devices are gathered onto the default device, so
        # that the same posterior evaluates identically however it was trained or loaded.
        device = jax.devices()[0]
        params = tuple(jax.device_put(g.params, device) for g in groups)
        w = np.asarray(weights, dtype=np.float64)
        sizes = [_members(p) for p in params]
        if w.shape != (sum(sizes),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(
                f"Expected {sum(sizes)} finite non-negative weights (one per member); got {w}"
            )
        prior = validate_prior(prior)
        theta_dim = int(prior.event_shape[0])
        if x_shape is None:
            if x_dim is None:
                raise ValueError("Expected x_dim or x_shape (the shape of one observation)")
            x_shape = (int(x_dim),)
        shape = tuple(int(s) for s in x_shape)
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"Expected x_shape of positive sizes; got {x_shape}")
        if x_dim is not None and int(x_dim) != int(np.prod(shape)):
            raise ValueError(
                f"Expected x_dim = prod(x_shape) = {int(np.prod(shape))}; got x_dim={x_dim} with "
                f"x_shape={shape}"
            )
        if method not in METHODS:
            raise ValueError(f"Expected method in {METHODS}; got {method!r}")
        check_space(space)
        if space == "theta":
            if method != "npe":
                raise ValueError(f"Expected space='unconstrained' for method={method!r} (theta "
                                 f"space is an NPE option); got space='theta'")
            bad = [i for i, g in enumerate(groups) if truncation_parts(g.estimator) is None]
            if bad:
                raise ValueError(
                    f"Expected every group of a theta-space posterior to hold a bundle made by "
                    f"ilijax.estimators._support.truncated_to_support; groups {bad} do not"
                )
        labels = tuple(str(v) for v in labels) if labels is not None else tuple(
            f"theta_{i}" for i in range(theta_dim))
        if len(labels) != theta_dim:
            raise ValueError(f"Expected {theta_dim} labels (one per parameter); got {len(labels)}")
        self._static = _make_static(method, theta_dim, shape, labels, prior,
                                    [g.estimator for g in groups], [g.spec for g in groups],
                                    space)
        self._group_params = params
        self.weights = w / w.sum()

    # ----------------------------------------------------------------------- pytree

    def tree_flatten(self):
        return (self._group_params, self.weights), self._static

    @classmethod
    def tree_unflatten(cls, static: _Static, children) -> Posterior:
        # No checks and no work: this runs inside traces and on every jit call.
        obj = object.__new__(cls)
        obj._static = static
        obj._group_params, obj.weights = tuple(children[0]), children[1]
        return obj

    # ----------------------------------------------------------------------- properties

    @property
    def groups(self) -> tuple[Group, ...]:
        """The groups: each bundle with its stacked params and spec."""
        s = self._static
        return tuple(Group(b, p, sp) for b, p, sp in zip(s.bundles, self._group_params, s.specs,
                                                         strict=True))

    @property
    def prior(self) -> dist.Distribution:
        return self._static.prior

    @property
    def method(self) -> str:
        return self._static.method

    @property
    def space(self) -> str:
        return self._static.space

    @property
    def labels(self) -> tuple[str, ...]:
        return self._static.labels

    @property
    def theta_dim(self) -> int:
        return self._static.theta_dim

    @property
    def x_shape(self) -> tuple[int, ...]:
        return self._static.x_shape

    @property
    def x_dim(self) -> int:
        return int(np.prod(self._static.x_shape))

    @property
    def normalized(self) -> bool:
        # NPE: a normalised density. NLE/NRE: likelihood (ratio) x prior, known up to a
        # constant per observation.
        return self._static.method == "npe"

    @property
    def _sizes(self) -> list[int]:
        return [_members(p) for p in self._group_params]

    @property
    def _bijector(self):
        from ilijax.priors import support_bijector

        return support_bijector(self._static.prior)

    @property
    def num_members(self) -> int:
        """Total number of ensemble members over all groups."""
        return int(sum(self._sizes))

    def member(self, k: int) -> Posterior:
        """Member ``k`` alone (members numbered over the groups in order) as a one-member
        posterior, e.g. to validate each member of an ensemble separately."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not (
                0 <= int(k) < self.num_members):
            raise ValueError(f"Expected 0 <= k < {self.num_members} (members); got {k!r}")
        starts = np.cumsum([0, *self._sizes])
        g = int(np.searchsorted(starts, int(k), side="right") - 1)
        local = int(k) - int(starts[g])
        group = self.groups[g]
        params = jax.tree.map(lambda a: a[local:local + 1], group.params)
        return Posterior([group._replace(params=params)], [1.0], self.prior,
                         x_shape=self.x_shape, method=self.method, labels=self.labels,
                         space=self.space)

    # ----------------------------------------------------------------------- log-density

    def member_log_prob(self, theta: Array, x: Array) -> Array:
        """``log q_k(theta | x)`` of every member for one pair: shape ``(num_members,)``."""
        return self._member_log_prob(theta, x)

    def _member_log_prob(self, theta, x, log_mass=None):
        """Every member's log-density; ``log_mass`` (theta space) is :meth:`_member_log_mass`
        of ``x``, computed once by a caller that evaluates many ``theta``."""
        from ilijax.estimators._support import truncation_parts

        out, start = [], 0
        for g, p, size in zip(self._static.bundles, self._group_params, self._sizes,
                              strict=True):
            if log_mass is None:
                out.append(jax.vmap(g.log_prob, in_axes=(0, None, None))(p, theta, x))
            else:
                fn = truncation_parts(g).log_prob_given_mass
                out.append(jax.vmap(fn, in_axes=(0, None, None, 0))(
                    p, theta, x, log_mass[start:start + size]))
            start += size
        return jnp.concatenate(out)

    def _member_log_mass(self, x):
        """``(num_members,)`` log in-support masses at ``x`` for a theta-space posterior (what
        each member's ``log_prob`` divides by), else ``None``."""
        from ilijax.estimators._support import truncation_parts

        if self._static.space != "theta":
            return None
        out = [jax.vmap(truncation_parts(g).log_mass, in_axes=(0, None))(p, x)
               for g, p in zip(self._static.bundles, self._group_params, strict=True)]
        return jnp.concatenate(out)

    def _batch_log_mass(self, xb):
        """``(b, num_members)`` :meth:`_member_log_mass` of every observation (theta space), in
        vectorised chunks of ``_MASS_OBS_CHUNK`` observations; ``None`` otherwise."""
        if self._static.space != "theta":
            return None
        return jax.lax.map(self._member_log_mass, xb,
                           batch_size=min(_MASS_OBS_CHUNK, xb.shape[0]))

    def _support_mass_one(self, x, num_draws, key):
        """Mixture in-support mass and its standard error for one observation."""
        from ilijax.estimators._support import support_mass

        if self._static.space != "theta":
            return jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)
        mass, se = [], []
        for g, p in zip(self._static.bundles, self._group_params, strict=True):
            m, e = jax.vmap(lambda q, g=g: support_mass(g, q, x, num_draws=num_draws,
                                                        key=key))(p)
            mass.append(m)
            se.append(e)
        w = jnp.asarray(self.weights, jnp.float32)
        w = w / jnp.sum(w)
        bad = jnp.any(~jnp.isfinite(x))
        return (jnp.where(bad, jnp.nan, jnp.sum(w * jnp.concatenate(mass))),
                jnp.where(bad, jnp.nan, jnp.sum(w * jnp.concatenate(se))))

    def support_mass(self, x: Array, *, num_draws: int | None = None,
                     key: Array | None = None) -> tuple[Array, Array]:
        """The share of the flows' mass inside the prior support, per observation.

        For a theta-space posterior (``space="theta"``) each member's flow is truncated to the
        support and normalised by its in-support mass ``Z_hat_k(x)``, a Monte Carlo estimate
        from ``M`` draws with a fixed key
        (:func:`~ilijax.estimators._support.truncated_to_support`).
        This returns the mixture's ``sum_k w_k Z_hat_k(x)``, the expected share of rejection
        candidates accepted by direct sampling, and the standard error ``sum_k w_k
        sqrt(Z_hat_k (1 - Z_hat_k) / M)`` (the members' estimates share the key, so their
        errors may be correlated; the sum of the standard errors bounds the combined one).
        With the defaults these are the estimates ``log_prob`` uses (before its floor of one
        draw); pass ``num_draws`` and another ``key`` for an independent estimate. An
        unconstrained posterior returns mass 1 and error 0 (its draws never leave the
        support).

        Args:
            x: One observation or a batch ``(b, *x_shape)``.
            num_draws: Draws per member and observation (static; default ``M`` = 4096).
            key: PRNG key of the draws (default: the fixed key of ``log_prob``).

        Returns:
            ``(mass, stderr)``, shape ``()`` for one observation or ``(b,)``.
        """
        x = self._check_x(x)
        if num_draws is not None:
            num_draws = check_int("num_draws", num_draws, 1)
        if key is not None:
            key = check_key(key)
        single = self._is_single(x)
        xb = x[None] if single else x
        xb, = self._place(xb)
        mass, se = _mass_program(self, xb, key, num_draws)
        return (mass[0], se[0]) if single else (mass, se)

    def _log_weights(self):
        w = jnp.asarray(self.weights, jnp.float32)
        w = w / jnp.sum(w)
        return jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)

    def _mixture(self, theta, x, log_mass=None):
        lps = self._member_log_prob(theta, x, log_mass)
        logw = self._log_weights()
        return jax.nn.logsumexp(jnp.where(jnp.isfinite(logw), logw + lps, -jnp.inf))

    def _log_prob_pair(self, theta, x, log_mass=None):
        lp = self._mixture(theta, x, log_mass)
        if self.method != "npe":
            inside = self._bijector.codomain(theta)
            lp = lp + self.prior.log_prob(theta)
            lp = jnp.where(inside & ~jnp.isnan(lp), lp, -jnp.inf)
        # NaN in, NaN out, for every method (inside a user's jit nothing can raise; outside,
        # log_prob raises before this is reached). A non-finite observation is no observation;
        # an infinite theta is a point outside the support (-inf) where the support is bounded.
        bad = jnp.any(jnp.isnan(theta)) | jnp.any(~jnp.isfinite(x))
        return jnp.where(bad, jnp.nan, lp)

    def _log_prob_grid(self, theta, x):
        """``(b, n)`` log-densities of ``theta (b, n, d)``, row ``i`` given ``x[i]``.

        Draws of one observation are vmapped with that observation held fixed, so whatever
        depends on ``x`` alone (an embedding network, the conditioner of an MDN) is computed
        once per observation and member, not once per draw. Memory is bounded for big batches
        (a whole test set times its draws) by vectorised chunks of about
        ``_LOG_PROB_CHUNK // members`` pairs; one program either way.
        """
        b, n = theta.shape[:2]
        chunk = max(1, _LOG_PROB_CHUNK // self.num_members)

        log_mass = self._batch_log_mass(x)  # theta space: once per observation

        def per_obs(args):
            t, xo, lm = args
            one = lambda th: self._log_prob_pair(th, xo, lm)  # noqa: E731
            if n <= chunk:
                return jax.vmap(one)(t)
            return jax.lax.map(one, t, batch_size=chunk)

        if b * n <= chunk:
            return jax.vmap(per_obs)((theta, x, log_mass))
        return jax.lax.map(per_obs, (theta, x, log_mass), batch_size=max(1, chunk // max(n, 1)))

    def _shape_text(self) -> tuple[str, str]:
        one = (f"({self.x_shape[0]},)" if len(self.x_shape) == 1 else str(self.x_shape))
        return one, "(batch, " + ", ".join(str(s) for s in self.x_shape) + ")"

    def _check_x(self, x, name: str = "x") -> Array:
        """``x`` as float32 after its shape check; eager calls also reject NaN/inf, naming the
        observations (inside a trace the values are unknown and pass)."""
        try:
            x = jnp.asarray(x, jnp.float32)
        except TypeError as e:
            raise TypeError(f"Expected {name} to be a numeric array; got "
                            f"{type(x).__name__}") from e
        r = len(self.x_shape)
        if x.ndim not in (r, r + 1) or x.shape[x.ndim - r:] != self.x_shape:
            one, batch = self._shape_text()
            raise ValueError(f"Expected {name} of shape {one} or {batch}; got {x.shape}")
        if not is_traced(x):
            finite = np.isfinite(np.asarray(x)).reshape(-1, self.x_dim).all(axis=1)
            if not finite.all():
                if x.ndim == r:
                    raise ValueError(f"Expected finite values in {name}; got NaN or inf in "
                                     f"{int((~np.isfinite(np.asarray(x))).sum())} of its "
                                     f"{self.x_dim} values")
                raise ValueError(
                    f"Expected finite values in {name}; got NaN or inf in "
                    f"{int((~finite).sum())} of {finite.size} observations (indices "
                    f"{_first_bad(~finite)})"
                )
        return x

    def _is_single(self, x: Array) -> bool:
        return x.ndim == len(self.x_shape)

    def _home(self):
        """The one device holding the params, or None (sharded, or traced)."""
        leaves = jax.tree.leaves(self._group_params)
        leaf = leaves[0] if leaves else None
        if not isinstance(leaf, jax.Array) or is_traced(leaf):
            return None
        devices = leaf.sharding.device_set
        return next(iter(devices)) if len(devices) == 1 else None

    def _place(self, *arrays):
        """Inputs onto the params' device (they may come sharded or committed elsewhere)."""
        home = self._home()
        if home is None or is_traced(arrays):
            return arrays
        return tuple(jax.device_put(a, home) for a in arrays)

    def log_prob(self, theta: Array, x: Array) -> Array:
        """The mixture log-density ``log q(theta | x)`` in theta-space.

        NPE: the normalised posterior density. NLE: ``log sum_k w_k q_k(x | theta) +
        log p(theta)``; NRE: ``log sum_k w_k r_k(theta, x) + log p(theta)``: the posterior up to
        a constant per observation (``self.normalized`` is False), which is all MCMC, the
        coverage ranking and ``ilijax.diagnostics`` need.

        Shapes broadcast like the samples (``x_shape`` is ``(x_dim,)`` for vector data):
        ``theta (d,)`` with ``x x_shape`` gives ``()``; ``theta (..., d)`` with ``x x_shape``
        gives ``(...)``; ``theta (b, d)`` with ``x (b, *x_shape)`` pairs them row by row
        (``(b,)``); ``theta (b, n, d)`` with ``x (b, *x_shape)`` gives ``(b, n)``. Points
        outside the prior support get ``-inf``.

        Differentiable in ``theta``, ``x`` and the params (``jax.grad``), and usable inside
        ``jax.jit`` with the posterior as an argument. Called eagerly, a NaN in ``theta`` or a
        NaN/inf in ``x`` raises ``ValueError`` naming where; inside a trace (``jit``, ``grad``,
        ``vmap``) values are unknown, nothing raises, and a NaN in ``theta`` or a NaN/inf in
        ``x`` gives a NaN log-density (for every method).
        """
        try:
            theta = jnp.asarray(theta, jnp.float32)
        except TypeError as e:
            raise TypeError(f"Expected theta to be a numeric array; got "
                            f"{type(theta).__name__}") from e
        x = self._check_x(x)
        d = self.theta_dim
        if theta.shape[-1:] != (d,):
            raise ValueError(f"Expected theta with last axis {d}; got shape {theta.shape}")
        if not is_traced(theta):
            nan = np.isnan(np.asarray(theta)).reshape(-1, d).any(axis=1)
            if nan.any():
                raise ValueError(
                    f"Expected theta without NaN; got NaN in {int(nan.sum())} of {nan.size} "
                    f"parameter vectors (flat indices {_first_bad(nan)})"
                )
        if self._is_single(x):
            out_shape = theta.shape[:-1]
            th, xb = theta.reshape(1, -1, d), x[None]
        else:
            b = x.shape[0]
            if theta.ndim not in (2, 3) or theta.shape[0] not in (1, b):
                raise ValueError(
                    f"Expected theta of shape ({b}, {d}) or ({b}, n, {d}) for a batch of x; "
                    f"got {theta.shape}"
                )
            th = theta[:, None] if theta.ndim == 2 else theta
            th = jnp.broadcast_to(th, (b,) + th.shape[1:])
            out_shape = (b,) if theta.ndim == 2 else th.shape[:2]
            xb = x
        th, xb = self._place(th, xb)
        return _log_prob_program(self, th, xb).reshape(out_shape)

    # ----------------------------------------------------------------------- sampling

    def _caps(self, num_samples: int) -> tuple[int, ...] | None:
        """Draws computed per member of each group (static), from concrete weights.

        Systematic resampling gives member ``k`` at most ``floor(n w_k) + 1`` draws; one more
        for the float32 rounding of the cumulative weights, never more than ``n``. A group's
        members share the largest cap (they are vmapped). The cap is rounded up to a multiple of
        ``ceil(n / 32)``, so that posteriors whose weights differ a little (another training)
        share one compiled sampler, at most about 3% more draws per member. ``None`` when the
        weights are traced: then every member draws ``n`` (correct, ``num_members`` times the
        work).
        """
        if is_traced(self.weights):
            return None
        n = num_samples
        w = np.asarray(self.weights, np.float64)
        w = w / w.sum()
        q = max(1, -(-n // 32))
        caps, start = [], 0
        for size in self._sizes:
            need = int(math.floor(n * float(np.max(w[start:start + size])))) + 2
            caps.append(min(n, -(-need // q) * q))
            start += size
        return tuple(caps)

    def _sample_one(self, key, x, num_samples, caps):
        from ilijax.estimators._support import truncation_parts

        n = num_samples
        caps = caps if caps is not None else (n,) * len(self._group_params)
        k_offset, k_members, k_perm = jax.random.split(key, 3)
        u = jax.random.uniform(k_offset)
        w = jnp.asarray(self.weights, jnp.float32)
        cum = jnp.concatenate([jnp.zeros(1), jnp.cumsum(w / jnp.sum(w))])
        cum = cum.at[-1].set(1.0)
        edges = jnp.floor(cum * n + u)
        counts = (edges[1:] - edges[:-1]).astype(jnp.int32)
        draws, keep = [], []
        start = 0
        member_keys = jax.random.split(k_members, len(self._group_params))
        for g, p, size, cap, gkey in zip(self._static.bundles, self._group_params, self._sizes,
                                         caps, member_keys, strict=True):
            parts = truncation_parts(g)
            if parts is not None:  # theta space: batch-level rejection, cap draws per member
                many = partial(parts.sample_many, context=x, n=cap)
                d = jax.vmap(many)(p, jax.random.split(gkey, size))  # (size, cap, dim)
            else:
                keys = jax.random.split(gkey, size * cap).reshape(size, cap)
                one = jax.vmap(g.sample, in_axes=(None, 0, None))
                d = jax.vmap(one, in_axes=(0, 0, None))(p, keys, x)  # (size, cap, dim)
            draws.append(d.reshape(size * cap, self.theta_dim))
            keep.append((jnp.arange(cap)[None, :] < counts[start:start + size, None]).ravel())
            start += size
        draws = jnp.concatenate(draws)
        keep = jnp.concatenate(keep)
        order = jnp.argsort(~keep, stable=True)[:n]
        out = jax.random.permutation(k_perm, draws[order])
        return jnp.where(jnp.any(~jnp.isfinite(x)), jnp.nan, out)

    def _sample_batch(self, keys, x, num_samples, chunk, caps):
        fn = lambda args: self._sample_one(args[0], args[1], num_samples, caps)  # noqa: E731
        if chunk is None or chunk >= x.shape[0]:
            return jax.vmap(fn)((keys, x))
        return jax.lax.map(fn, (keys, x), batch_size=chunk)

    def sample(
        self,
        key: Array,
        x: Array,
        num_samples: int,
        *,
        method: str | None = None,
        chunk_size: int | None = None,
        return_info: bool = False,
        num_chains: int | None = None,
        init: str = "sir",
        num_candidates: int = 1000,
        **options,
    ):
        """Draws from the posterior for one observation or a whole batch in one call.

        Args:
            key: PRNG key (``jax.random.key(seed)``). For a batch, observation ``i`` uses
                ``jax.random.split(key, b)[i]``, so ``sample(key, x)[i] ==
                sample(split(key, b)[i], x[i])`` for every method.
            x: One observation ``x_shape`` (``(x_dim,)`` for vectors) or a batch
                ``(b, *x_shape)``. Called eagerly, NaN/inf in ``x`` raises ``ValueError``
                naming the observations; inside a user's ``jit`` nothing can raise and the
                draws of such an observation are NaN.
            num_samples: Draws per observation (an int >= 1).
            method: ``"direct"`` (NPE's own sampler, its default; for a theta-space posterior
                it rejects draws outside the support, see
                :func:`~ilijax.estimators._support.truncated_to_support`, estimates the accepted
                fraction per observation first and warns with a ``UserWarning`` naming the
                observations where it is below 1%, and warns again naming observations
                whose draws came out NaN), ``"nuts"`` (the default for
                NLE/NRE), ``"hmc"``, ``"mala"``, ``"slice"``, ``"aies"``, ``"ess"`` or ``"vi"``
                (see :mod:`ilijax.samplers`). Every method but ``direct`` works on
                ``log_prob`` in the unconstrained space of the prior's support, so draws
                never leave the support, and runs all chains of all observations in one
                compiled program.
            chunk_size: Observations processed at once (vectorised); default: all (``direct``
                forms chunks when a call would exceed about 2^21 draws). When several devices
                are present, the observations are split over them (same draws as on one).
            return_info: Also return a :class:`SamplingInfo` (R-hat, ESS, sampler statistics
                and an arviz DataTree); computed on the host, so not inside a ``jit``.
            num_chains: Chains per observation (MCMC); default one per 64 draws, between 4
                and 32 (many short chains from SIR starts: better C2ST in the same time on
                multimodal posteriors, see :func:`ilijax.samplers.default_num_chains`), or
                ``max(4 dim, 16)`` walkers for ``aies``/``ess``. Each chain keeps
                ``ceil(num_samples / num_chains)`` draws after warm-up and thinning, and the
                first ``num_samples`` of the chains laid end to end are returned.
            init: Starting points of the chains: ``"sir"`` (default: ``num_candidates`` prior
                draws, of which ``num_chains`` are picked without replacement with
                probabilities proportional to likelihood x prior / prior, i.e. sampling
                importance resampling, which spreads chains over the modes by their mass) or
                ``"prior"`` (plain prior draws).
            num_candidates: Prior draws screened by ``init="sir"``.
            **options: Passed to the sampler, e.g. ``num_warmup``, ``thin``,
                ``target_acceptance``, ``max_num_doublings`` (nuts),
                ``num_integration_steps`` (hmc), ``width`` (slice), ``steps`` (vi).

        Returns:
            ``(num_samples, theta_dim)`` for one observation, ``(b, num_samples, theta_dim)``
            for a batch; with ``return_info`` a pair ``(draws, SamplingInfo)``. MCMC methods
            warn (naming them) about observations whose R-hat exceeds 1.01 (up to 4 chains;
            for more chains the value that corresponds to 400 effective draws,
            :func:`ilijax.samplers.rhat_threshold`: 1.039 for 32).

        The compiled programs take the posterior as an argument: a second posterior of the
        same structure samples without compiling again (:func:`trace_counts`). Inside a
        user's ``jit`` (the posterior traced) ``direct`` sampling draws ``num_samples`` from
        every member, as the mixture weights are not known when compiling, and the
        observations are not split over devices (the user's sharding decides); a
        theta-space posterior then neither estimates the accepted fraction nor warns (its
        draws are still in the support, or NaN).
        """
        from ilijax import samplers

        key = check_key(key)
        num_samples = check_int("num_samples", num_samples, 1)
        method = method or ("direct" if self.method == "npe" else "nuts")
        if method not in samplers.METHODS:
            raise ValueError(f"Expected method in {samplers.METHODS}; got {method!r}")
        if method == "direct" and self.method != "npe":
            raise ValueError(
                f"Expected an MCMC or VI method for a {self.method.upper()} posterior (it has "
                f"no direct sampler); got method='direct'. Use e.g. method='nuts'"
            )
        if method == "direct" and (options or num_chains is not None):
            raise ValueError(
                f"Expected no sampler options for method='direct'; got "
                f"{sorted([*options, *(['num_chains'] if num_chains is not None else [])])}"
            )
        if chunk_size is not None:
            chunk_size = check_int("chunk_size", chunk_size, 1)
        if not isinstance(return_info, bool):
            raise ValueError(f"Expected return_info to be a bool; got {return_info!r}")
        x = self._check_x(x)
        traced = is_traced(self, x, key)
        if return_info and traced:
            raise ValueError(
                "Expected return_info=False inside a jit/grad/vmap trace (R-hat, ESS and the "
                "DataTree are computed on the host); got return_info=True. Call sample outside "
                "the transformation for them"
            )
        single = self._is_single(x)
        xb = x[None] if single else x
        keys = key[None] if single else jax.random.split(key, xb.shape[0])
        t0 = time.perf_counter()
        if method == "direct":
            accepted = None
            if self.space == "theta" and not traced:
                accepted = self._check_support_mass(xb, single)
            out = self._sample_direct(keys, xb, num_samples, chunk_size)
            if accepted is not None:
                self._check_nan_draws(out, single)
            if not return_info:
                return out[0] if single else out
            draws = np.asarray(out)
            stats = {} if accepted is None else {"accepted_fraction": accepted}
            info = self._info("direct", draws[:, None], np.asarray(xb), stats, 1,
                              time.perf_counter() - t0, check=False)
            return (out[0] if single else out), _squeeze_info(info, single)
        if init not in ("sir", "prior"):
            raise ValueError(f"Expected init in ('sir', 'prior'); got {init!r}")
        chains = (samplers.default_num_chains(method, self.theta_dim, num_samples)
                  if num_chains is None else check_int("num_chains", num_chains, 1))
        num_candidates = check_int("num_candidates", num_candidates, 1)
        if num_candidates < chains:
            raise ValueError(
                f"Expected num_candidates >= num_chains ({chains}); got {num_candidates}"
            )
        items = tuple(sorted(options.items()))
        for name, value in items:
            try:
                hash(value)
            except TypeError:
                raise ValueError(
                    f"Expected sampler option {name} to be a number, string or tuple (it is a "
                    f"compile-time constant); got {type(value).__name__}"
                ) from None
        fn = partial(_mcmc_program, method=method, num_samples=num_samples, num_chains=chains,
                     init=init, num_candidates=num_candidates, options=items,
                     chunk_size=chunk_size)
        theta, stats = self._run_over_devices(fn, keys, xb)
        if traced:
            b, c, per_chain, d = theta.shape
            out = theta.reshape(b, c * per_chain, d)[:, :num_samples]
            return out[0] if single else out
        theta = np.asarray(theta)  # (b, chains, per_chain, d)
        b, c, per_chain, d = theta.shape
        out = jnp.asarray(theta.reshape(b, c * per_chain, d)[:, :num_samples])
        info = self._info(method, theta, np.asarray(xb),
                          {k: np.asarray(v) for k, v in stats.items()}, c,
                          time.perf_counter() - t0, check=c * per_chain > 3)
        out = out[0] if single else out
        return (out, _squeeze_info(info, single)) if return_info else out

    def _check_support_mass(self, xb, single) -> np.ndarray:
        """The estimated accepted fraction per observation (theta space, eager); warns naming
        the observations below :data:`SUPPORT_MASS_THRESHOLD`."""
        xb, = self._place(xb)
        mass = np.asarray(_mass_program(self, xb, None, None)[0], np.float64)
        low = mass < SUPPORT_MASS_THRESHOLD
        if low.any():
            where = "the observation" if single else f"observations [{_first_bad(low)}]"
            shown = ", ".join(f"{100 * m:.2g}%" for m in mass[low][:10])
            warnings.warn(
                f"only {shown} of the flow's mass lies in the prior support for {where} "
                f"(estimated from {self._num_mass_draws()} draws); rejection will be slow / "
                f"draws may be NaN (after {self._max_candidates()} candidates per draw). The "
                f"observation may lie outside what the simulations cover, or the flow leaks: "
                f"consider space='unconstrained'",
                UserWarning,
                stacklevel=4,
            )
        return mass

    def _check_nan_draws(self, out, single) -> None:
        """Warns naming the observations whose rejection sampler gave up (NaN draws)."""
        nan = np.asarray(jnp.sum(jnp.any(jnp.isnan(out), axis=-1), axis=1))  # (b,)
        if nan.any():
            bad = nan > 0
            where = "the observation" if single else f"observations [{_first_bad(bad)}]"
            counts = ", ".join(str(int(c)) for c in nan[bad][:10])
            warnings.warn(
                f"draws are NaN for {where} ({counts} of {out.shape[1]}): the rejection "
                f"sampler found no point in the prior support within "
                f"{self._max_candidates()} candidates per draw",
                UserWarning,
                stacklevel=4,
            )

    def _num_mass_draws(self) -> int:
        from ilijax.estimators._support import truncation_parts

        return max(truncation_parts(b).num_mass_draws for b in self._static.bundles)

    def _max_candidates(self) -> int:
        from ilijax.estimators._support import truncation_parts

        parts = [truncation_parts(b) for b in self._static.bundles]
        return min(p.num_candidates * p.max_iterations for p in parts)

    def _sample_direct(self, keys, xb, num_samples, chunk_size):
        caps = self._caps(num_samples)
        if chunk_size is None:
            chunk_size = max(1, (1 << 21) // (num_samples * max(1, self.num_members // 2)))
        fn = partial(_direct_program, num_samples=num_samples, chunk=int(chunk_size), caps=caps)
        if chunk_size >= xb.shape[0]:
            return self._run_over_devices(fn, keys, xb)
        keys, xb = self._place(keys, xb)
        return fn(self, keys, xb)

    def _run_over_devices(self, fn, keys, xb):
        """``fn(posterior, keys, x)`` with the observations split over ``k`` devices (one CPU
        device per core, or several accelerators), ``k`` chosen to minimise the observations
        per device and then the padding (5 observations on 4 devices: 3 devices, padded to 6);
        results come back on the default device and equal a single-device run. Inside a trace,
        or for a posterior the user placed on several devices, ``fn`` runs as it is."""
        b = xb.shape[0]
        k = _devices.split_count([b], jax.device_count())
        if k < 2 or is_traced(self, keys, xb) or self._home() is None:
            keys, xb = self._place(keys, xb)
            return fn(self, keys, xb)
        devices = jax.devices()[:k]
        pad = (-b) % k
        mesh = Mesh(np.asarray(devices), ("obs",))
        split = NamedSharding(mesh, PartitionSpec("obs"))
        keys = jax.device_put(jnp.concatenate([keys, jnp.repeat(keys[-1:], pad, 0)]), split)
        xb = jax.device_put(jnp.concatenate([xb, jnp.repeat(xb[-1:], pad, 0)]), split)
        out = fn(self._replicated(mesh), keys, xb)
        return jax.tree.map(lambda a: jax.device_put(a, devices[0])[:b], out)

    def _replicated(self, mesh) -> Posterior:
        """This posterior replicated over ``mesh`` (cached on the object, not a leaf)."""
        cached = self.__dict__.get("_replica")
        if cached is None or cached[0] != mesh:
            cached = (mesh, jax.device_put(self, NamedSharding(mesh, PartitionSpec())))
            self.__dict__["_replica"] = cached
        return cached[1]

    # ----------------------------------------------------------------------- MCMC / VI

    def _logdensity_u(self, u, x, log_mass=None):
        """Unnormalised log posterior of ``u`` in the unconstrained space: log density at
        ``theta = T(u)`` plus ``log |det J_T(u)|`` (the change of variables). For a
        theta-space posterior ``log_mass`` is :meth:`_member_log_mass` of ``x``, computed once
        per observation rather than on every step."""
        bijector = self._bijector
        theta = bijector(u)
        lp = self._log_prob_pair(theta, x, log_mass) + bijector.log_abs_det_jacobian(u, theta)
        return jnp.where(jnp.isnan(lp), -jnp.inf, lp)

    def _initial_positions(self, key, x, num_chains, init, num_candidates, log_mass=None):
        from ilijax.estimators._support import to_unconstrained

        k_prior, k_pick = jax.random.split(key)
        theta = self.prior.sample(k_prior, (num_candidates,))
        u = to_unconstrained(self._bijector, theta)
        if init == "prior":
            return u[:num_chains]
        # SIR: weights likelihood x prior / prior; for NPE q / prior.
        logw = jax.vmap(self._mixture, in_axes=(0, None, None))(theta, x, log_mass)
        if self.method == "npe":
            logw = logw - self.prior.log_prob(theta)
        logw = jnp.where(jnp.isfinite(logw), logw, -jnp.inf)
        # Gumbel top-k: num_chains candidates without replacement, by weight.
        g = jax.random.gumbel(k_pick, logw.shape)
        _, idx = jax.lax.top_k(jnp.where(jnp.isfinite(logw), logw + g, -1e30 + g), num_chains)
        return u[idx]

    def _mcmc_batch(self, run, num_samples, num_chains, init, num_candidates, chunk_size,
                    keys, xb):
        def one(args):
            key, x, log_mass = args
            k_init, k_run = jax.random.split(key)
            u0 = self._initial_positions(k_init, x, num_chains, init, num_candidates, log_mass)
            logdensity = lambda u: self._logdensity_u(u, x, log_mass)  # noqa: E731
            u, stats = run(k_run, logdensity, u0, num_samples)
            theta = self._bijector(u)
            return jnp.where(jnp.any(~jnp.isfinite(x)), jnp.nan, theta), stats

        log_mass = self._batch_log_mass(xb)  # theta space: once per observation, not per step
        if chunk_size is None or chunk_size >= xb.shape[0]:
            return jax.vmap(one)((keys, xb, log_mass))
        return jax.lax.map(one, (keys, xb, log_mass), batch_size=int(chunk_size))

    def _info(self, method, theta, xb, stats, num_chains, seconds, *, check):
        """R-hat and ESS with arviz for every observation and parameter at once, the DataTree,
        and a warning naming observations whose R-hat exceeds the threshold for ``num_chains``
        chains (:func:`ilijax.samplers.rhat_threshold`)."""
        import arviz as az
        import xarray as xr

        from ilijax.samplers import rhat_threshold

        b, c, per_chain, d = theta.shape
        coords = {"obs": np.arange(b), "parameter": list(self.labels)}
        with warnings.catch_warnings():
            # Many short chains can outnumber their draws; the layout is ours, not a mistake.
            warnings.filterwarnings("ignore", "Found chain dimension to be longer",
                                    UserWarning)
            idata = az.from_dict(
                {"posterior": {"theta": theta.transpose(1, 2, 0, 3)},
                 "observed_data": {"x": xb}},
                dims={"theta": ["obs", "parameter"], "x": ["obs", *x_dims(xb.ndim - 1)]},
                coords=coords,
            )
        chain_stats = {k: v for k, v in stats.items() if v.shape[:2] == (b, c)}
        if chain_stats:
            idata["sample_stats"] = xr.DataTree(xr.Dataset(
                {k: (("obs", "chain") + tuple(f"{k}_dim_{i}" for i in range(v.ndim - 2)), v)
                 for k, v in chain_stats.items()}, coords={"obs": np.arange(b)}))
        if check:
            # Chains that never moved (zero variance) give arviz divisions by zero; their
            # R-hat comes out inf/NaN, and the warning below names those observations.
            with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                rhat = np.asarray(az.rhat(idata, var_names=["theta"])["theta"]).reshape(b, d)
                ess = np.asarray(az.ess(idata, var_names=["theta"], method="bulk")[
                    "theta"]).reshape(b, d)
            worst = np.nanmax(np.where(np.isfinite(rhat), rhat, np.inf), axis=1)
            threshold = rhat_threshold(c)
            bad = np.flatnonzero(worst > threshold)
            if bad.size:
                shown = ", ".join(f"{i} ({worst[i]:.3f})" for i in bad[:10])
                more = f" and {bad.size - 10} more" if bad.size > 10 else ""
                warnings.warn(
                    f"{bad.size} of {b} observations have R-hat > {threshold:.3g} ({c} chains) "
                    f"with method={method!r} (index (max R-hat)): {shown}{more}. Their chains "
                    f"disagree (multimodal posterior or too few steps): raise num_warmup or "
                    f"num_samples, or check with more chains",
                    RuntimeWarning,
                    stacklevel=3,
                )
        else:
            rhat = ess = np.full((b, d), np.nan)
        return SamplingInfo(method, int(num_chains), rhat, ess, stats, idata, float(seconds))

    def __repr__(self) -> str:
        names = [(g.spec or {}).get("name", "custom") for g in self.groups]
        shape = (f"x_dim={self.x_dim}" if len(self.x_shape) == 1
                 else f"x_shape={self.x_shape}")
        space = "" if self.space == "unconstrained" else f"space={self.space!r}, "
        return (
            f"Posterior(method={self.method!r}, {space}members={self._sizes} of {names}, "
            f"theta_dim={self.theta_dim}, {shape}, "
            f"weights={np.round(self.weights, 3).tolist()})"
        )




def x_dims(rank: int) -> list[str]:
    """Dimension names of one observation in arviz/xarray output: ``["x_dim"]`` for vectors,
    ``["x_dim_0", "x_dim_1", ...]`` for observations with more axes."""
    return ["x_dim"] if rank == 1 else [f"x_dim_{i}" for i in range(rank)]


def _squeeze_info(info: SamplingInfo, single: bool) -> SamplingInfo:
    if not single:
        return info
    return info._replace(rhat=info.rhat[0], ess=info.ess[0],
                         stats={k: v[0] for k, v in info.stats.items()})
