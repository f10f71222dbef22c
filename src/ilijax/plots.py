"""Plots of trained posteriors and of their diagnostics.

One function per picture: :func:`plot_corner` (posterior draws, one or several overlaid),
:func:`plot_losses` (training curves), and one per result type of
:mod:`ilijax.diagnostics.results`: :func:`plot_coverage` (HPD expected coverage, optionally with
the SBC rank ECDFs), :func:`plot_ranks` (SBC rank histograms), :func:`plot_tarp`,
:func:`plot_predictions` (posterior mean against truth), :func:`plot_log_prob` and
:func:`plot_predictive` (posterior predictive check).

Every function takes numpy-convertible inputs (jax arrays work), checks their shapes (a
``ValueError`` names the argument, the expected and the actual shape; a ``TypeError`` says when
a result lacks a field), and returns a matplotlib ``Figure`` that it never shows. With
``save=path`` the figure is also written as a PNG through :func:`save_figure`, atomically:
readers never see a half-written file. matplotlib is imported
lazily and set to the non-interactive ``Agg`` backend when no backend was chosen, so plotting
works on headless machines; a backend chosen by the user (``MPLBACKEND``, ``matplotlib.use``, a
notebook) is left alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ilijax._files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ilijax.diagnostics.results import (
        CoverageResult,
        LogProbResult,
        PredictionsResult,
        PredictiveResult,
        SBCResult,
        TARPResult,
    )

__all__ = [
    "plot_corner",
    "plot_coverage",
    "plot_log_prob",
    "plot_losses",
    "plot_predictions",
    "plot_predictive",
    "plot_ranks",
    "plot_tarp",
    "save_figure",
]

PathLike = str | os.PathLike

# Posterior colours of overlaid plots: the default cycle without red (the truth) and grey.
_COLORS = ("C0", "C1", "C2", "C4", "C5", "C6", "C8", "C9")
_TRUTH_COLOR = "C3"
_LEVEL_STYLES = ("-", "--", ":", "-.")
_Z95 = 1.959963984540054
_Z99 = 2.5758293035489004


# ---------------------------------------------------------------------------------------------
# helpers


def _plt():
    """``matplotlib.pyplot``, after choosing ``Agg`` if no backend was chosen yet."""
    import matplotlib

    get = getattr(matplotlib.rcParams, "_get_backend_or_none", None)
    if get is not None and get() is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: PathLike, dpi: int = 120) -> Path:
    """Writes ``fig`` as a PNG to ``path`` atomically.

    The image goes to a temporary file in the same directory first, which then replaces
    ``path`` with :func:`os.replace`; a reader (or a crash half-way) never sees a partial file.
    Missing parent directories are created. The format is PNG whatever the suffix of ``path``.

    Args:
        fig: The matplotlib Figure.
        path: Where to write it.
        dpi: Resolution in dots per inch.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def _finish(fig: Figure, save: PathLike | None) -> Figure:
    fig.tight_layout()
    if save is not None:
        save_figure(fig, save)
    return fig


def _as_float(value: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{name}: expected a numeric array, got {type(value).__name__} ({e})"
        ) from None


def _check_shape(a: np.ndarray, name: str, dims: Sequence[tuple[str, int | None]]) -> np.ndarray:
    """Raises unless ``a.shape`` matches ``dims``: (symbol, size or None for any size) per axis."""
    ok = a.ndim == len(dims) and all(
        v is None or v == s for (_, v), s in zip(dims, a.shape, strict=True)
    )
    if not ok:
        want = ", ".join(sym if v is None else f"{sym}={v}" for sym, v in dims)
        want = f"({want},)" if len(dims) == 1 else f"({want})"
        raise ValueError(f"{name}: expected shape {want}, got {a.shape}")
    return a


def _field(result: Any, name: str, field: str) -> Any:
    try:
        return getattr(result, field)
    except AttributeError:
        raise TypeError(
            f"{name}: expected a result with a {field!r} field, got {type(result).__name__}"
        ) from None


def _scalar(result: Any, name: str, field: str) -> float:
    value = np.asarray(_field(result, name, field), dtype=np.float64)
    if value.size != 1:
        raise ValueError(f"{name}.{field}: expected a scalar, got shape {value.shape}")
    return float(value.reshape(()))


def _labels(labels: Sequence[str] | None, d: int, default: str = "theta_{}") -> list[str]:
    if labels is None:
        return [default.format(i) for i in range(d)]
    if isinstance(labels, str) or len(labels) != d:
        got = "a string" if isinstance(labels, str) else f"{len(labels)} labels"
        raise ValueError(f"labels: expected {d} labels (one per dimension), got {got}")
    return [str(s) for s in labels]


def _grid(plt, n: int, per_row: int = 4, size: tuple[float, float] = (3.2, 2.9)):
    """A figure with ``n`` visible axes in rows of at most ``per_row``; returns (fig, axes)."""
    ncols = min(n, per_row)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size[0] * ncols + 0.4, size[1] * nrows + 0.5), squeeze=False
    )
    flat = axes.ravel()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _binomial_band(ax, levels: np.ndarray, n: int, z: float = _Z95, label: str | None = None):
    """Shades ``level +- z sqrt(level (1 - level) / n)``, the spread of a calibrated curve."""
    half = z * np.sqrt(levels * (1.0 - levels) / max(n, 1))
    ax.fill_between(levels, np.clip(levels - half, 0, 1), np.clip(levels + half, 0, 1),
                    color="0.5", alpha=0.25, lw=0, label=label)


