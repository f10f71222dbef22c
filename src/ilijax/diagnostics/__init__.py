"""Diagnostics and plots of trained posteriors."""

from ilijax.diagnostics.c2st import C2STResult as C2STResult
from ilijax.diagnostics.c2st import c2st as c2st
from ilijax.diagnostics.plots import plot_corner as plot_corner
from ilijax.diagnostics.plots import plot_losses as plot_losses

__all__ = ["C2STResult", "c2st", "plot_corner", "plot_losses"]
