"""Posterior objects over trained ensembles.

A :class:`Posterior` holds one or more *groups* (an estimator bundle and its members' params
stacked on axis 0), the mixture weights of all members, and the prior. Its density is the
mixture ``log q(theta | x) = logsumexp_k(log w_k + log q_k(theta | x))``; for NPE the members are
wrapped by :func:`ilijax.estimators.on_support`, so it is a normalised density on the prior's
support and draws never leave it.

Sampling a mixture with static shapes: for ``n`` draws, member ``k`` gets ``c_k`` draws where
``c_k`` comes from systematic resampling (Kitagawa 1996) of the weights with one uniform offset
per observation. ``c_k`` differs from ``n w_k`` by less than one, so every member is drawn at most
``floor(n w_k) + 2`` times (a static bound); the kept draws are shuffled. Each draw is marginally
a draw from the mixture; the counts are stratified rather than multinomial, which lowers the
variance of mixture estimates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ilijax.estimators._base import Estimator

Array = jax.Array

__all__ = ["METHODS", "Group", "Posterior", "member_bundle"]

#: Inference methods a Posterior can come from.
METHODS = ("npe", "nle", "nre")


def _no_sample(params, key, context):
    raise TypeError(
        "This member models a likelihood or a ratio, not the posterior: it has no direct sampler. "
        "Use Posterior.sample, which runs MCMC (method='nuts' by default)"
    )


def member_bundle(method: str, bundle, prior: dist.Distribution) -> Estimator:
    """The bundle a :class:`Posterior` evaluates for one member: ``log_prob(params, theta, x)``.

    - ``"npe"``: ``bundle`` models ``q(theta | x)`` in the unconstrained space; it is wrapped by
      :func:`ilijax.estimators.on_support`, so ``log_prob`` is the normalised density on the
      prior's support.
    - ``"nle"``: ``bundle`` models ``q(x | theta)`` (``y = x``, ``context = theta``); the member
      term is ``log q(x | theta)``.
    - ``"nre"``: ``bundle`` is a classifier (``init(key, theta, x)``,
      ``log_ratio(params, theta, x)``); the member term is ``log r(theta, x)``.

    ``init`` always takes ``(key, theta, x)`` (one example or the training set), so saving and
    loading treat every method alike.
    """
    from ilijax.estimators._support import on_support
    from ilijax.priors import support_bijector

    if method == "npe":
        return on_support(bundle, support_bijector(prior))
    if method == "nle":
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
        estimator: The bundle (for NPE: already wrapped by ``on_support``).
        params: Member params stacked on axis 0.
        spec: The unwrapped estimator's spec (for saving), or ``None``.
    """

    estimator: Estimator
    params: Any
    spec: dict | None


def _members(params) -> int:
    return jax.tree.leaves(params)[0].shape[0]


_LOG_PROB_CHUNK = 1 << 18