def _pp_axes(ax, xlabel: str, ylabel: str):
    ax.plot([0, 1], [0, 1], color="k", ls="--", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _curve_fields(result: Any, name: str, curve: str) -> tuple[np.ndarray, ...]:
    """``levels``, ``curve``, ``lower``, ``upper`` (all ``(L,)``) and ``credibility``."""
    levels = _check_shape(_as_float(_field(result, name, "levels"), f"{name}.levels"),
                          f"{name}.levels", [("L", None)])
    L = levels.shape[0]
    if L < 2:
        raise ValueError(f"{name}.levels: expected shape (L,) with L >= 2, got {levels.shape}")
    out = [levels]
    for field in (curve, "lower", "upper"):
        a = _as_float(_field(result, name, field), f"{name}.{field}")
        out.append(_check_shape(a, f"{name}.{field}", [("L", L)]))
    cred = _as_float(_field(result, name, "credibility"), f"{name}.credibility")
    _check_shape(cred, f"{name}.credibility", [("n_test", None)])
    if cred.shape[0] < 1:
        raise ValueError(f"{name}.credibility: expected shape (n_test,) with n_test >= 1, "
                         f"got {cred.shape}")
    out.append(cred)
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# corner plot


def _hpd_thresholds(hist: Any, levels: Sequence[float]) -> np.ndarray:
    """Density thresholds of highest-density regions of a histogram.

    The bins are sorted by count, highest first; the threshold of a level is the count of the
    bin at which the cumulative mass first reaches that level, so the bins with
    ``hist >= threshold`` hold (at least, ties included) that fraction of the histogram's mass
    and are the densest such bins.

    Args:
        hist: Non-negative counts (or densities on equal bins) of any shape, positive sum.
        levels: Credibility levels in ``(0, 1]``.

    Returns:
        ``(len(levels),)`` thresholds in the order of ``levels`` (a higher level, a lower
        threshold).
    """
    h = np.asarray(hist, dtype=np.float64).ravel()
    if h.size == 0 or not np.all(np.isfinite(h)) or np.any(h < 0):
        raise ValueError(f"hist: expected finite non-negative counts, got shape {np.shape(hist)}")
    total = h.sum()
    if total <= 0:
        raise ValueError("hist: expected a positive total count, got 0")
    lv = np.asarray(levels, dtype=np.float64).ravel()
    if lv.size == 0 or np.any(~(lv > 0) | (lv > 1)):
        raise ValueError(f"levels: expected credibility levels in (0, 1], got {lv.tolist()}")
    ordered = np.sort(h)[::-1]
    cum = np.cumsum(ordered) / total
    idx = np.searchsorted(cum, lv - 1e-9, side="left")
    return ordered[np.minimum(idx, h.size - 1)]


def _hpd_contour(ax, x, y, limits_x, limits_y, bins, levels, color, lw=1.3):
    """HPD contours of ``levels`` from a smoothed 2-D histogram of ``(x, y)``.

    The thresholds come from :func:`_hpd_thresholds` applied to the smoothed histogram itself,
    so each contour encloses that fraction of the draws inside the axis limits.
    """
    from scipy.ndimage import gaussian_filter

    # fewer bins for few draws, so that the contours follow the density and not the noise
    bins = int(min(bins, max(12, np.sqrt(x.size) / 1.5)))
    h, xe, ye = np.histogram2d(x, y, bins=bins, range=[limits_x, limits_y])
    if h.sum() <= 0:
        return
    h = gaussian_filter(h, sigma=1.0, mode="constant")
    thresholds = _hpd_thresholds(h, levels)
    lo, hi = h.min(), h.max()
    # contour wants increasing, distinct levels inside the data range
    pairs = sorted(
        {float(t): _LEVEL_STYLES[k % len(_LEVEL_STYLES)]
         for k, t in enumerate(thresholds) if lo < t < hi}.items()
    )
    if not pairs:
        return
    ax.contour(0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]), h.T,
               levels=[t for t, _ in pairs], colors=[color], linestyles=[s for _, s in pairs],
               linewidths=lw)


def _posteriors(
    samples: Any, names: Sequence[str] | None
) -> tuple[list[np.ndarray], list[str], bool]:
    """(arrays, names, several) from an array, a list of arrays or a dict of arrays."""
    if isinstance(samples, Mapping):
        keys = [str(k) for k in samples]
        arrays = [(f"samples[{k!r}]", v) for k, v in samples.items()]
        several = True
    elif isinstance(samples, (list, tuple)) and len(samples) > 0 and np.ndim(samples[0]) >= 2:
        keys = [f"posterior {i}" for i in range(len(samples))]
        arrays = [(f"samples[{i}]", v) for i, v in enumerate(samples)]
        several = True
    else:
        keys, arrays, several = ["posterior"], [("samples", samples)], False
    if several and not arrays:
        raise ValueError("samples: expected at least one posterior, got an empty collection")
    if names is not None:
        if isinstance(names, str) or len(names) != len(arrays):
            got = "a string" if isinstance(names, str) else f"{len(names)} names"
            raise ValueError(f"names: expected {len(arrays)} names (one per posterior), got {got}")
        keys = [str(n) for n in names]
    out = []
    d = None
    for what, value in arrays:
        a = _check_shape(_as_float(value, what), what, [("n", None), ("d", d)])
        d = a.shape[1]
        if a.shape[0] < 1 or d < 1:
            raise ValueError(f"{what}: expected shape (n, d) with n, d >= 1, got {a.shape}")
        bad = int(np.sum(~np.all(np.isfinite(a), axis=1)))
        if bad:
            raise ValueError(f"{what}: expected finite draws, got {bad} rows with NaN or inf")
        out.append(a)
    return out, keys, several


