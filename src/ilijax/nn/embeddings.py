"""Embedding networks: raw data ``x`` of any shape -> a summary vector (flax.linen).

An embedding compresses one observation (a long vector, a spectrum, a map, a point cloud) into a
vector of ``out_features`` summaries that a conditional density estimator (or an NRE classifier)
takes as its context. :func:`ilijax.estimators.embedded` trains it jointly with the estimator.

Every module here acts on **one event** (no batch axis), like the rest of ilijax: batch with
``jax.vmap``. Each class declares the event ranks it accepts in ``event_ranks`` (``None``: any
rank, flattened), so that the estimator wrapper can check an event shape and tell one
observation from a batch:

============  ======================  =================================================
class         event shape             summary
============  ======================  =================================================
``FCN``       any (flattened)         dense layers (ltu-ili's ``FCN``)
``CNN1D``     ``(L,)`` or ``(L, C)``  1-D convolutions + pooling, dense head
``CNN2D``     ``(H, W)``/``(H, W, C)`` 2-D convolutions + pooling, dense head
``DeepSet``   ``(N, F)``              per-point MLP, symmetric pooling, MLP (DeepSets)
``GNN``       ``(N, F)``              message passing on a radius graph of the points
============  ======================  =================================================

Configuration is plain data (ints, floats, strings, lists), and activations are given by name,
so an embedding is described by a JSON spec ``{"name": "cnn1d", "config": {...}}``
(:func:`embedding_spec`) and rebuilt by :func:`build_embedding`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = [
    "CNN1D",
    "CNN2D",
    "EMBEDDINGS",
    "FCN",
    "GNN",
    "DeepSet",
    "build_embedding",
    "check_event_shape",
    "embedding_spec",
    "radius_graph",
]

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "silu": nn.silu,
    "gelu": nn.gelu,
    "elu": nn.elu,
    "selu": nn.selu,
    "leakyrelu": nn.leaky_relu,
    "sigmoid": nn.sigmoid,
}

_POOLINGS = ("mean", "sum", "max")


def _activation(name: str) -> Callable[[Array], Array]:
    """An activation by name, case- and underscore-insensitive, so that ltu-ili's torch class
    names (``"SiLU"``, ``"ReLU"``, ``"LeakyReLU"``) work as they are."""
    key = str(name).lower().replace("_", "")
    if key not in _ACTIVATIONS:
        raise ValueError(f"Expected activation in {sorted(_ACTIVATIONS)}; got {name!r}")
    return _ACTIVATIONS[key]


def _tuples(module: nn.Module, *names: str) -> None:
    """Stores list attributes as tuples (before flax freezes the module), so that a module built
    from a JSON spec equals, and hashes like, the one it was written from."""
    for name in names:
        v = getattr(module, name)
        if isinstance(v, list):
            object.__setattr__(module, name, tuple(v))


def _check_widths(cls: str, name: str, value: Any, *, allow_empty: bool = False) -> None:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok or (not allow_empty and len(value) == 0):
        empty = "" if allow_empty else "non-empty "
        raise ValueError(f"{cls}: expected {name} to be a {empty}list of positive ints; got "
                         f"{value!r}")


def _check_int(cls: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{cls}: expected {name} to be a positive int; got {value!r}")


def _per_layer(cls: str, name: str, value: Any, num_layers: int) -> tuple[int, ...]:
    """An int for every layer, from one int or a list of ``num_layers`` ints."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        values = (int(value),) * num_layers
    elif isinstance(value, Sequence) and not isinstance(value, str):
        values = tuple(value)
    else:
        values = ()
    if len(values) != num_layers or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1
            for v in values):
        raise ValueError(f"{cls}: expected {name} to be a positive int or a list of "
                         f"{num_layers} positive ints (one per layer); got {value!r}")
    return tuple(int(v) for v in values)


