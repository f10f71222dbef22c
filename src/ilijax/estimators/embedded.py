"""Estimators whose context passes through an embedding network trained jointly with them.

``embedded(estimator, embedding)`` turns a density estimator ``q(theta | s)`` (or an NRE
classifier ``d(theta, s)``) over a summary vector ``s`` into one over raw data ``x`` of any
shape, with ``s = E_phi((x - m) / v)``: ``E_phi`` is a network from :mod:`ilijax.nn.embeddings`
(or any flax module mapping one event to a vector) and ``m, v`` are standardization statistics
of the raw training ``x``. The result is an ordinary bundle (same contract, single events), so
``ilijax.npe``, ``ilijax.nre`` and ``ilijax.fit`` train the embedding and the estimator
together, one vmapped program over the ensemble members, each member with its own embedding.

Params of one member::

    {"x_shift": Frozen(event_shape), "x_scale": Frozen(event_shape),  # raw-x statistics
     "embedding": {...},                               # E_phi (trained)
     "estimator": {...}}                               # the inner bundle's params (trained)

The spec, ``{"name": "embedded", "config": {"estimator": <inner spec>, "embedding":
<embedding spec>, "standardize": ..., "share_embedding": ...}}``, is JSON, so
``ilijax.save``/``ilijax.load`` round-trip a posterior with an embedding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ilijax.estimators._base import Estimator, Frozen, frozen_value
from ilijax.estimators.classifier import Classifier
from ilijax.nn.embeddings import build_embedding, check_event_shape, embedding_spec

__all__ = ["STANDARDIZE", "EmbeddingParts", "embedded", "embedding_parts"]

Array = jax.Array
Params = Any

#: Standardization modes of the raw ``x`` (see :func:`embedded`).
STANDARDIZE = ("auto", "elementwise", "feature", "global", "none")

_MIN_STD = 1e-6


class EmbeddingParts(NamedTuple):
    """The pieces of an embedded bundle (see :func:`embedding_parts`).

    Attributes:
        inner: The bundle over summaries (an ``Estimator`` or a ``Classifier``).
        module: The embedding network (flax module acting on one event).
        standardize: The resolved standardization mode of the raw ``x``.
        share_embedding: Whether ``npe``/``nre`` share one embedding across the ensemble.
        embed: ``(params, x) -> s``: standardize and embed one raw event with an embedded
            member's params.
        stats: ``(x_rows) -> (shift, scale)``: the standardization statistics of ``(n, *event)``
            rows (event-shaped arrays).
    """

    inner: Estimator | Classifier
    module: nn.Module
    standardize: str
    share_embedding: bool
    embed: Callable[[Params, Array], Array]
    stats: Callable[[Array], tuple[Array, Array]]


class _EmbeddedEstimator(Estimator):
    """An :class:`Estimator` that also carries its :class:`EmbeddingParts`."""


class _EmbeddedClassifier(Classifier):
    """A :class:`Classifier` that also carries its :class:`EmbeddingParts`."""


def embedding_parts(bundle: Any) -> EmbeddingParts | None:
    """The :class:`EmbeddingParts` of a bundle made by :func:`embedded`, else ``None``."""
    return getattr(bundle, "embedding_parts", None)


def _shape_str(shape) -> str:
    shape = tuple(int(s) for s in shape)
    return f"({shape[0]},)" if len(shape) == 1 else str(shape)


def embedded(
    estimator: Estimator | Classifier | dict,
    embedding: nn.Module | dict,
    *,
    standardize: str = "auto",
    share_embedding: bool = False,
) -> Estimator | Classifier:
    """Puts an embedding network in front of an estimator's (or classifier's) context.

    The returned bundle takes the raw ``x`` event (any shape the embedding accepts, e.g.
    ``(64,)``, ``(32, 32)``, ``(100, 3)``) as its context:

        log q(theta | x) = log q_inner(theta | E_phi((x - m) / v)),

    and ``init(key, theta, x)``, given the training set (``theta (n, d)``, ``x (n, *event)``),
    takes the standardization ``m, v`` from ``x``, initialises the embedding, and initialises
    the inner bundle with ``theta``'s statistics and an identity context standardization (the
    summaries move during training; see the comment in ``init``). The event shape is fixed at
    ``init``; ``log_prob``/``sample`` raise ``ValueError`` naming the expected and got shapes for
    another one.

    Standardization of the raw ``x`` (``standardize``), statistics over the training rows:

    - ``"elementwise"``: a mean and standard deviation per element of the event (sbi's
      ``z_score_x="independent"``); the default for ``FCN``, ``CNN1D`` and ``CNN2D``.
    - ``"feature"``: per last axis (per feature of a point set, per channel of a map), pooled
      over the other axes; the default for ``DeepSet`` and ``GNN``, whose outputs must not
      depend on the order of points. Padding rows (``mask_zeros``) are left out of the
      statistics.
    - ``"global"``: one mean and standard deviation for all elements.
    - ``"none"``: the raw values.

    The positions of a ``GNN`` (its first ``pos_dims`` features) are never standardized, so its
    ``radius`` is in data units. Elements with zero spread are divided by 1.

    Args:
        estimator: The bundle over summaries: an :class:`Estimator` from
            :mod:`ilijax.estimators` (for ``npe``), a :class:`Classifier` (for ``nre``), or a
            spec dict of either. Its context dimension is the embedding's output size. Not for
            ``nle``: there ``x`` is the modelled variable, not the context (it raises).
        embedding: A module from :mod:`ilijax.nn.embeddings` or its spec dict
            (``{"name": "cnn2d", "config": {"out_features": 16, ...}}``); another flax module
            mapping one event to a vector also works, but the bundle is then not saveable.
        standardize: One of :data:`STANDARDIZE`; ``"auto"`` picks the embedding's default.
        share_embedding: For ensembles trained by ``ilijax.npe``/``ilijax.nre``: train the
            embedding jointly with a first member only, then freeze it and train every member's
            estimator on its summaries (all members then hold identical embedding params).
            Default False: every member trains its own embedding.

    Returns:
        An :class:`Estimator` (or a :class:`Classifier` for a classifier) with
        ``spec = {"name": "embedded", "config": {...}}`` (``None`` if a part has no spec).

    Examples:
        >>> import jax, jax.numpy as jnp, ilijax
        >>> from ilijax.nn import CNN1D
        >>> est = embedded(ilijax.estimators.mdn(hidden=8, components=2),
        ...                CNN1D(out_features=4, channels=(4,), hidden=()))
        >>> params = est.init(jax.random.key(0), jnp.zeros(2), jnp.zeros(32))
        >>> est.log_prob(params, jnp.zeros(2), jnp.ones(32)).shape
        ()

    References:
        Jiang et al., "Learning summary statistic for approximate Bayesian computation via deep
        neural network", Statistica Sinica 2017; Greenberg, Nonnenmacher and Macke, "Automatic
        posterior transformation for likelihood-free inference", ICML 2019 (embedding networks
        trained jointly with the density estimator, as sbi and ltu-ili do).
    """
    if isinstance(estimator, dict):
        from ilijax.estimators import build

        estimator = build(estimator)
    if not isinstance(estimator, Estimator | Classifier):
        raise ValueError(
            f"Expected estimator to be an Estimator or Classifier bundle (or its spec); got "
            f"{estimator!r}"
        )
    if embedding_parts(estimator) is not None:
        raise ValueError("Expected an estimator without an embedding; got an embedded one")
    module = build_embedding(embedding)
    if not isinstance(module, nn.Module):
        raise ValueError(f"Expected embedding to be a flax module or a spec dict; got "
                         f"{embedding!r}")
    if standardize not in STANDARDIZE:
        raise ValueError(f"Expected standardize in {STANDARDIZE}; got {standardize!r}")
    if not isinstance(share_embedding, bool):
        raise ValueError(f"Expected share_embedding to be a bool; got {share_embedding!r}")
    mode = getattr(module, "standardize", "elementwise") if standardize == "auto" else standardize
    raw = int(getattr(module, "raw_features", 0))
    mask_zeros = bool(getattr(module, "mask_zeros", False))
    is_classifier = isinstance(estimator, Classifier)
    inner = estimator
    name = type(module).__name__

    def row_mask(rows):
        # (..., N) True for real points: padding rows are all zero (sets only).
        return jnp.any(rows != 0, axis=-1)

    def stats(rows):
        """Shift and scale of the raw x, event-shaped, from ``(n, *event)`` rows."""
        event = rows.shape[1:]
        if mode == "none" or rows.shape[0] < 2:
            return jnp.zeros(event, jnp.float32), jnp.ones(event, jnp.float32)
        axes = {"elementwise": (0,), "feature": tuple(range(rows.ndim - 1)),
                "global": tuple(range(rows.ndim))}[mode]
        w = row_mask(rows)[..., None] if mask_zeros else jnp.ones(rows.shape[:-1] + (1,))
        w = jnp.broadcast_to(w, rows.shape).astype(jnp.float32)
        count = jnp.sum(w, axis=axes, keepdims=True)
        mean = jnp.sum(w * rows, axis=axes, keepdims=True) / jnp.maximum(count, 1.0)
        var = jnp.sum(w * (rows - mean) ** 2, axis=axes, keepdims=True) / jnp.maximum(count, 1.0)
        std = jnp.sqrt(var)
        few = count < 2
        shift = jnp.where(few, 0.0, mean)
        scale = jnp.where(few | (std < _MIN_STD), 1.0, std)
        shift = jnp.broadcast_to(shift[0], event)
        scale = jnp.broadcast_to(scale[0], event)
        if raw:
            # Positions of a GNN stay in data units (its radius and box are in those units).
            keep = jnp.arange(event[-1]) < raw
            shift = jnp.where(keep, 0.0, shift)
            scale = jnp.where(keep, 1.0, scale)
        return shift, scale

    def apply_embedding(emb_params, x_raw, shift, scale):
        z = (x_raw - shift) / scale
        if mask_zeros:
            # The mask comes from the raw event: standardization moves padding rows off zero.
            return module.apply(emb_params, z, mask=row_mask(x_raw))
        return module.apply(emb_params, z)

    def embed(params, x):
        x = jnp.asarray(x, jnp.float32)
        shift = frozen_value(params["x_shift"])
        scale = frozen_value(params["x_scale"])
        if x.shape != shift.shape:
            raise ValueError(
                f"Expected one x event of shape {_shape_str(shift.shape)} (the shape the {name} "
                f"embedding was initialised with); got {_shape_str(x.shape) if x.shape else '()'}"
            )
        return apply_embedding(params["embedding"], x, shift, scale)

    def init(key, y, context):
        y = jnp.asarray(y, jnp.float32)
        x = jnp.asarray(context, jnp.float32)
        if y.ndim == 2:  # the training set: x is (n, *event)
            if x.ndim < 2 or x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"Expected x of shape ({y.shape[0]}, *event) for theta of shape {y.shape}; "
                    f"got {x.shape}"
                )
            rows = x
        elif y.ndim == 1:  # one example event
            rows = x[None]
        else:
            raise ValueError(f"Expected theta of shape (dim,) or (n, dim); got {y.shape}")
        check_event_shape(module, rows.shape[1:])
        shift, scale = stats(rows)
        k_emb, k_est = jax.random.split(key)
        x0 = (rows[0] - shift) / scale
        emb_params = (module.init(k_emb, x0, mask=row_mask(rows[0])) if mask_zeros
                      else module.init(k_emb, x0))
        s = apply_embedding(emb_params, rows[0], shift, scale)
        if s.ndim != 1:
            raise ValueError(f"Expected the {name} embedding to return a vector; got shape "
                             f"{s.shape}")
        # A constant context: the inner standardization of the summaries is the identity. Why:
        # the context is the embedding's output, which moves during training, so statistics of
        # the initial embedding would be stale after a few steps. zscore_stats maps a zero
        # spread to 1, the statistics are Frozen (fit never moves them), and the scale of the
        # summaries is learned by the embedding itself, whose input is standardized. With
        # share_embedding the embedding is frozen when the heads train, so there the heads are
        # initialised with the real statistics of the summaries (inference._members).
        zeros = jnp.zeros((y.shape[0], s.shape[0]) if y.ndim == 2 else s.shape, jnp.float32)
        inner_params = inner.init(k_est, y, zeros)
        return {"x_shift": Frozen(shift), "x_scale": Frozen(scale), "embedding": emb_params,
                "estimator": inner_params}

    emb_spec = embedding_spec(module)
    spec = None
    if inner.spec is not None and emb_spec is not None:
        spec = {"name": "embedded",
                "config": {"estimator": inner.spec, "embedding": emb_spec,
                           "standardize": standardize, "share_embedding": share_embedding}}
    parts = EmbeddingParts(inner, module, mode, share_embedding, embed, stats)

    if is_classifier:
        def log_ratio(params, theta, x):
            return inner.log_ratio(params["estimator"], theta, embed(params, x))

        bundle = _EmbeddedClassifier(init, log_ratio, spec)
    else:
        def log_prob(params, y, context):
            return inner.log_prob(params["estimator"], y, embed(params, context))

        def sample(params, key, context):
            return inner.sample(params["estimator"], key, embed(params, context))

        bundle = _EmbeddedEstimator(init, log_prob, sample, spec)
    bundle.embedding_parts = parts
    return bundle
