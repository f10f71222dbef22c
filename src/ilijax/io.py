"""Save and load trained posteriors: arrays plus a versioned JSON spec, no pickle.

A saved posterior is one ``.npz`` file (loaded with ``allow_pickle=False``) holding

- ``__spec__``: UTF-8 JSON with the format name and version, the ilijax version, the method, the
  prior (``ilijax.priors.prior_to_spec``), each group's estimator spec and member count, the
  mixture weights, dimensions (``theta_dim``, ``x_dim`` and ``x_shape``, the shape of one
  observation; files written before ``x_shape`` existed hold vectors of ``x_dim``) and labels;
- ``g{i}/{j}``: the j-th leaf (in ``jax.tree.flatten`` order) of group i's stacked params.

Loading rebuilds every estimator from its spec, derives the params tree structure with
``jax.eval_shape`` of its ``init``, checks every leaf's shape, and re-attaches the arrays. Nothing
depends on Python object layout, so files survive library upgrades that keep the spec format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ilijax._files import atomic_write
from ilijax._version import __version__
from ilijax.estimators import build
from ilijax.posterior import METHODS, Group, Posterior, member_bundle
from ilijax.priors import prior_from_spec, prior_to_spec, support_bijector

__all__ = ["FORMAT", "FORMAT_VERSION", "load", "save"]

FORMAT = "ilijax.posterior"
FORMAT_VERSION = 1


def save(posterior: Posterior, path: str | os.PathLike) -> Path:
    """Writes ``posterior`` to ``path`` (an ``.npz`` file), atomically.

    Args:
        posterior: A :class:`~ilijax.posterior.Posterior` whose groups have estimator specs
            (every factory in ``ilijax.estimators`` sets one).
        path: Target file; ``.npz`` is appended if missing. Parent folders are created.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    groups, arrays = [], {}
    for i, g in enumerate(posterior.groups):
        if g.spec is None:
            raise ValueError(
                f"Expected every group to have an estimator spec; group {i} has none (built by "
                f"hand?). Use a factory from ilijax.estimators"
            )
        leaves = jax.tree.leaves(g.params)
        for j, leaf in enumerate(leaves):
            arrays[f"g{i}/{j}"] = np.asarray(leaf)
        groups.append({"estimator": g.spec, "members": int(leaves[0].shape[0]),
                       "num_leaves": len(leaves)})
    spec = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "ilijax_version": __version__,
        "method": posterior.method,
        "prior": prior_to_spec(posterior.prior),
        "theta_dim": posterior.theta_dim,
        "x_dim": posterior.x_dim,
        "x_shape": list(posterior.x_shape),
        "groups": groups,
        "weights": posterior.weights.tolist(),
        "labels": list(posterior.labels),
    }
    arrays["__spec__"] = np.frombuffer(json.dumps(spec).encode("utf-8"), dtype=np.uint8)
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)

    return atomic_write(path, write)


def load(path: str | os.PathLike, *, prior=None) -> Posterior:
    """Reads a posterior written by :func:`save`.

    Args:
        path: The ``.npz`` file.
        prior: Use this prior instead of the stored one (needed only for priors that
            ``prior_to_spec`` cannot describe; it must have the same support).

    Returns:
        A :class:`~ilijax.posterior.Posterior` giving identical ``log_prob`` and, for the same
        key, identical samples.
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as f:
        files = {k: f[k] for k in f.files}
    if "__spec__" not in files:
        raise ValueError(f"Expected an ilijax posterior file with a '__spec__' entry; got {path}")
    spec = json.loads(files["__spec__"].tobytes().decode("utf-8"))
    if spec.get("format") != FORMAT:
        raise ValueError(f"Expected format {FORMAT!r}; got {spec.get('format')!r} in {path}")
    if spec.get("version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"Expected format version <= {FORMAT_VERSION}; got {spec['version']} (written by "
            f"ilijax {spec.get('ilijax_version')}); upgrade ilijax"
        )
    if spec["method"] not in METHODS:
        raise ValueError(f"Expected method in {METHODS}; got {spec['method']!r} in {path}")
    prior = prior if prior is not None else prior_from_spec(spec["prior"])
    bijector = support_bijector(prior)
    theta0 = jnp.zeros(spec["theta_dim"], jnp.float32)
    x_shape = tuple(spec.get("x_shape") or (spec["x_dim"],))
    x0 = jnp.zeros(x_shape, jnp.float32)
    groups = []
    for i, g in enumerate(spec["groups"]):
        core = build(g["estimator"])
        est = member_bundle(spec["method"], core, prior)
        shapes = jax.eval_shape(
            jax.vmap(est.init, in_axes=(0, None, None)),
            jax.random.split(jax.random.key(0), g["members"]), bijector(theta0), x0,
        )
        leaves, treedef = jax.tree.flatten(shapes)
        if len(leaves) != g["num_leaves"]:
            raise ValueError(
                f"Expected {len(leaves)} arrays for group {i} ({g['estimator']['name']}); the file "
                f"has {g['num_leaves']}. It was written by a different estimator version"
            )
        arrays = []
        for j, shape in enumerate(leaves):
            a = files[f"g{i}/{j}"]
            if a.shape != shape.shape:
                raise ValueError(
                    f"Expected array g{i}/{j} of shape {shape.shape}; got {a.shape} in {path}"
                )
            arrays.append(jnp.asarray(a, dtype=shape.dtype))
        groups.append(Group(est, jax.tree.unflatten(treedef, arrays), g["estimator"]))
    return Posterior(groups, spec["weights"], prior, x_shape=x_shape, method=spec["method"],
                     labels=spec["labels"])