def _check_choice(cls: str, name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{cls}: expected {name} in {tuple(choices)}; got {value!r}")


def _dense_stack(h: Array, widths: Sequence[int], act, *, last_activation: bool) -> Array:
    for i, width in enumerate(widths):
        h = nn.Dense(int(width))(h)
        if last_activation or i < len(widths) - 1:
            h = act(h)
    return h


def _pool(h: Array, mask: Array | None, pooling: str) -> Array:
    """Symmetric pooling of ``h (N, H)`` over the valid rows (``mask (N,)``; all if ``None``).

    Every variant is invariant to the order of the rows. With no valid row, the result is 0.
    """
    if mask is None:
        mask = jnp.ones(h.shape[0], bool)
    m = mask[:, None]
    if pooling == "max":
        out = jnp.max(jnp.where(m, h, -jnp.inf), axis=0)
        return jnp.where(jnp.any(mask), out, 0.0)
    total = jnp.sum(jnp.where(m, h, 0.0), axis=0)
    if pooling == "sum":
        return total
    return total / jnp.maximum(jnp.sum(mask), 1).astype(h.dtype)


def _row_mask(x: Array, mask: Array | None, mask_zeros: bool) -> Array | None:
    if mask is not None:
        return jnp.asarray(mask, bool)
    if mask_zeros:
        return jnp.any(x != 0, axis=-1)
    return None


class FCN(nn.Module):
    """A fully connected embedding: dense layers with an activation after all but the last.

    The event is flattened first (any shape), so ``FCN`` is ltu-ili's ``FCN(n_hidden, act_fn)``
    (whose activation after the last layer is removed) for one event. The output has
    ``n_hidden[-1]`` features.

    Attributes:
        n_hidden: Widths of the layers; the last is the number of summaries.
        act_fn: Activation name (``"silu"``, ``"relu"``, ...; torch names like ``"SiLU"`` work).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> net = FCN(n_hidden=(16, 4))
        >>> params = net.init(jax.random.key(0), jnp.zeros((8, 8)))
        >>> net.apply(params, jnp.zeros((8, 8))).shape
        (4,)
    """

    n_hidden: Sequence[int] = (64, 64)
    act_fn: str = "silu"

    event_ranks: ClassVar[tuple[int, ...] | None] = None
    standardize: ClassVar[str] = "elementwise"

    def __post_init__(self):
        _tuples(self, "n_hidden")
        _check_widths("FCN", "n_hidden", self.n_hidden)
        _activation(self.act_fn)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Maps one event of any shape to ``(n_hidden[-1],)``."""
        return _dense_stack(jnp.reshape(x, (-1,)), self.n_hidden, _activation(self.act_fn),
                            last_activation=False)


class _ConvEmbedding(nn.Module):
    """Shared body of :class:`CNN1D` and :class:`CNN2D`."""

    out_features: int = 32
    channels: Sequence[int] = (16, 32)
    kernel_size: int | Sequence[int] = 3
    stride: int | Sequence[int] = 1
    pool: str = "max"
    pool_size: int = 2
    hidden: Sequence[int] = (64,)
    act_fn: str = "silu"

    spatial: ClassVar[int] = 1

    def __post_init__(self):
        cls = type(self).__name__
        _tuples(self, "channels", "kernel_size", "stride", "hidden")
        _check_int(cls, "out_features", self.out_features)
        _check_widths(cls, "channels", self.channels)
        _per_layer(cls, "kernel_size", self.kernel_size, len(self.channels))
        _per_layer(cls, "stride", self.stride, len(self.channels))
        _check_choice(cls, "pool", self.pool, ("max", "avg", "none"))
        _check_int(cls, "pool_size", self.pool_size)
        _check_widths(cls, "hidden", self.hidden, allow_empty=True)
        _activation(self.act_fn)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Maps one event (channels last, a channel axis added if missing) to
        ``(out_features,)``."""
        check_event_shape(self, x.shape)
        act = _activation(self.act_fn)
        d = self.spatial
        h = x[..., None] if x.ndim == d else x
        h = h[None]  # flax convolutions and pools take a leading batch axis
        kernels = _per_layer("", "kernel_size", self.kernel_size, len(self.channels))
        strides = _per_layer("", "stride", self.stride, len(self.channels))
        for width, k, s in zip(self.channels, kernels, strides, strict=True):
            h = act(nn.Conv(int(width), (k,) * d, strides=(s,) * d, padding="SAME")(h))
            # Pool only while every spatial axis is at least one window long (static shapes).
            if self.pool != "none" and min(h.shape[1:-1]) >= self.pool_size:
                window = (self.pool_size,) * d
                pool = nn.max_pool if self.pool == "max" else nn.avg_pool
                h = pool(h, window, strides=window)
        h = h.reshape(-1)
        h = _dense_stack(h, self.hidden, act, last_activation=True)
        return nn.Dense(int(self.out_features))(h)


class CNN1D(_ConvEmbedding):
    """A 1-D convolutional embedding for spectra, light curves or strain series.

    ``len(channels)`` blocks of ``Conv(kernel_size, stride, 'SAME') -> activation -> pool``
    (``pool`` ``"max"``/``"avg"`` with window and stride ``pool_size``; skipped once the series
    is shorter than a window), then the feature map is flattened and a dense head (``hidden``
    layers with activations, then a linear layer) gives ``out_features`` summaries.

    Attributes:
        out_features: Number of summaries.
        channels: Output channels of each convolution.
        kernel_size: Kernel length, one for all layers or one per layer.
        stride: Convolution stride, one for all layers or one per layer.
        pool: ``"max"``, ``"avg"`` or ``"none"``.
        pool_size: Pooling window and stride.
        hidden: Widths of the dense layers between the convolutions and the output.
        act_fn: Activation name.

    Event shape: ``(L,)`` (one channel) or ``(L, C)`` (channels last).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> net = CNN1D(out_features=5, channels=(4,), hidden=())
        >>> params = net.init(jax.random.key(0), jnp.zeros(32))
        >>> net.apply(params, jnp.zeros(32)).shape
        (5,)

    References:
        LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied to document
        recognition", Proc. IEEE 1998.
    """

    event_ranks: ClassVar[tuple[int, ...] | None] = (1, 2)
    standardize: ClassVar[str] = "elementwise"
    spatial: ClassVar[int] = 1


class CNN2D(_ConvEmbedding):
    """A 2-D convolutional embedding for maps and images (square kernels and pools).

    As :class:`CNN1D` with 2-D convolutions: ``len(channels)`` blocks of
    ``Conv(kernel_size x kernel_size, stride) -> activation -> pool`` and a dense head.

    Attributes:
        out_features: Number of summaries.
        channels: Output channels of each convolution.
        kernel_size: Kernel side, one for all layers or one per layer.
        stride: Convolution stride, one for all layers or one per layer.
        pool: ``"max"``, ``"avg"`` or ``"none"``.
        pool_size: Pooling window side and stride.
        hidden: Widths of the dense layers between the convolutions and the output.
        act_fn: Activation name.

    Event shape: ``(H, W)`` (one channel) or ``(H, W, C)`` (channels last).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> net = CNN2D(out_features=3, channels=(4, 8), hidden=(16,))
        >>> params = net.init(jax.random.key(0), jnp.zeros((16, 16)))
        >>> net.apply(params, jnp.zeros((16, 16))).shape
        (3,)
    """

    event_ranks: ClassVar[tuple[int, ...] | None] = (2, 3)
    standardize: ClassVar[str] = "elementwise"
    spatial: ClassVar[int] = 2


class DeepSet(nn.Module):
    """A permutation-invariant embedding of a set of points (DeepSets / PointNet style).

    ``out = rho(pool_i phi(x_i))``: ``phi`` is an MLP applied to every point (row) with shared
    weights (activations after every layer), ``pool`` is the ``mean``, ``sum`` or ``max`` over
    the points (PointNet uses ``max``), and ``rho`` is an MLP with a linear last layer. The
    output does not depend on the order of the rows.

    Padding: with ``mask_zeros=True``, rows that are all zero are padding and are left out of
    the pooling (sets of different sizes padded to one array). A mask may also be passed
    explicitly as ``mask (N,)`` (True for real points).

    Attributes:
        out_features: Number of summaries.
        phi: Widths of the per-point MLP.
        rho: Widths of the hidden layers after pooling.
        pooling: ``"mean"``, ``"sum"`` or ``"max"``.
        act_fn: Activation name.
        mask_zeros: Treat all-zero rows as padding.

    Event shape: ``(N, F)``, ``N`` points with ``F`` features each.

    References:
        Zaheer, Kottur, Ravanbakhsh, Poczos, Salakhutdinov and Smola, "Deep Sets", NeurIPS 2017.
        Qi, Su, Mo and Guibas, "PointNet: Deep Learning on Point Sets for 3D Classification and
        Segmentation", CVPR 2017.
    """

    out_features: int = 32
    phi: Sequence[int] = (64, 64)
    rho: Sequence[int] = (64,)
    pooling: str = "mean"
    act_fn: str = "silu"
    mask_zeros: bool = False

    event_ranks: ClassVar[tuple[int, ...] | None] = (2,)
    standardize: ClassVar[str] = "feature"

    def __post_init__(self):
        _tuples(self, "phi", "rho")
        _check_int("DeepSet", "out_features", self.out_features)
        _check_widths("DeepSet", "phi", self.phi)
        _check_widths("DeepSet", "rho", self.rho, allow_empty=True)
        _check_choice("DeepSet", "pooling", self.pooling, _POOLINGS)
        _activation(self.act_fn)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        """Maps one set ``(N, F)`` (and an optional ``(N,)`` mask) to ``(out_features,)``."""
        check_event_shape(self, x.shape)
        act = _activation(self.act_fn)
        mask = _row_mask(x, mask, self.mask_zeros)
        h = _dense_stack(x, self.phi, act, last_activation=True)  # Dense acts on the last axis
        h = _pool(h, mask, self.pooling)
        h = _dense_stack(h, self.rho, act, last_activation=True)
        return nn.Dense(int(self.out_features))(h)


def _pair_distances(pos: Array, box_size: float | None) -> Array:
    """``(N, N)`` Euclidean distances; minimum-image convention in a periodic box."""
    diff = pos[:, None, :] - pos[None, :, :]
    if box_size is not None:
        diff = diff - box_size * jnp.round(diff / box_size)
    r2 = jnp.sum(diff**2, axis=-1)
    # sqrt has an infinite derivative at 0 (the diagonal); evaluate it away from 0.
    positive = r2 > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, r2, 1.0)), 0.0)