class Posterior:
    """An ensemble posterior ``q(theta | x)``: exact log-density and batched sampling.

    Args:
        groups: The trained groups (see :class:`Group`).
        weights: Mixture weights of all members, groups concatenated in order; normalised here.
        prior: The prior (a numpyro distribution with event shape ``(theta_dim,)``).
        x_dim: Dimension of one observation (checked on every call).
        method: The inference method that produced it (``"npe"``).
        labels: Optional parameter names, used by plots.

    Attributes:
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
        x_dim: int,
        method: str = "npe",
        labels: Sequence[str] | None = None,
    ):
        # Members trained sharded over several devices are gathered onto the default device, so
        # that the same posterior evaluates identically however it was trained or loaded.
        device = jax.devices()[0]
        self.groups = tuple(g._replace(params=jax.device_put(g.params, device)) for g in groups)
        w = np.asarray(weights, dtype=np.float64)
        sizes = [_members(g.params) for g in self.groups]
        if w.shape != (sum(sizes),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(
                f"Expected {sum(sizes)} finite non-negative weights (one per member); got {w}"
            )
        self.weights = w / w.sum()
        self._sizes = sizes
        self.prior = prior
        self.theta_dim = int(prior.event_shape[0])
        self.x_dim = int(x_dim)
        self.method = method
        self.normalized = True  # log_prob is a normalised density (NPE)
        self.labels = tuple(labels) if labels is not None else tuple(
            f"theta_{i}" for i in range(self.theta_dim)
        )
        self._log_prob_jit = jax.jit(self._log_prob_pairs)
        self._sample_jit = jax.jit(self._sample_batch, static_argnums=(3, 4))

    @property
    def num_members(self) -> int:
        """Total number of ensemble members over all groups."""
        return int(sum(self._sizes))

    # ----------------------------------------------------------------------- log-density

    def member_log_prob(self, theta: Array, x: Array) -> Array:
        """``log q_k(theta | x)`` of every member for one pair: shape ``(num_members,)``."""
        return self._member_log_prob(self._params(), theta, x)

    def _params(self):
        return tuple(g.params for g in self.groups)

    def _member_log_prob(self, params, theta, x):
        out = []
        for g, p in zip(self.groups, params, strict=True):
            out.append(jax.vmap(g.estimator.log_prob, in_axes=(0, None, None))(p, theta, x))
        return jnp.concatenate(out)

    def _log_prob_pair(self, params, theta, x):
        lps = self._member_log_prob(params, theta, x)
        logw = jnp.log(jnp.asarray(self.weights, jnp.float32))
        return jax.nn.logsumexp(jnp.where(self.weights > 0, logw + lps, -jnp.inf))

    def _log_prob_pairs(self, params, theta, x):
        one = lambda a: self._log_prob_pair(params, a[0], a[1])  # noqa: E731
        # Bound memory for big batches (a whole test set times its draws): vectorised chunks
        # of _LOG_PROB_CHUNK // members pairs; one program either way.
        chunk = max(1, _LOG_PROB_CHUNK // self.num_members)
        if theta.shape[0] <= chunk:
            return jax.vmap(one)((theta, x))
        return jax.lax.map(one, (theta, x), batch_size=chunk)

    def _check_x(self, x) -> Array:
        x = jnp.asarray(x, jnp.float32)
        if x.ndim not in (1, 2) or x.shape[-1] != self.x_dim:
            raise ValueError(
                f"Expected x of shape ({self.x_dim},) or (batch, {self.x_dim}); got {x.shape}"
            )
        return x

    def log_prob(self, theta: Array, x: Array) -> Array:
        """The mixture log-density ``log q(theta | x)`` in theta-space.

        Shapes broadcast like the samples: ``theta (d,)`` with ``x (x_dim,)`` gives ``()``;
        ``theta (n, d)`` with ``x (x_dim,)`` gives ``(n,)``; ``theta (b, d)`` with
        ``x (b, x_dim)`` pairs them row by row (``(b,)``); ``theta (b, n, d)`` with
        ``x (b, x_dim)`` gives ``(b, n)``. Points outside the prior support get ``-inf``.
        """
        theta = jnp.asarray(theta, jnp.float32)
        x = self._check_x(x)
        if theta.shape[-1:] != (self.theta_dim,):
            raise ValueError(
                f"Expected theta with last axis {self.theta_dim}; got shape {theta.shape}"
            )
        if x.ndim == 2 and theta.ndim == 3:
            x = x[:, None, :]
        elif x.ndim == 2 and theta.ndim != 2:
            raise ValueError(
                f"Expected theta of shape ({x.shape[0]}, {self.theta_dim}) or "
                f"({x.shape[0]}, n, {self.theta_dim}) for a batch of x; got {theta.shape}"
            )
        batch = jnp.broadcast_shapes(theta.shape[:-1], x.shape[:-1])
        th = jnp.broadcast_to(theta, batch + (self.theta_dim,)).reshape(-1, self.theta_dim)
        xx = jnp.broadcast_to(x, batch + (self.x_dim,)).reshape(-1, self.x_dim)
        device = jax.devices()[0]  # where the params live (inputs may come sharded)
        th, xx = jax.device_put(th, device), jax.device_put(xx, device)
        return self._log_prob_jit(self._params(), th, xx).reshape(batch)

    # ----------------------------------------------------------------------- sampling

    def _caps(self, num_samples: int) -> list[int]:
        # Systematic resampling gives member k at most floor(n w_k) + 1 draws; one more for the
        # float32 rounding of the cumulative weights. Never more than n.
        return [min(num_samples, int(math.floor(num_samples * w)) + 2) for w in self.weights]

    def _sample_one(self, params, key, x, num_samples):
        n = num_samples
        caps = self._caps(n)
        k_offset, k_members, k_perm = jax.random.split(key, 3)
        u = jax.random.uniform(k_offset)
        cum = np.concatenate([[0.0], np.cumsum(self.weights)])
        cum[-1] = 1.0
        edges = jnp.floor(jnp.asarray(cum * n, jnp.float32) + u)
        counts = (edges[1:] - edges[:-1]).astype(jnp.int32)
        draws, keep = [], []
        start = 0
        member_keys = jax.random.split(k_members, len(self.groups))
        for g, p, size, gkey in zip(self.groups, params, self._sizes, member_keys, strict=True):
            cap = max(caps[start:start + size])
            keys = jax.random.split(gkey, size * cap).reshape(size, cap)
            one = jax.vmap(g.estimator.sample, in_axes=(None, 0, None))
            d = jax.vmap(one, in_axes=(0, 0, None))(p, keys, x)  # (size, cap, dim)
            draws.append(d.reshape(size * cap, self.theta_dim))
            keep.append((jnp.arange(cap)[None, :] < counts[start:start + size, None]).ravel())
            start += size
        draws = jnp.concatenate(draws)
        keep = jnp.concatenate(keep)
        order = jnp.argsort(~keep, stable=True)[:n]
        return jax.random.permutation(k_perm, draws[order])

    def _sample_batch(self, params, keys, x, num_samples, chunk):
        fn = lambda args: self._sample_one(params, args[0], args[1], num_samples)  # noqa: E731
        if chunk is None or chunk >= x.shape[0]:
            return jax.vmap(fn)((keys, x))
        return jax.lax.map(fn, (keys, x), batch_size=chunk)

    def sample(
        self, key: Array, x: Array, num_samples: int, *, chunk_size: int | None = None
    ) -> Array:
        """Draws from the posterior for one observation or a whole batch in one call.

        Args:
            key: PRNG key. For a batch, observation ``i`` uses ``jax.random.split(key, b)[i]``,
                so ``sample(key, x)[i] == sample(split(key, b)[i], x[i])``.
            x: One observation ``(x_dim,)`` or a batch ``(b, x_dim)``.
            num_samples: Draws per observation.
            chunk_size: Observations processed at once (vectorised); default: all, unless that
                exceeds about 2^21 draws, in which case chunks are formed (a ``lax.map``). When
                several devices are present and no chunking is needed, the observations are
                split over the devices (same draws as on one device).

        Returns:
            ``(num_samples, theta_dim)`` for one observation, ``(b, num_samples, theta_dim)``
            for a batch. Every draw lies in the prior support.
        """
        num_samples = int(num_samples)
        if num_samples < 1:
            raise ValueError(f"Expected num_samples >= 1; got {num_samples}")
        x = self._check_x(x)
        single = x.ndim == 1
        xb = x[None] if single else x
        keys = key[None] if single else jax.random.split(key, xb.shape[0])
        if chunk_size is None:
            chunk_size = max(1, (1 << 21) // (num_samples * max(1, self.num_members // 2)))
        b = xb.shape[0]
        devices = jax.devices()
        if len(devices) > 1 and b >= len(devices) and chunk_size >= b:
            # Observations are independent: split them over the devices (one CPU device per
            # core, or several accelerators), padding to a multiple of the device count.
            pad = (-b) % len(devices)
            mesh = Mesh(np.asarray(devices), ("obs",))
            split = NamedSharding(mesh, PartitionSpec("obs"))
            keys = jax.device_put(jnp.concatenate([keys, jnp.repeat(keys[-1:], pad, 0)]), split)
            xb = jax.device_put(jnp.concatenate([xb, jnp.repeat(xb[-1:], pad, 0)]), split)
            params = self._replicated_params(mesh)
            out = self._sample_jit(params, keys, xb, num_samples, int(chunk_size))
            out = jax.device_put(out, devices[0])[:b]  # back on the default device
        else:
            out = self._sample_jit(self._params(), keys, xb, num_samples, int(chunk_size))
        return out[0] if single else out

    def _replicated_params(self, mesh):
        if getattr(self, "_replicated", None) is None or self._replicated[0] != mesh:
            spec = NamedSharding(mesh, PartitionSpec())
            self._replicated = (mesh, jax.device_put(self._params(), spec))
        return self._replicated[1]

    def __repr__(self) -> str:
        names = [(g.spec or {}).get("name", "custom") for g in self.groups]
        return (
            f"Posterior(method={self.method!r}, members={self._sizes} of {names}, "
            f"theta_dim={self.theta_dim}, x_dim={self.x_dim}, "
            f"weights={np.round(self.weights, 3).tolist()})"
        )