def plot_corner(
    samples: Any,
    *,
    truth: Any = None,
    labels: Sequence[str] | None = None,
    reference: Any = None,
    bins: int = 40,
    limits: Sequence[tuple[float, float]] | None = None,
    title: str | None = None,
    names: Sequence[str] | None = None,
    levels: Sequence[float] = (0.68, 0.95),
    save: PathLike | None = None,
) -> Figure:
    """A corner plot: 1-D marginals on the diagonal, 2-D marginals below it.

    One posterior (an array) is drawn as filled histograms. Several (a list or a dict of
    arrays) are overlaid, one colour each: step histograms on the diagonal and contours of the
    highest-posterior-density regions of ``levels`` below it, with a legend. ``reference`` draws
    (e.g. from the exact posterior) are drawn in black the same way, the true parameters as red
    lines.

    Args:
        samples: ``(n, d)`` draws, or a list of ``(n_i, d)`` draws, or a dict name -> draws.
        truth: Optional ``(d,)`` true parameters; NaN entries are not drawn.
        labels: ``d`` parameter names.
        reference: Optional ``(m, d)`` reference draws.
        bins: Histogram bins per axis (the 2-D contours use at most as many, fewer for few
            draws, and smooth the histogram over about one bin).
        limits: Optional ``d`` pairs ``(low, high)`` of axis limits (e.g. the prior box);
            by default the 0.5-99.5 percentiles of all draws, widened to show ``truth``.
        title: Figure title.
        names: Legend names of the posteriors; default the dict keys or ``"posterior i"``.
        levels: Credibility levels of the contours, each in ``(0, 1)``; drawn solid, dashed,
            dotted, dash-dotted in this order.
        save: If given, the figure is also written there as a PNG (see :func:`save_figure`).

    Returns:
        The matplotlib Figure.
    """
    plt = _plt()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    posts, names_, several = _posteriors(samples, names)
    d = posts[0].shape[1]
    labels_ = _labels(labels, d)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins: expected an integer >= 2, got {bins!r}")
    lv = np.asarray(levels, dtype=np.float64)
    if lv.ndim != 1 or lv.size == 0 or np.any(~(lv > 0) | (lv >= 1)):
        raise ValueError(f"levels: expected shape (k,) of levels in (0, 1), got {lv.tolist()}")
    lv = np.sort(lv)
    ref = None
    if reference is not None:
        ref = _check_shape(_as_float(reference, "reference"), "reference", [("m", None), ("d", d)])
        if ref.shape[0] < 1 or not np.all(np.isfinite(ref)):
            raise ValueError(f"reference: expected shape (m, d={d}) of finite draws with m >= 1, "
                             f"got {ref.shape} with {int(np.sum(~np.isfinite(ref)))} non-finite")
    tr = None
    if truth is not None:
        tr = _check_shape(_as_float(truth, "truth"), "truth", [("d", d)])
    if limits is None:
        everything = posts + ([ref] if ref is not None else [])
        lo = np.min([np.percentile(p, 0.5, axis=0) for p in everything], axis=0)
        hi = np.max([np.percentile(p, 99.5, axis=0) for p in everything], axis=0)
        if tr is not None:
            known = np.isfinite(tr)
            lo = np.where(known, np.fmin(lo, tr), lo)
            hi = np.where(known, np.fmax(hi, tr), hi)
        width = hi - lo
        pad = np.where(width > 0, 0.05 * width, 0.5 * np.maximum(np.abs(lo), 1.0))
        lims = [(float(a), float(b)) for a, b in zip(lo - pad, hi + pad, strict=True)]
    else:
        lim = _check_shape(_as_float(limits, "limits"), "limits", [("d", d), ("2", 2)])
        if not np.all(np.isfinite(lim)) or np.any(lim[:, 1] <= lim[:, 0]):
            raise ValueError(f"limits: expected finite pairs (low, high) with low < high, "
                             f"got {lim.tolist()}")
        lims = [(float(a), float(b)) for a, b in lim]

    side = 2.2 * d + 0.6
    fig, axes = plt.subplots(d, d, figsize=(max(side, 4.2), max(side - 0.2, 3.6)), squeeze=False)
    colors = [_COLORS[k % len(_COLORS)] for k in range(len(posts))]
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                r = lims[i]
                if several:
                    for p, c in zip(posts, colors, strict=True):
                        ax.hist(p[:, i], bins=bins, range=r, density=True, histtype="step",
                                color=c, lw=1.4)
                else:
                    ax.hist(posts[0][:, i], bins=bins, range=r, density=True, color="C0",
                            alpha=0.6)
                if ref is not None:
                    ax.hist(ref[:, i], bins=bins, range=r, density=True, histtype="step",
                            color="k", lw=1.2)
                ax.set_yticks([])
                ax.set_xlim(r)
            else:
                if several:
                    for p, c in zip(posts, colors, strict=True):
                        _hpd_contour(ax, p[:, j], p[:, i], lims[j], lims[i], bins, lv, c)
                else:
                    ax.hist2d(posts[0][:, j], posts[0][:, i], bins=bins,
                              range=[lims[j], lims[i]], cmap="Blues")
                if ref is not None:
                    _hpd_contour(ax, ref[:, j], ref[:, i], lims[j], lims[i], bins, lv, "k",
                                 lw=1.0)
                if tr is not None and np.isfinite(tr[i]):
                    ax.axhline(tr[i], color=_TRUTH_COLOR, lw=1)
                ax.set_xlim(lims[j])
                ax.set_ylim(lims[i])
            if tr is not None and np.isfinite(tr[j]):
                ax.axvline(tr[j], color=_TRUTH_COLOR, lw=1)
            ax.xaxis.set_major_locator(MaxNLocator(4))
            if i != j:
                ax.yaxis.set_major_locator(MaxNLocator(4))
            if i == d - 1:
                ax.set_xlabel(labels_[j])
                if d >= 4:
                    ax.tick_params(axis="x", labelrotation=45)
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(labels_[i])
            elif j > 0:
                ax.set_yticklabels([])

    handles = []
    if several:
        handles += [
            Line2D([], [], color=c, lw=1.6, label=n)
            for c, n in zip(colors, names_, strict=True)
        ]
    elif ref is not None or tr is not None or names is not None:
        handles.append(Patch(color="C0", alpha=0.6, label=names_[0]))
    if ref is not None:
        handles.append(Line2D([], [], color="k", lw=1.2, label="reference"))
    if tr is not None:
        handles.append(Line2D([], [], color=_TRUTH_COLOR, lw=1, label="truth"))
    if several or ref is not None:
        handles += [Line2D([], [], color="0.4", lw=1, ls=_LEVEL_STYLES[k % len(_LEVEL_STYLES)],
                           label=f"{100 * v:g}% HPD") for k, v in enumerate(lv)]
    if title:
        fig.suptitle(title)
    fig = _finish(fig, None)
    if handles:
        if d == 1:
            axes[0, 0].legend(handles=handles, fontsize=8, loc="upper right")
        else:
            fig.legend(handles=handles, loc="upper right", fontsize=9, frameon=False,
                       bbox_to_anchor=(0.98, 0.95 if title else 0.98))
    if save is not None:
        save_figure(fig, save)
    return fig