def radius_graph(
    pos: Array, radius: float, *, box_size: float | None = None, mask: Array | None = None
) -> Array:
    """The dense adjacency of the radius graph of a point set.

    ``A[i, j]`` is True when ``|p_i - p_j| < radius`` and ``i != j`` (no self loops), and both
    points are valid (``mask``). With ``box_size``, distances use the minimum-image convention
    of a periodic cube of that side (simulation boxes).

    Args:
        pos: ``(N, D)`` positions.
        radius: Connection radius, in the units of ``pos``.
        box_size: Side of the periodic box, or ``None`` for open boundaries.
        mask: Optional ``(N,)`` booleans, True for real points.

    Returns:
        ``(N, N)`` boolean adjacency, symmetric.
    """
    n = pos.shape[0]
    adj = (_pair_distances(pos, box_size) < radius) & ~jnp.eye(n, dtype=bool)
    if mask is not None:
        adj = adj & mask[:, None] & mask[None, :]
    return adj


class GNN(nn.Module):
    """A message-passing network over the radius graph of a point cloud.

    The first ``pos_dims`` features of each point are its position ``p_i``; the rest are its
    node features ``f_i`` (a learned constant if there are none). The graph joins points closer
    than ``radius`` (:func:`radius_graph`, built inside the network, dense ``N x N``). With
    ``h_i = Dense(f_i)``, each of ``layers`` rounds computes

        m_ij = MLP_e(h_i, h_j, |p_i - p_j|)            (edge messages)
        h_i <- h_i + MLP_v(h_i, sum_j A_ij m_ij)        (sum aggregation, residual update)

    and the output is ``MLP_out(pool_i h_i)`` (``mean``/``sum``/``max`` over the valid points).
    Positions enter only through distances, so with ``position_features=False`` (default) the
    output is invariant to translations and rotations of the points and to their order.
    ``position_features=True`` also feeds the raw positions into the node features.

    Positions are never standardized by :func:`ilijax.estimators.embedded`, so ``radius`` and
    ``box_size`` are in the units of the data.

    Cost: the adjacency and the edge messages are dense, ``O(N^2 hidden)`` memory and time per
    layer and event. That suits clouds of up to a few thousand points (``N = 2000``,
    ``hidden = 32``: about 0.5 GB per layer per event in float32); larger ones need a sparse
    neighbour list.

    Attributes:
        out_features: Number of summaries.
        radius: Connection radius (data units).
        pos_dims: Number of leading features that are positions.
        hidden: Width of node states and messages.
        layers: Message-passing rounds.
        readout: Widths of the hidden layers after pooling.
        pooling: ``"mean"``, ``"sum"`` or ``"max"`` over points.
        act_fn: Activation name.
        box_size: Periodic box side (minimum-image distances), or ``None``.
        mask_zeros: Treat all-zero rows as padding (no edges, not pooled).
        position_features: Also use the positions as node features (breaks translation
            invariance).

    Event shape: ``(N, F)`` with ``F >= pos_dims``.

    References:
        Gilmer, Schoenholz, Riley, Vinyals and Dahl, "Neural Message Passing for Quantum
        Chemistry", ICML 2017.
        Battaglia et al., "Relational inductive biases, deep learning, and graph networks",
        arXiv:1806.01261, 2018.
    """

    out_features: int = 32
    radius: float = 0.1
    pos_dims: int = 3
    hidden: int = 32
    layers: int = 2
    readout: Sequence[int] = (64,)
    pooling: str = "mean"
    act_fn: str = "silu"
    box_size: float | None = None
    mask_zeros: bool = False
    position_features: bool = False

    event_ranks: ClassVar[tuple[int, ...] | None] = (2,)
    standardize: ClassVar[str] = "feature"

    def __post_init__(self):
        _tuples(self, "readout")
        _check_int("GNN", "out_features", self.out_features)
        _check_int("GNN", "pos_dims", self.pos_dims)
        _check_int("GNN", "hidden", self.hidden)
        _check_int("GNN", "layers", self.layers)
        _check_widths("GNN", "readout", self.readout, allow_empty=True)
        _check_choice("GNN", "pooling", self.pooling, _POOLINGS)
        _activation(self.act_fn)
        for name in ("radius", "box_size"):
            v = getattr(self, name)
            if name == "box_size" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise ValueError(f"GNN: expected {name} to be a number > 0; got {v!r}")
        super().__post_init__()

    @property
    def raw_features(self) -> int:
        """Leading features that standardization leaves alone (the positions)."""
        return int(self.pos_dims)

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        """Maps one point cloud ``(N, F)`` (and an optional ``(N,)`` mask) to
        ``(out_features,)``."""
        check_event_shape(self, x.shape)
        act = _activation(self.act_fn)
        mask = _row_mask(x, mask, self.mask_zeros)
        pos = x[:, : self.pos_dims]
        feats = x if self.position_features else x[:, self.pos_dims:]
        if feats.shape[1] == 0:
            feats = jnp.ones((x.shape[0], 1), x.dtype)
        box = None if self.box_size is None else float(self.box_size)
        dist = _pair_distances(pos, box)
        adj = radius_graph(pos, float(self.radius), box_size=box, mask=mask)
        adj = adj.astype(x.dtype)
        width = int(self.hidden)
        h = nn.Dense(width)(feats)
        for _ in range(int(self.layers)):
            # First edge layer on concat(h_i, h_j, d_ij), split so that the (N, N, H) tensor is
            # one broadcast sum: W [h_i; h_j; d] = W_i h_i + W_j h_j + w_d d.
            pre = (nn.Dense(width)(h)[:, None, :]
                   + nn.Dense(width, use_bias=False)(h)[None, :, :]
                   + nn.Dense(width, use_bias=False)(dist[..., None]))
            msg = act(nn.Dense(width)(act(pre)))  # (N, N, H)
            agg = jnp.einsum("ij,ijh->ih", adj, msg)
            h = h + nn.Dense(width)(act(nn.Dense(width)(jnp.concatenate([h, agg], axis=-1))))
        g = _pool(h, mask, self.pooling)
        g = _dense_stack(g, self.readout, act, last_activation=True)
        return nn.Dense(int(self.out_features))(g)


