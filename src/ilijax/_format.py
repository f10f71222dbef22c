"""A posterior as a flat dict of arrays plus a versioned JSON spec, and back (no pickle).

The arrays are what :func:`ilijax.save` writes into one ``.npz`` file and what the sequential
checkpoints embed (``ilijax.inference.sequential``):

- ``__spec__``: UTF-8 JSON with the format name and version, the ilijax version, the method, the
  space (``"unconstrained"`` or ``"theta"``, where an NPE posterior's flows live; files written
  before the field existed are ``"unconstrained"``, which they all were), the prior
  (``ilijax.priors.prior_to_spec``), each group's estimator spec and member count, the
  mixture weights, dimensions (``theta_dim``, ``x_dim`` and ``x_shape``, the shape of one
  observation; files written before ``x_shape`` existed hold vectors of ``x_dim``) and labels;
- ``g{i}/{j}``: the j-th leaf (in ``jax.tree.flatten`` order) of group i's stacked params.

Reading rebuilds every estimator from its spec, derives the params tree structure with
``jax.eval_shape`` of its ``init``, checks every leaf's shape, and re-attaches the arrays. Nothing
depends on Python object layout, so files survive library upgrades that keep the spec format.
Standardisation statistics, now :class:`ilijax.estimators.Frozen` nodes, are single-child
nodes: the leaves and their order are those of format 1 before the statistics were frozen, so
those files load unchanged (their statistics as stored).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ilijax._version import __version__
from ilijax.estimators import build
from ilijax.posterior import METHODS, SPACES, Group, Posterior, member_bundle
from ilijax.priors import prior_from_spec, prior_to_spec, support_bijector

__all__ = ["FORMAT", "FORMAT_VERSION", "NotAPosteriorError", "posterior_from_arrays",
           "posterior_to_arrays"]

FORMAT = "ilijax.posterior"
FORMAT_VERSION = 1


class NotAPosteriorError(ValueError):
    """Arrays (or a file) that are not an ilijax posterior."""


def _not_ours(path: Any, why: str) -> NotAPosteriorError:
    return NotAPosteriorError(f"Expected an ilijax posterior file (an .npz written by "
                              f"ilijax.save); {path} is not one: {why}")


def posterior_to_arrays(posterior: Posterior) -> dict[str, np.ndarray]:
    """The arrays of ``posterior`` (see the module docstring), for ``np.savez``.

    Raises:
        ValueError: A group has no estimator spec (a hand-made bundle), or the prior has no
            JSON description (see :func:`ilijax.priors.prior_to_spec`).
    """
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
        "space": posterior.space,
        "prior": prior_to_spec(posterior.prior),
        "theta_dim": posterior.theta_dim,
        "x_dim": posterior.x_dim,
        "x_shape": list(posterior.x_shape),
        "groups": groups,
        "weights": np.asarray(posterior.weights, np.float64).tolist(),
        "labels": list(posterior.labels),
    }
    arrays["__spec__"] = np.frombuffer(json.dumps(spec).encode("utf-8"), dtype=np.uint8)
    return arrays


def posterior_from_arrays(files: Mapping[str, np.ndarray], *, prior=None,
                          source: Any = "the arrays") -> Posterior:
    """Inverse of :func:`posterior_to_arrays`.

    Args:
        files: The arrays (a dict, or an open ``np.load`` archive).
        prior: Use this prior instead of the stored one.
        source: What to name in error messages (the file).

    Raises:
        NotAPosteriorError: The arrays are not an ilijax posterior.
        ValueError: They come from a newer format version, or are incomplete.
    """
    path = source
    if "__spec__" not in files:
        shown = ", ".join(sorted(files)[:5]) + (" ..." if len(files) > 5 else "")
        raise _not_ours(path, f"it has no '__spec__' entry (entries: {shown or 'none'})")
    try:
        spec = json.loads(files["__spec__"].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _not_ours(path, f"its '__spec__' entry is not JSON ({e})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        got = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise _not_ours(path, f"expected format {FORMAT!r}, got {got!r}")
    version = spec.get("version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"Expected format version <= {FORMAT_VERSION}; got {version!r} in {path} (written "
            f"by ilijax {spec.get('ilijax_version')}, newer than this ilijax "
            f"{__version__}): upgrade ilijax to read it"
        )
    missing = [k for k in ("method", "prior", "theta_dim", "groups", "weights", "labels")
               if k not in spec]
    if missing:
        raise _not_ours(path, f"its spec lacks {missing}")
    if spec["method"] not in METHODS:
        raise ValueError(f"Expected method in {METHODS}; got {spec['method']!r} in {path}")
    # Files from before theta-space NPE have no "space": they are all unconstrained.
    space = spec.get("space", "unconstrained")
    if space not in SPACES:
        raise ValueError(f"Expected space in {SPACES}; got {space!r} in {path}")
    prior = prior if prior is not None else prior_from_spec(spec["prior"])
    bijector = support_bijector(prior)
    theta0 = jnp.zeros(spec["theta_dim"], jnp.float32)
    x_shape = tuple(spec.get("x_shape") or (spec["x_dim"],))
    x0 = jnp.zeros(x_shape, jnp.float32)
    groups = []
    for i, g in enumerate(spec["groups"]):
        core = build(g["estimator"])
        est = member_bundle(spec["method"], core, prior, space=space)
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
            if f"g{i}/{j}" not in files:
                raise ValueError(f"Expected array g{i}/{j} in {path}; the file is incomplete")
            a = files[f"g{i}/{j}"]
            if a.shape != shape.shape:
                raise ValueError(
                    f"Expected array g{i}/{j} of shape {shape.shape}; got {a.shape} in {path}"
                )
            arrays.append(jnp.asarray(a, dtype=shape.dtype))
        groups.append(Group(est, jax.tree.unflatten(treedef, arrays), g["estimator"]))
    return Posterior(groups, spec["weights"], prior, x_shape=x_shape, method=spec["method"],
                     labels=spec["labels"], space=space)
