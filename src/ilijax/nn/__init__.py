"""Networks (flax.linen) used by estimators and embeddings."""

from ilijax.nn.classifier import ClassifierMLP as ClassifierMLP
from ilijax.nn.classifier import ClassifierResNet as ClassifierResNet
from ilijax.nn.embeddings import CNN1D as CNN1D
from ilijax.nn.embeddings import CNN2D as CNN2D
from ilijax.nn.embeddings import EMBEDDINGS as EMBEDDINGS
from ilijax.nn.embeddings import FCN as FCN
from ilijax.nn.embeddings import GNN as GNN
from ilijax.nn.embeddings import DeepSet as DeepSet
from ilijax.nn.embeddings import build_embedding as build_embedding
from ilijax.nn.embeddings import embedding_spec as embedding_spec
from ilijax.nn.embeddings import radius_graph as radius_graph
from ilijax.nn.mlp import MLP as MLP

__all__ = [
    "CNN1D",
    "CNN2D",
    "EMBEDDINGS",
    "FCN",
    "GNN",
    "MLP",
    "ClassifierMLP",
    "ClassifierResNet",
    "DeepSet",
    "build_embedding",
    "embedding_spec",
    "radius_graph",
]