#: Embedding classes by spec name.
EMBEDDINGS: dict[str, type[nn.Module]] = {
    "fcn": FCN,
    "cnn1d": CNN1D,
    "cnn2d": CNN2D,
    "deepset": DeepSet,
    "gnn": GNN,
}


def _shape_str(shape: Sequence[int]) -> str:
    shape = tuple(int(s) for s in shape)
    return f"({shape[0]},)" if len(shape) == 1 else str(shape)


_RANK_NAMES = {
    "CNN1D": "(L,) or (L, C)",
    "CNN2D": "(H, W) or (H, W, C)",
    "DeepSet": "(N, F)",
    "GNN": "(N, F) with F >= pos_dims",
}


def check_event_shape(module: nn.Module, shape: Sequence[int]) -> None:
    """Raises ``ValueError`` unless ``shape`` is an event shape ``module`` accepts.

    Args:
        module: An embedding (anything with an ``event_ranks`` attribute; others pass).
        shape: The shape of one event.
    """
    shape = tuple(int(s) for s in shape)
    ranks = getattr(module, "event_ranks", None)
    name = type(module).__name__
    ok = ranks is None or len(shape) in ranks
    if ok and isinstance(module, GNN):
        ok = shape[-1] >= module.pos_dims
    if ok and ranks is not None:
        ok = all(s >= 1 for s in shape)
    if not ok:
        expected = _RANK_NAMES.get(name, f"rank in {ranks}")
        raise ValueError(
            f"Expected one x event of shape {expected} for the {name} embedding; got x event "
            f"shape {_shape_str(shape) if shape else '()'}"
        )


