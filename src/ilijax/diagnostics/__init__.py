"""Diagnostics and plots of trained posteriors."""

from ilijax.diagnostics.plots import plot_corner as plot_corner
from ilijax.diagnostics.plots import plot_losses as plot_losses

__all__ = ["plot_corner", "plot_losses"]