# ---------------------------------------------------------------------------------------------
# training


def plot_losses(
    train_loss: Any,
    validation_loss: Any = None,
    *,
    title: str | None = None,
    save: PathLike | None = None,
) -> Figure:
    """Training and validation loss per epoch, one colour per ensemble member.

    Training losses are thin lines, validation losses thick ones; a dot marks each member's
    best validation epoch (``FitInfo.best_epoch`` when given a FitInfo, else the minimum of
    the validation curve). When the first epochs are far above the rest, the y axis is cut so
    that the end of training stays readable.

    Args:
        train_loss: ``(epochs, members)`` training loss (NaN after a member stopped; a
            ``(epochs,)`` array is one member), or a :class:`~ilijax.train.FitInfo` (any object
            with ``train_loss`` and ``validation_loss`` attributes).
        validation_loss: Same shape as ``train_loss``, or None; must be None when
            ``train_loss`` is a FitInfo.
        title: Axes title.
        save: If given, the figure is also written there as a PNG (see :func:`save_figure`).

    Returns:
        The matplotlib Figure.
    """
    plt = _plt()
    from matplotlib.lines import Line2D

    best_epoch = None
    if hasattr(train_loss, "train_loss") and hasattr(train_loss, "validation_loss"):
        if validation_loss is not None:
            raise ValueError("validation_loss: expected None when train_loss is a FitInfo, "
                             f"got {type(validation_loss).__name__}")
        info = train_loss
        train_loss, validation_loss = info.train_loss, info.validation_loss
        best_epoch = getattr(info, "best_epoch", None)
    tl = _as_float(train_loss, "train_loss")
    if tl.ndim == 1:
        tl = tl[:, None]
    _check_shape(tl, "train_loss", [("epochs", None), ("members", None)])
    if tl.shape[0] < 1 or tl.shape[1] < 1:
        raise ValueError(f"train_loss: expected shape (epochs, members) with both >= 1, "
                         f"got {tl.shape}")
    epochs_n, members = tl.shape
    vl = None
    if validation_loss is not None:
        vl = _as_float(validation_loss, "validation_loss")
        if vl.ndim == 1:
            vl = vl[:, None]
        _check_shape(vl, "validation_loss", [("epochs", epochs_n), ("members", members)])
    tl = np.where(np.isfinite(tl), tl, np.nan)
    vl = None if vl is None else np.where(np.isfinite(vl), vl, np.nan)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    epochs = np.arange(1, epochs_n + 1)
    marker = "o" if epochs_n < 3 else None
    for k in range(members):
        c = f"C{k % 10}"
        label = f"member {k}" if members <= 10 else None
        ax.plot(epochs, tl[:, k], color=c, alpha=0.55, lw=0.9, marker=marker, ms=3,
                label=label if vl is None else None)
        if vl is None:
            continue
        ax.plot(epochs, vl[:, k], color=c, lw=2.0, marker=marker, ms=3, label=label)
        b = None
        if best_epoch is not None and np.size(best_epoch) == members:
            e = int(np.asarray(best_epoch).ravel()[k])
            b = e - 1 if 1 <= e <= epochs_n else None
        elif np.any(np.isfinite(vl[:, k])):
            b = int(np.nanargmin(vl[:, k]))
        if b is not None and np.isfinite(vl[b, k]):
            ax.plot(epochs[b], vl[b, k], "o", color=c, ms=6, mec="k", mew=0.8, zorder=5)

    values = np.concatenate([tl.ravel()] + ([] if vl is None else [vl.ravel()]))
    values = values[np.isfinite(values)]
    if values.size > 10:
        top, bottom = np.percentile(values, 98), values.min()
        span = top - bottom
        if span > 0 and values.max() > top + span:
            ax.set_ylim(bottom - 0.05 * span, top + 0.15 * span)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    style = [Line2D([], [], color="0.3", lw=0.9, alpha=0.7, label="training")]
    if vl is not None:
        style += [Line2D([], [], color="0.3", lw=2.0, label="validation"),
                  Line2D([], [], color="0.3", ls="", marker="o", mec="k", label="best validation")]
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + style, fontsize=8, ncol=2 if len(handles) > 4 else 1)
    if title:
        ax.set_title(title)
    return _finish(fig, save)