def embedding_spec(module: nn.Module) -> dict | None:
    """The JSON spec ``{"name": ..., "config": {...}}`` of an embedding of :data:`EMBEDDINGS`,
    or ``None`` for other modules (they train, but cannot be saved)."""
    name = next((k for k, cls in EMBEDDINGS.items() if type(module) is cls), None)
    if name is None:
        return None
    config = {}
    for f in dataclasses.fields(module):
        if f.name in ("parent", "name"):
            continue
        v = getattr(module, f.name)
        if isinstance(v, tuple | list):
            v = [int(a) for a in v]
        elif isinstance(v, np.integer):
            v = int(v)
        elif isinstance(v, np.floating):
            v = float(v)
        config[f.name] = v
    return {"name": name, "config": config}


def build_embedding(spec: dict | nn.Module) -> nn.Module:
    """An embedding from its spec (``{"name": "cnn2d", "config": {...}}``); modules pass through.

    Lists in the config become tuples (flax module attributes are hashed).
    """
    if isinstance(spec, nn.Module):
        return spec
    if not isinstance(spec, dict) or spec.get("name") not in EMBEDDINGS:
        got = spec.get("name") if isinstance(spec, dict) else spec
        raise ValueError(f"Expected an embedding spec with name in {sorted(EMBEDDINGS)}; got "
                         f"{got!r}")
    cls = EMBEDDINGS[spec["name"]]
    config = dict(spec.get("config") or {})
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} option(s) {unknown}; expected some of "
                         f"{sorted(fields)}")
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return cls(**config)
