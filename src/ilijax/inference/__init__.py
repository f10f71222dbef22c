"""Inference methods: one module per method, each returning ``(Posterior, FitInfo)``."""

from ilijax.inference._ensemble import ensemble_weights as ensemble_weights
from ilijax.inference._ensemble import stacking_weights as stacking_weights
from ilijax.inference.nle import nle as nle
from ilijax.inference.nle import nle_loss as nle_loss
from ilijax.inference.npe import npe as npe
from ilijax.inference.npe import npe_loss as npe_loss
from ilijax.inference.nre import nre as nre
from ilijax.inference.sequential import RoundInfo as RoundInfo
from ilijax.inference.sequential import apt_loss as apt_loss
from ilijax.inference.sequential import sequential as sequential

__all__ = ["RoundInfo", "apt_loss", "ensemble_weights", "nle", "nle_loss", "npe", "npe_loss",
           "nre", "sequential", "stacking_weights"]
