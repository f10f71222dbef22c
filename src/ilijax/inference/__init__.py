"""Inference methods: one module per method, each returning ``(Posterior, FitInfo)``."""

from ilijax.inference._ensemble import ensemble_weights as ensemble_weights
from ilijax.inference._ensemble import stacking_weights as stacking_weights
from ilijax.inference.npe import npe as npe
from ilijax.inference.npe import npe_loss as npe_loss

__all__ = ["ensemble_weights", "npe", "npe_loss", "stacking_weights"]
