"""Conditional density estimators as ``Estimator(init, log_prob, sample, spec)`` bundles."""

from __future__ import annotations

import importlib

from ilijax.estimators._base import Estimator as Estimator
from ilijax.estimators._base import Frozen as Frozen
from ilijax.estimators._base import frozen_value as frozen_value
from ilijax.estimators._base import standardized as standardized
from ilijax.estimators._support import on_support as on_support
from ilijax.estimators.classifier import Classifier as Classifier
from ilijax.estimators.classifier import classifier as classifier
from ilijax.estimators.embedded import EmbeddingParts as EmbeddingParts
from ilijax.estimators.embedded import embedded as embedded
from ilijax.estimators.embedded import embedding_parts as embedding_parts
from ilijax.estimators.made import made as made
from ilijax.estimators.maf import maf as maf
from ilijax.estimators.mdn import mdn as mdn
from ilijax.estimators.nsf import nsf as nsf
from ilijax.estimators.realnvp import realnvp as realnvp

# name -> "module:factory"; resolved lazily so that build() works from a saved spec.
REGISTRY: dict[str, str] = {
    "mdn": "ilijax.estimators.mdn:mdn",
    "made": "ilijax.estimators.made:made",
    "maf": "ilijax.estimators.maf:maf",
    "nsf": "ilijax.estimators.nsf:nsf",
    "realnvp": "ilijax.estimators.realnvp:realnvp",
    "classifier": "ilijax.estimators.classifier:classifier",
    "embedded": "ilijax.estimators.embedded:embedded",
}


def build(spec: dict) -> Estimator:
    """Rebuilds an estimator bundle from its ``spec`` (``{"name": ..., "config": {...}}``)."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"Expected an estimator spec dict with a 'name'; got {spec!r}")
    if spec["name"] not in REGISTRY:
        raise ValueError(
            f"Unknown estimator {spec['name']!r}; expected one of {sorted(REGISTRY)}"
        )
    module, attr = REGISTRY[spec["name"]].split(":")
    return getattr(importlib.import_module(module), attr)(**spec.get("config", {}))


__all__ = [
    "REGISTRY",
    "Classifier",
    "EmbeddingParts",
    "Estimator",
    "Frozen",
    "build",
    "classifier",
    "embedded",
    "embedding_parts",
    "frozen_value",
    "made",
    "maf",
    "mdn",
    "nsf",
    "on_support",
    "realnvp",
    "standardized",
]
