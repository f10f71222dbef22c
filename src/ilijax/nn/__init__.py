"""Networks (flax.linen) used by estimators and embeddings."""

from ilijax.nn.mlp import MLP as MLP

__all__ = ["MLP"]
