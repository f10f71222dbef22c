"""Plots people would rather look at than read: corner plots and loss curves.

Every function returns a matplotlib ``Figure`` and never shows or saves it; callers (the
pipeline, the CLI) decide where it goes. matplotlib is imported lazily with the non-interactive
``Agg`` backend when no backend was chosen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            matplotlib.use("Agg")
        except Exception:  # noqa: BLE001  a running GUI backend stays as it is
            pass
    import matplotlib.pyplot as plt

    return plt


def plot_corner(
    samples,
    *,
    truth=None,
    labels: Sequence[str] | None = None,
    reference=None,
    bins: int = 40,
    limits: Sequence[tuple[float, float]] | None = None,
    title: str | None = None,
):
    """A corner plot of posterior draws: 1-D histograms on the diagonal, 2-D below it.

    Args:
        samples: ``(n, d)`` draws.
        truth: Optional ``(d,)`` true parameters, drawn as lines.
        labels: Parameter names.
        reference: Optional ``(m, d)`` reference draws (e.g. the exact posterior), overlaid as
            contours/step histograms.
        bins: Histogram bins.
        limits: Optional per-parameter axis limits (e.g. the prior box).
        title: Figure title.

    Returns:
        A matplotlib Figure.
    """
    plt = _plt()
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"Expected samples of shape (n, d); got {s.shape}")
    d = s.shape[1]
    labels = list(labels) if labels is not None else [f"theta_{i}" for i in range(d)]
    ref = None if reference is None else np.asarray(reference, dtype=np.float64)
    if limits is None:
        both = s if ref is None else np.concatenate([s, ref])
        lo, hi = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
        pad = 0.05 * (hi - lo + 1e-12)
        limits = list(zip(lo - pad, hi + pad, strict=True))
    fig, axes = plt.subplots(d, d, figsize=(2.2 * d + 0.6, 2.2 * d + 0.4), squeeze=False)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                rng = limits[i]
                ax.hist(s[:, i], bins=bins, range=rng, density=True, color="C0", alpha=0.6)
                if ref is not None:
                    ax.hist(ref[:, i], bins=bins, range=rng, density=True, histtype="step",
                            color="k", lw=1.2)
                ax.set_yticks([])
                ax.set_xlim(rng)
            else:
                ax.hist2d(s[:, j], s[:, i], bins=bins, range=[limits[j], limits[i]],
                          cmap="Blues")
                if ref is not None:
                    h, xe, ye = np.histogram2d(ref[:, j], ref[:, i], bins=bins // 2,
                                               range=[limits[j], limits[i]])
                    ax.contour(0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]), h.T,
                               levels=3, colors="k", linewidths=0.8)
                if truth is not None:
                    ax.axhline(truth[i], color="C3", lw=1)
            if truth is not None:
                ax.axvline(truth[j], color="C3", lw=1)
            if i == d - 1:
                ax.set_xlabel(labels[j])
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i])
            elif j > 0:
                ax.set_yticklabels([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_losses(train_loss, validation_loss, *, title: str | None = None):
    """Training and validation loss per epoch, one line per ensemble member.

    Args:
        train_loss: ``(epochs, members)`` (NaN after a member stopped), e.g. ``FitInfo.train_loss``.
        validation_loss: Same shape, e.g. ``FitInfo.validation_loss``.
        title: Figure title.

    Returns:
        A matplotlib Figure.
    """
    plt = _plt()
    tl, vl = np.asarray(train_loss), np.asarray(validation_loss)
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, tl.shape[0] + 1)
    for k in range(tl.shape[1]):
        ax.plot(epochs, tl[:, k], color=f"C{k % 10}", alpha=0.5, lw=1)
        ax.plot(epochs, vl[:, k], color=f"C{k % 10}", lw=1.5, label=f"member {k}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (thin: training, thick: validation)")
    if tl.shape[1] <= 10:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
