"""Priors: numpyro distributions with event dimension 1, and their support bijections.

Any numpyro distribution whose ``event_shape`` is ``(theta_dim,)`` is a valid prior. The
constructors below match ltu-ili's set (``Uniform``, ``IndependentNormal``, ``MultivariateNormal``,
``IndependentTruncatedNormal``, ...) and return plain numpyro objects. :func:`support_bijector`
maps the unconstrained space R^d onto the prior's support (numpyro ``biject_to``); NPE estimators
learn in that space, so posterior samples never leave the prior support.

:func:`prior_to_spec` / :func:`prior_from_spec` turn the priors built here into JSON and back,
which is how :func:`ilijax.save` stores them without pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform, biject_to

__all__ = [
    "independent",
    "log_uniform",
    "multivariate_normal",
    "normal",
    "prior_from_spec",
    "prior_to_spec",
    "support_bijector",
    "truncated_normal",
    "uniform",
    "validate_prior",
]


def _vec(name: str, value: Any) -> jax.Array:
    a = jnp.atleast_1d(jnp.asarray(value, dtype=jnp.float32))
    if a.ndim != 1:
        raise ValueError(f"Expected {name} to be a scalar or 1-D sequence; got shape {a.shape}")
    if not bool(jnp.all(jnp.isfinite(a))):
        raise ValueError(f"Expected finite values in {name}; got {np.asarray(a).tolist()}")
    return a


def _broadcast(**arrays: jax.Array) -> list[jax.Array]:
    shapes = {k: v.shape[0] for k, v in arrays.items()}
    n = max(shapes.values())
    if any(v not in (1, n) for v in shapes.values()):
        raise ValueError(f"Expected all parameters to have length 1 or {n}; got {shapes}")
    return [jnp.broadcast_to(v, (n,)) for v in arrays.values()]


def uniform(low: Any, high: Any) -> dist.Distribution:
    """Independent uniform prior on the box ``[low, high]`` (ltu-ili ``Uniform``).

    Args:
        low: Lower bounds, one per parameter (a scalar broadcasts).
        high: Upper bounds; each must exceed its ``low``.

    Examples:
        >>> prior = uniform([0.0, 0.0], [1.0, 2.0])
        >>> prior.event_shape
        (2,)
    """
    low, high = _broadcast(low=_vec("low", low), high=_vec("high", high))
    if not bool(jnp.all(high > low)):
        raise ValueError(
            f"Expected high > low for every parameter; got low={np.asarray(low).tolist()}, "
            f"high={np.asarray(high).tolist()}"
        )
    return dist.Uniform(low, high).to_event(1)


def normal(loc: Any, scale: Any) -> dist.Distribution:
    """Independent normal prior (ltu-ili ``IndependentNormal``)."""
    loc, scale = _broadcast(loc=_vec("loc", loc), scale=_vec("scale", scale))
    if not bool(jnp.all(scale > 0)):
        raise ValueError(f"Expected scale > 0; got {np.asarray(scale).tolist()}")
    return dist.Normal(loc, scale).to_event(1)


def multivariate_normal(loc: Any, cov: Any) -> dist.Distribution:
    """Multivariate normal prior with full covariance ``cov`` (ltu-ili ``MultivariateNormal``)."""
    loc = _vec("loc", loc)
    cov = jnp.asarray(cov, dtype=jnp.float32)
    if cov.shape != (loc.shape[0], loc.shape[0]):
        raise ValueError(
            f"Expected cov of shape ({loc.shape[0]}, {loc.shape[0]}); got {cov.shape}"
        )
    if not bool(jnp.all(jnp.isfinite(jnp.linalg.cholesky(cov)))):
        raise ValueError("Expected cov to be symmetric positive definite; its Cholesky failed")
    return dist.MultivariateNormal(loc, covariance_matrix=cov)


def log_uniform(low: Any, high: Any) -> dist.Distribution:
    """Independent log-uniform prior on ``[low, high]`` with ``0 < low < high``."""
    low, high = _broadcast(low=_vec("low", low), high=_vec("high", high))
    if not bool(jnp.all((low > 0) & (high > low))):
        raise ValueError(
            f"Expected 0 < low < high; got low={np.asarray(low).tolist()}, "
            f"high={np.asarray(high).tolist()}"
        )
    return dist.LogUniform(low, high).to_event(1)


def truncated_normal(loc: Any, scale: Any, low: Any, high: Any) -> dist.Distribution:
    """Independent normal prior truncated to ``[low, high]`` (ltu-ili
    ``IndependentTruncatedNormal``)."""
    loc, scale, low, high = _broadcast(
        loc=_vec("loc", loc), scale=_vec("scale", scale), low=_vec("low", low),
        high=_vec("high", high),
    )
    if not bool(jnp.all((scale > 0) & (high > low))):
        raise ValueError("Expected scale > 0 and high > low for every parameter")
    return dist.TruncatedNormal(loc, scale, low=low, high=high).to_event(1)


class _JointSupport(constraints.Constraint):
    """Support of :class:`JointIndependent`: per-coordinate constraints (numpyro's ``cat``
    constraint fails to check event-dim-1 parts, hence this small class)."""

    event_dim = 1

    def __init__(self, parts: Sequence[constraints.Constraint]):
        self.parts = tuple(parts)

    def __call__(self, x):
        ok = [p(x[..., i]) for i, p in enumerate(self.parts)]
        return jnp.all(jnp.stack(ok, axis=-1), axis=-1)

    def feasible_like(self, prototype):
        return jnp.stack(
            [p.feasible_like(prototype[..., i]) for i, p in enumerate(self.parts)], axis=-1
        )

    def tree_flatten(self):
        return (), ((), {"parts": self.parts})


class _JointTransform(Transform):
    """Applies one scalar bijection per coordinate (R^d -> product of supports)."""

    domain = constraints.real_vector

    def __init__(self, parts: Sequence[Transform], support: _JointSupport):
        self.parts = tuple(parts)
        self._codomain = support

    @property
    def codomain(self):
        return self._codomain

    def __call__(self, x):
        return jnp.stack([t(x[..., i]) for i, t in enumerate(self.parts)], axis=-1)

    def _inverse(self, y):
        return jnp.stack([t.inv(y[..., i]) for i, t in enumerate(self.parts)], axis=-1)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return sum(
            t.log_abs_det_jacobian(x[..., i], y[..., i]) for i, t in enumerate(self.parts)
        )

    def tree_flatten(self):
        return (), ((), {"parts": self.parts, "_codomain": self._codomain})


@biject_to.register(_JointSupport)
def _biject_joint(constraint: _JointSupport) -> Transform:
    return _JointTransform([biject_to(p) for p in constraint.parts], constraint)


class JointIndependent(dist.Distribution):
    """Independent joint of different 1-D distributions, one per parameter.

    Attributes:
        parts: Scalar numpyro distributions (``batch_shape == event_shape == ()``).
    """

    arg_constraints = {}
    pytree_aux_fields = ("parts",)

    def __init__(self, parts: Sequence[dist.Distribution]):
        self.parts = tuple(parts)
        super().__init__(batch_shape=(), event_shape=(len(self.parts),))

    @property
    def support(self):
        return _JointSupport([p.support for p in self.parts])

    def sample(self, key, sample_shape=()):
        keys = jax.random.split(key, len(self.parts))
        return jnp.stack(
            [p.sample(k, sample_shape) for p, k in zip(self.parts, keys, strict=True)], axis=-1
        )

    def log_prob(self, value):
        return sum(p.log_prob(value[..., i]) for i, p in enumerate(self.parts))

    @property
    def mean(self):
        return jnp.stack([p.mean for p in self.parts], axis=-1)

    @property
    def variance(self):
        return jnp.stack([p.variance for p in self.parts], axis=-1)


def independent(parts: Sequence[dist.Distribution]) -> dist.Distribution:
    """Joins a different 1-D distribution per parameter into one prior.

    Args:
        parts: Scalar numpyro distributions, e.g. ``[dist.Uniform(0, 1), dist.LogNormal(0, 1)]``,
            or 1-parameter priors from this module (``uniform(0., 1.)``).

    Examples:
        >>> import numpyro.distributions as dist
        >>> prior = independent([dist.Uniform(0.0, 1.0), dist.Normal(0.0, 2.0)])
        >>> prior.event_shape
        (2,)
    """
    scalars = []
    for i, p in enumerate(parts):
        if isinstance(p, dist.Independent) and p.event_shape == (1,):
            p = p.base_dist
            p = _squeeze_scalar(p)
        if not isinstance(p, dist.Distribution) or p.event_shape != () or p.batch_shape not in (
            (),
            (1,),
        ):
            raise ValueError(
                f"Expected parts[{i}] to be a scalar numpyro distribution; got {p!r} with "
                f"batch_shape={getattr(p, 'batch_shape', None)}, "
                f"event_shape={getattr(p, 'event_shape', None)}"
            )
        scalars.append(_squeeze_scalar(p))
    if not scalars:
        raise ValueError("Expected at least one part; got an empty list")
    return JointIndependent(scalars)


def _squeeze_scalar(p: dist.Distribution) -> dist.Distribution:
    if p.batch_shape == (1,):
        spec = _scalar_spec(p)
        if spec is not None:
            return _scalar_from_spec(
                {k: (np.asarray(v).reshape(()).item() if k != "type" else v)
                 for k, v in spec.items()}
            )
    return p


def validate_prior(prior: Any) -> dist.Distribution:
    """Checks that ``prior`` is a numpyro distribution with one event dimension.

    Returns:
        The prior itself. Raises ``ValueError`` naming what was expected and what was got.
    """
    if not isinstance(prior, dist.Distribution):
        raise ValueError(f"Expected prior to be a numpyro Distribution; got {type(prior).__name__}")
    if len(prior.event_shape) != 1 or prior.batch_shape != ():
        raise ValueError(
            "Expected a prior with event_shape (theta_dim,) and batch_shape (); got event_shape "
            f"{prior.event_shape}, batch_shape {prior.batch_shape} (use .to_event(1) to turn "
            "independent parameters into one event)"
        )
    return prior


def support_bijector(prior: dist.Distribution) -> Transform:
    """The bijection from R^theta_dim onto the prior's support (numpyro ``biject_to``).

    Box priors get a scaled sigmoid, positive ones ``exp``, unbounded ones the identity.
    """
    return biject_to(validate_prior(prior).support)


def has_unbounded_support(prior: dist.Distribution) -> bool:
    """Whether the prior's support is all of R^theta_dim (its support bijection is the
    identity): a Gaussian prior, say, but not a box, a positive or a half-bounded one."""
    from numpyro.distributions.transforms import IdentityTransform, IndependentTransform

    bijector = support_bijector(prior)
    while isinstance(bijector, IndependentTransform):
        bijector = bijector.base_transform
    return isinstance(bijector, IdentityTransform)


# ----------------------------------------------------------------------------- serialisation

def _scalar_spec(p: dist.Distribution) -> dict | None:
    """JSON description of a scalar/vector numpyro distribution of a known family, else None."""
    def f(a):
        return np.asarray(a, dtype=np.float64).tolist()

    if isinstance(p, dist.LogUniform):
        return {"type": "LogUniform", "low": f(p.low), "high": f(p.high)}
    if isinstance(p, dist.Uniform):
        return {"type": "Uniform", "low": f(p.low), "high": f(p.high)}
    if isinstance(p, dist.Normal):
        return {"type": "Normal", "loc": f(p.loc), "scale": f(p.scale)}
    if isinstance(p, dist.TwoSidedTruncatedDistribution) and isinstance(p.base_dist, dist.Normal):
        return {"type": "TruncatedNormal", "loc": f(p.base_dist.loc),
                "scale": f(p.base_dist.scale), "low": f(p.low), "high": f(p.high)}
    if isinstance(p, dist.LogNormal):
        return {"type": "LogNormal", "loc": f(p.loc), "scale": f(p.scale)}
    if isinstance(p, dist.HalfNormal):
        return {"type": "HalfNormal", "scale": f(p.scale)}
    if isinstance(p, dist.Exponential):
        return {"type": "Exponential", "rate": f(p.rate)}
    if isinstance(p, dist.Gamma):
        return {"type": "Gamma", "concentration": f(p.concentration), "rate": f(p.rate)}
    if isinstance(p, dist.Beta):
        return {"type": "Beta", "concentration1": f(p.concentration1),
                "concentration0": f(p.concentration0)}
    return None


def _scalar_from_spec(spec: dict) -> dist.Distribution:
    kind = spec["type"]
    a = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in spec.items() if k != "type"}
    if kind == "TruncatedNormal":
        return dist.TruncatedNormal(a["loc"], a["scale"], low=a["low"], high=a["high"])
    try:
        return getattr(dist, kind)(**a)
    except AttributeError as e:
        raise ValueError(f"Unknown distribution type {kind!r} in prior spec") from e


def prior_to_spec(prior: dist.Distribution) -> dict:
    """A JSON-serialisable description of ``prior``.

    Supported: the constructors of this module, ``Independent`` of any family in
    :func:`_scalar_spec`, ``MultivariateNormal`` and :class:`JointIndependent` of such families.
    Raises ``ValueError`` for other distributions (save the prior yourself and pass it to
    ``ilijax.load(path, prior=...)``).
    """
    validate_prior(prior)
    if isinstance(prior, dist.MultivariateNormal):
        return {"type": "MultivariateNormal", "loc": np.asarray(prior.loc).tolist(),
                "cov": np.asarray(prior.covariance_matrix).tolist()}
    if isinstance(prior, dist.Independent):
        base = _scalar_spec(prior.base_dist)
        if base is not None and prior.reinterpreted_batch_ndims == 1:
            return {"type": "Independent", "base": base}
    if isinstance(prior, JointIndependent):
        parts = [_scalar_spec(p) for p in prior.parts]
        if all(s is not None for s in parts):
            return {"type": "JointIndependent", "parts": parts}
    raise ValueError(
        f"Expected a prior built by ilijax.priors (or an Independent/MultivariateNormal of a known "
        f"family) to serialise; got {type(prior).__name__}. Pass prior= to ilijax.load instead."
    )


def prior_from_spec(spec: dict) -> dist.Distribution:
    """Inverse of :func:`prior_to_spec`."""
    kind = spec.get("type")
    if kind == "MultivariateNormal":
        return dist.MultivariateNormal(
            jnp.asarray(spec["loc"], jnp.float32),
            covariance_matrix=jnp.asarray(spec["cov"], jnp.float32),
        )
    if kind == "Independent":
        return _scalar_from_spec(spec["base"]).to_event(1)
    if kind == "JointIndependent":
        return JointIndependent([_scalar_from_spec(s) for s in spec["parts"]])
    raise ValueError(f"Unknown prior spec type {kind!r}")