# ---------------------------------------------------------------------------------------------
# calibration


def _sbc_fields(sbc: Any, name: str = "sbc") -> tuple[np.ndarray, int]:
    ranks = _as_float(_field(sbc, name, "ranks"), f"{name}.ranks")
    _check_shape(ranks, f"{name}.ranks", [("n_test", None), ("d", None)])
    if ranks.shape[0] < 1 or ranks.shape[1] < 1:
        raise ValueError(f"{name}.ranks: expected shape (n_test, d) with both >= 1, "
                         f"got {ranks.shape}")
    s = _scalar(sbc, name, "num_samples")
    if not s >= 1:
        raise ValueError(f"{name}.num_samples: expected a positive number of draws, got {s}")
    return ranks, int(s)


def plot_coverage(
    coverage: CoverageResult,
    *,
    sbc: SBCResult | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    save: PathLike | None = None,
) -> Figure:
    """Expected coverage of HPD regions against the credibility level (a PP plot).

    The empirical coverage is drawn with its bootstrap band; the grey band is where a
    calibrated posterior's curve falls 95% of the time for this many test pairs (per level,
    ``level +- 1.96 sqrt(level (1 - level) / n_test)``). A curve above the diagonal is
    conservative, below over-confident. With ``sbc``, a second panel shows per parameter the
    ECDF of the normalised SBC ranks ``rank / num_samples`` with the same kind of band.

    Args:
        coverage: A :class:`~ilijax.diagnostics.results.CoverageResult`.
        sbc: Optional :class:`~ilijax.diagnostics.results.SBCResult`.
        labels: ``d`` parameter names for the SBC panel.
        title: Figure title.
        save: If given, the figure is also written there as a PNG (see :func:`save_figure`).

    Returns:
        The matplotlib Figure.
    """
    plt = _plt()
    levels, empirical, lower, upper, cred = _curve_fields(coverage, "coverage", "empirical")
    error = _scalar(coverage, "coverage", "error")
    bias = _scalar(coverage, "coverage", "bias")
    ks = _scalar(coverage, "coverage", "ks_pvalue")
    method = str(_field(coverage, "coverage", "method"))
    if sbc is not None:
        ranks, s = _sbc_fields(sbc)
        labels_ = _labels(labels, ranks.shape[1])
    n = cred.shape[0]

    panels = 1 if sbc is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.8 * panels + 0.4, 4.9), squeeze=False)
    ax = axes[0, 0]
    _binomial_band(ax, levels, n, label=f"95% binomial band (n={n})")
    ax.fill_between(levels, lower, upper, color="C0", alpha=0.3, lw=0, label="bootstrap band")
    ax.plot(levels, empirical, color="C0", lw=1.8,
            label=f"{method}: error {error:.3f}, bias {bias:+.3f}\nKS p = {ks:.3g}")
    _pp_axes(ax, "credibility level", "empirical coverage")
    ax.set_title("HPD expected coverage")
    ax.legend(loc="upper left", fontsize=8)

    if sbc is not None:
        ax = axes[0, 1]
        grid = np.linspace(0, 1, 201)
        n_sbc = ranks.shape[0]
        _binomial_band(ax, grid, n_sbc, label=f"95% binomial band (n={n_sbc})")
        y = np.concatenate([[0.0], np.arange(1, n_sbc + 1) / n_sbc, [1.0]])
        for j in range(ranks.shape[1]):
            u = np.sort(np.clip(ranks[:, j] / s, 0, 1))
            ax.plot(np.concatenate([[0.0], u, [1.0]]), y, drawstyle="steps-post",
                    color=f"C{j % 10}", lw=1.3, label=labels_[j])
        _pp_axes(ax, "normalised rank  rank / S", "empirical CDF")
        ax.set_title(f"SBC marginal rank ECDF (S={s})")
        ax.legend(loc="upper left", fontsize=8, ncol=2 if ranks.shape[1] > 6 else 1)
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


