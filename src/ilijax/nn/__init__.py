"""Networks (flax.linen) used by estimators and embeddings."""

from ilijax.nn.classifier import ClassifierMLP as ClassifierMLP
from ilijax.nn.classifier import ClassifierResNet as ClassifierResNet
from ilijax.nn.mlp import MLP as MLP

__all__ = ["MLP", "ClassifierMLP", "ClassifierResNet"]