def plot_ranks(
    sbc: SBCResult,
    *,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    save: PathLike | None = None,
) -> Figure:
    """SBC rank histograms, one panel per parameter (at most 4 per row).

    Each panel shows the rank counts, the count expected under uniformity (black) and the grey
    band where 99% of a calibrated posterior's bins fall (per bin,
    ``expected +- 2.576 sqrt(n p (1 - p))`` with ``p = expected / n``). A U shape means an
    over-confident posterior, a hump an under-confident one, a slope a bias.

    Args:
        sbc: A :class:`~ilijax.diagnostics.results.SBCResult`.
        labels: ``d`` parameter names.
        title: Figure title.
        save: If given, the figure is also written there as a PNG (see :func:`save_figure`).

    Returns:
        The matplotlib Figure.
    """
    plt = _plt()
    hist = _check_shape(_as_float(_field(sbc, "sbc", "histogram"), "sbc.histogram"),
                        "sbc.histogram", [("bins", None), ("d", None)])
    nb, d = hist.shape
    if nb < 1 or d < 1:
        raise ValueError(
            f"sbc.histogram: expected shape (bins, d) with both >= 1, got {hist.shape}"
        )
    expected = _check_shape(_as_float(_field(sbc, "sbc", "expected"), "sbc.expected"),
                            "sbc.expected", [("bins", nb)])
    edges = _check_shape(_as_float(_field(sbc, "sbc", "bin_edges"), "sbc.bin_edges"),
                         "sbc.bin_edges", [("bins + 1", nb + 1)])
    ks = _check_shape(_as_float(_field(sbc, "sbc", "ks_pvalue"), "sbc.ks_pvalue"),
                      "sbc.ks_pvalue", [("d", d)])
    chi2 = np.asarray(_field(sbc, "sbc", "chi2_pvalue"), dtype=np.float64)
    chi2 = chi2 if chi2.shape == (d,) else None
    labels_ = _labels(labels, d)

    fig, axes = _grid(plt, d)
    for j, ax in enumerate(axes):
        n = hist[:, j].sum()
        p = expected / n if n > 0 else np.zeros_like(expected)
        half = _Z99 * np.sqrt(n * p * (1 - p))
        lo, hi = np.clip(expected - half, 0, None), expected + half
        ax.stairs(hist[:, j], edges, fill=True, color="C0", alpha=0.55, label="ranks",
                  zorder=1)
        ax.fill_between(edges, np.append(lo, lo[-1]), np.append(hi, hi[-1]), step="post",
                        color="0.35", alpha=0.3, lw=0, label="99% band", zorder=2)
        ax.stairs(expected, edges, color="k", lw=1.2, label="expected", zorder=3)
        ax.set_xlim(edges[0], edges[-1])
        ax.set_ylim(0, max(hi.max(), hist[:, j].max()) * 1.35 + 1e-9)
        sub = f"{labels_[j]}\nKS p = {ks[j]:.3g}"
        if chi2 is not None:
            sub += f", $\\chi^2$ p = {chi2[j]:.3g}"
        ax.set_title(sub, fontsize=10)
        ax.set_xlabel("rank")
        if j % 4 == 0:
            ax.set_ylabel("count")
    axes[0].legend(fontsize=7, loc="upper center", ncol=3, handlelength=1.2,
                   columnspacing=0.8, frameon=False)
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


def plot_tarp(
    tarp: TARPResult,
    *,
    title: str | None = None,
    save: PathLike | None = None,
) -> Figure:
    """TARP expected coverage probability against the credibility level.

    The ECP curve is drawn with its bootstrap band, the diagonal and the grey 95% binomial band
    of a calibrated posterior (``alpha +- 1.96 sqrt(alpha (1 - alpha) / n_test)``); the area to
    curve (ATC) and the KS p-value are in the legend.

    Args:
        tarp: A :class:`~ilijax.diagnostics.results.TARPResult`.
        title: Axes title.
        save: If given, the figure is also written there as a PNG (see :func:`save_figure`).

    Returns:
        The matplotlib Figure.
    """
    plt = _plt()
    levels, ecp, lower, upper, cred = _curve_fields(tarp, "tarp", "ecp")
    atc = _scalar(tarp, "tarp", "atc")
    ks = _scalar(tarp, "tarp", "ks_pvalue")
    n = cred.shape[0]
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    _binomial_band(ax, levels, n, label=f"95% binomial band (n={n})")
    ax.fill_between(levels, lower, upper, color="C0", alpha=0.3, lw=0, label="bootstrap band")
    ax.plot(levels, ecp, color="C0", lw=1.8, label=f"ECP: ATC {atc:+.3f}, KS p = {ks:.3g}")
    _pp_axes(ax, r"credibility level $\alpha$", "expected coverage probability")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "TARP")
    return _finish(fig, save)


# ---------------------------------------------------------------------------------------------
# accuracy


def plot_predictions(
    predictions: PredictionsResult,
    *,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    save: PathLike | None = None,
) -> Figure:
    """Posterior mean with its central 68% interval against the true value, per parameter.

    Each panel's title holds the RMSE of the mean and the fraction of truths inside the
    central 68% and 95% intervals (from ``predictions``, over all test pairs). Beyond 300 test
    pairs a fixed random subset of 300 is drawn, to keep the error bars readable.

    Args:
        predictions: A :class:`~ilijax.diagnostics.results.PredictionsResult`.
        labels: ``d`` parameter names.
        title: Figure title.
        save: If given, the figure is also written there as a PNG (see :func:`save_figure`).

    Returns:
        The matplotlib Figure.
    """
    plt = _plt()
    truth = _check_shape(_as_float(_field(predictions, "predictions", "truth"),
                                   "predictions.truth"),
                         "predictions.truth", [("n_test", None), ("d", None)])
    n, d = truth.shape
    if n < 1 or d < 1:
        raise ValueError(f"predictions.truth: expected shape (n_test, d) with both >= 1, "
                         f"got {truth.shape}")
    f = {}
    for field in ("mean", "lo68", "hi68"):
        f[field] = _check_shape(
            _as_float(_field(predictions, "predictions", field), f"predictions.{field}"),
            f"predictions.{field}", [("n_test", n), ("d", d)])
    for field in ("rmse", "inside68", "inside95"):
        f[field] = _check_shape(
            _as_float(_field(predictions, "predictions", field), f"predictions.{field}"),
            f"predictions.{field}", [("d", d)])
    labels_ = _labels(labels, d)

    idx = np.arange(n)
    if n > 300:
        idx = np.sort(np.random.default_rng(0).choice(n, 300, replace=False))
    fig, axes = _grid(plt, d, size=(3.4, 3.4))
    for j, ax in enumerate(axes):
        t, m = truth[idx, j], f["mean"][idx, j]
        yerr = np.stack([np.clip(m - f["lo68"][idx, j], 0, None),
                         np.clip(f["hi68"][idx, j] - m, 0, None)])
        yerr = np.where(np.isfinite(yerr), yerr, 0.0)
        ax.errorbar(t, m, yerr=yerr, fmt="o", ms=2.5, color="C0", ecolor="C0", elinewidth=0.7,
                    alpha=0.7)
        both = np.concatenate([t, m])
        both = both[np.isfinite(both)]
        if both.size:
            lo, hi = both.min(), both.max()
            ax.plot([lo, hi], [lo, hi], color="k", ls="--", lw=1)
        ax.set_title(f"{labels_[j]}: RMSE {f['rmse'][j]:.3g}\n"
                     f"inside 68%: {f['inside68'][j]:.0%}, 95%: {f['inside95'][j]:.0%}",
                     fontsize=10)
        ax.set_xlabel(f"true {labels_[j]}")
        if j % 4 == 0:
            ax.set_ylabel("posterior mean (68% interval)")
    sup = title or ""
    if n > 300:
        sup = f"{sup}  ({idx.size} of {n} test pairs shown)".strip()
    if sup:
        fig.suptitle(sup)
    return _finish(fig, save)


def plot_log_prob(
    log_prob: LogProbResult,
    *,
    title: str | None = None,
    save: PathLike | None = None,
) -> Figure:
    """Histogram of the log-density of the true parameters over the test set.

    Args:
        log_prob: A :class:`~ilijax.diagnostics.results.LogProbResult`; non-finite values
            (e.g. a zero KDE density) are counted in the title but not drawn.
        title: Axes title; the method (``exact`` or ``kde estimate``) is appended.
        save: If given, the figure is also written there as a PNG (see :func:`save_figure`).

    Returns:
        The matplotlib Figure.
    """
    plt = _plt()
    values = _check_shape(_as_float(_field(log_prob, "log_prob", "values"), "log_prob.values"),
                          "log_prob.values", [("n_test", None)])
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError(f"log_prob.values: expected shape (n_test,) with finite values, "
                         f"got {values.shape} with none finite")
    mean = _scalar(log_prob, "log_prob", "mean")
    sem = _scalar(log_prob, "log_prob", "sem")
    method = str(_field(log_prob, "log_prob", "method"))
    method = "kde estimate" if method == "kde" else method

    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    bins = int(np.clip(2 * np.sqrt(finite.size), 10, 60))
    if np.ptp(finite) == 0:
        bins = 1
    ax.hist(finite, bins=bins, color="C0", alpha=0.7)
    ax.axvline(mean, color="k", lw=1.5, label=f"mean {mean:.3f} $\\pm$ {sem:.3f}")
    ax.set_xlabel(r"$\log q(\theta_\mathrm{true} \mid x)$")
    ax.set_ylabel("test pairs")
    ax.legend(fontsize=9)
    head = f"{title} ({method})" if title else f"log-probability of the truth ({method})"
    dropped = values.size - finite.size
    if dropped:
        head += f"\n{dropped} non-finite value{'s' if dropped > 1 else ''} not shown"
    ax.set_title(head)
    return _finish(fig, save)


def plot_predictive(
    predictive: PredictiveResult,
    *,
    labels: Sequence[str] | None = None,
    index: int = 0,
    title: str | None = None,
    save: PathLike | None = None,
) -> Figure:
    """Posterior predictive check of one observation, and the p-values of all.

    The left panel shows, per data dimension (e.g. a spectrum's wavelength bins), the median
    and the 16-84 and 2.5-97.5 percentile spread of the data simulated from posterior draws,
    with the observation as points on top; short data vectors (at most 30 dimensions) are drawn
    as bars, long ones as bands. The right panel is the histogram of the predictive p-values
    of all observations and dimensions.

    Args:
        predictive: A :class:`~ilijax.diagnostics.results.PredictiveResult`; any leading batch
            axes of ``x_obs`` are flattened.
        labels: ``x_dim`` names of the data dimensions (tick labels), default the index.
        index: Which observation of the (flattened) batch to draw.
        title: Figure title; default names the observation.
        save: If given, the figure is also written there as a PNG (see :func:`save_figure`).

    Returns:
        The matplotlib Figure.
    """
    plt = _plt()
    x_obs = _as_float(_field(predictive, "predictive", "x_obs"), "predictive.x_obs")
    if x_obs.ndim < 1 or x_obs.shape[-1] < 1:
        raise ValueError(f"predictive.x_obs: expected shape (..., x_dim) with x_dim >= 1, "
                         f"got {x_obs.shape}")
    batch, x_dim = x_obs.shape[:-1], x_obs.shape[-1]
    batch_dims = [(f"batch_{i}", b) for i, b in enumerate(batch)]
    x_pred = _check_shape(_as_float(_field(predictive, "predictive", "x_pred"),
                                    "predictive.x_pred"),
                          "predictive.x_pred", [*batch_dims, ("m", None), ("x_dim", x_dim)])
    if x_pred.shape[-2] < 1:
        raise ValueError(f"predictive.x_pred: expected shape (..., m, x_dim) with m >= 1, "
                         f"got {x_pred.shape}")
    pvalue = _check_shape(_as_float(_field(predictive, "predictive", "pvalue"),
                                    "predictive.pvalue"),
                          "predictive.pvalue", [*batch_dims, ("x_dim", x_dim)])
    n_obs = int(np.prod(batch)) if batch else 1
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not (
        -n_obs <= index < n_obs
    ):
        raise ValueError(f"index: expected an integer in [0, {n_obs}) (observations), "
                         f"got {index!r}")
    index = int(index) % n_obs
    names = None if labels is None else _labels(labels, x_dim)
    obs = x_obs.reshape(n_obs, x_dim)[index]
    pred = x_pred.reshape(n_obs, -1, x_dim)[index]
    pred = np.where(np.isfinite(pred), pred, np.nan)
    if not np.any(np.isfinite(pred)):
        raise ValueError("predictive.x_pred: expected finite simulations for observation "
                         f"{index}, got none")
    q = np.nanpercentile(pred, [2.5, 16, 50, 84, 97.5], axis=0)

    fig, (ax, axp) = plt.subplots(
        1, 2, figsize=(min(4.0 + 0.12 * x_dim, 9.0) + 4.2, 4.3),
        gridspec_kw={"width_ratios": [max(1.4, min(1.0 + 0.03 * x_dim, 2.6)), 1]},
    )
    k = np.arange(x_dim)
    if x_dim <= 30:
        ax.vlines(k, q[0], q[4], color="C0", lw=2.0, alpha=0.35, label="2.5-97.5%")
        ax.vlines(k, q[1], q[3], color="C0", lw=5.0, alpha=0.6, label="16-84%")
        ax.plot(k, q[2], "_", color="C0", ms=12, mew=1.5, label="median")
    else:
        ax.fill_between(k, q[0], q[4], color="C0", alpha=0.2, lw=0, label="2.5-97.5%")
        ax.fill_between(k, q[1], q[3], color="C0", alpha=0.4, lw=0, label="16-84%")
        ax.plot(k, q[2], color="C0", lw=1.2, label="median")
    ax.plot(k, obs, "o", color="k", ms=3.5 if x_dim <= 100 else 2.0, label="observed", zorder=5)
    if names is not None:
        ax.set_xticks(k, names, rotation=45 if x_dim > 4 else 0,
                      ha="right" if x_dim > 4 else "center")
    else:
        ax.set_xlabel("data index")
    ax.set_ylabel("x")
    ax.legend(fontsize=8)
    ax.set_title(f"posterior predictive ({pred.shape[0]} draws)", fontsize=10)

    pv = pvalue.ravel()
    pv = pv[np.isfinite(pv)]
    nbins = int(np.clip(round(np.sqrt(pv.size)), 5, 20))
    axp.hist(np.clip(pv, 0, 1), bins=nbins, range=(0, 1), color="C1", alpha=0.75)
    axp.set_xlim(0, 1)
    axp.set_xlabel("predictive p-value")
    axp.set_ylabel("count")
    axp.set_title(f"p-values ({n_obs} obs. x {x_dim} dims)", fontsize=10)
    fig.suptitle(title or (f"observation {index}" if batch else "observation"))
    return _finish(fig, save)
