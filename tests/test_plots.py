"""Tests of ilijax.plots: figures, saved PNGs, input checks and the HPD threshold helper.

The result NamedTuples are filled by hand with small synthetic arrays of the documented shapes,
so these tests do not depend on the diagnostics that produce them.
"""

from __future__ import annotations

import os

import matplotlib
import matplotlib.image
import numpy as np
import pytest
from scipy.stats import norm

from ilijax import plots
from ilijax.diagnostics.results import (
    CoverageResult,
    LogProbResult,
    PredictionsResult,
    PredictiveResult,
    SBCResult,
    TARPResult,
)
from ilijax.plots import _hpd_thresholds
from ilijax.train import FitInfo

DPI = 120


@pytest.fixture
def keep():
    """A list to put figures in; they are closed after the test, passed or failed."""
    figs = []
    yield figs
    plt = plots._plt()
    for fig in figs:
        plt.close(fig)


def visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def legend_texts(fig):
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def check_png(path, fig):
    assert os.path.isfile(path)
    img = matplotlib.image.imread(path)
    w, h = fig.get_size_inches() * DPI
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert abs(img.shape[0] - h) <= 1 and abs(img.shape[1] - w) <= 1
    assert np.ptp(img[..., :3]) > 0.1, "the image is all one colour"
    # written atomically: nothing but the PNG is left in the directory
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


# ---------------------------------------------------------------------------------------------
# synthetic results

RNG = np.random.default_rng(0)
N, D, S, BINS, L = 60, 3, 50, 10, 21


def make_sbc(n=N, d=D, s=S, bins=BINS):
    ranks = RNG.integers(0, s + 1, size=(n, d))
    edges = np.linspace(0, s + 1, bins + 1).astype(int)
    hist = np.stack([np.histogram(ranks[:, j], edges)[0] for j in range(d)], axis=1)
    expected = n * np.diff(edges) / (s + 1)
    return SBCResult(ranks, s, RNG.random(d), RNG.random(d), hist, expected, edges)


def make_coverage(n=N, levels=L):
    lv = np.linspace(0, 1, levels)
    emp = lv**1.2
    return CoverageResult(lv, emp, emp - 0.05, emp + 0.05, RNG.random(n), 0.03, -0.03, 0.4,
                          "exact")


def make_tarp(n=N, levels=L):
    lv = np.linspace(0, 1, levels)
    return TARPResult(lv, lv, lv - 0.05, lv + 0.05, RNG.random(n), 0.01, 0.7)


def make_predictions(n=N, d=D):
    truth = RNG.normal(size=(n, d))
    mean = truth + 0.3 * RNG.normal(size=(n, d))
    sd = np.full((n, d), 0.3)
    return PredictionsResult(truth, mean, sd, mean, mean - sd, mean + sd, mean - 2 * sd,
                             mean + 2 * sd, np.full(d, 0.3), np.zeros(d), np.full(d, 0.68),
                             np.full(d, 0.95))


def make_log_prob(n=N):
    return LogProbResult(RNG.normal(-2, 1, n), -2.0, 0.1, "kde")


def make_predictive(batch=(4,), m=30, x_dim=12):
    x_pred = RNG.normal(size=(*batch, m, x_dim))
    x_obs = RNG.normal(size=(*batch, x_dim))
    p = RNG.random((*batch, x_dim))
    return PredictiveResult(x_pred, x_obs, p, p)


def make_fitinfo(epochs=15, members=3):
    tl = 2 * np.exp(-np.arange(epochs) / 4)[:, None] + RNG.random((epochs, members)) * 0.1
    vl = tl + 0.1
    tl[10:, 1] = np.nan
    vl[10:, 1] = np.nan
    best = np.nanargmin(vl, axis=0) + 1
    return FitInfo(tl, vl, np.nanmin(vl, axis=0), best, np.full(members, epochs),
                   np.zeros(members, bool), np.zeros(members, int), 0.1, 0.2, 1, (False,))


def draws(n=300, d=D, shift=0.0):
    return RNG.normal(shift, 1.0, size=(n, d))


# one call per function: (name, call taking save=..., visible axes)
CASES = [
    ("corner", lambda **kw: plots.plot_corner(draws(), truth=np.zeros(D), **kw), D * (D + 1) // 2),
    ("corner_multi",
     lambda **kw: plots.plot_corner([draws(), draws(shift=0.5)], reference=draws(), **kw),
     D * (D + 1) // 2),
    ("losses", lambda **kw: plots.plot_losses(make_fitinfo(), **kw), 1),
    ("coverage", lambda **kw: plots.plot_coverage(make_coverage(), **kw), 1),
    ("coverage_sbc", lambda **kw: plots.plot_coverage(make_coverage(), sbc=make_sbc(), **kw), 2),
    ("ranks", lambda **kw: plots.plot_ranks(make_sbc(d=5), **kw), 5),
    ("tarp", lambda **kw: plots.plot_tarp(make_tarp(), **kw), 1),
    ("predictions", lambda **kw: plots.plot_predictions(make_predictions(), **kw), D),
    ("log_prob", lambda **kw: plots.plot_log_prob(make_log_prob(), **kw), 1),
    ("predictive", lambda **kw: plots.plot_predictive(make_predictive(), index=2, **kw), 2),
    ("predictive_long",
     lambda **kw: plots.plot_predictive(make_predictive(batch=(), x_dim=50), **kw), 2),
]


@pytest.mark.parametrize("name, call, n_axes", CASES, ids=[c[0] for c in CASES])
def test_figure_and_png(name, call, n_axes, keep, tmp_path):
    fig = call()
    keep.append(fig)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(visible_axes(fig)) == n_axes
    path = tmp_path / "out" / f"{name}.png"  # the folder does not exist yet
    fig2 = call(save=path)
    keep.append(fig2)
    check_png(str(path), fig2)


# ---------------------------------------------------------------------------------------------
# save_figure


def test_save_figure_is_atomic_and_replaces(keep, tmp_path):
    plt = plots._plt()
    fig, ax = plt.subplots(figsize=(2, 2))
    keep.append(fig)
    ax.plot([0, 1], [1, 0])
    path = tmp_path / "a.png"
    assert plots.save_figure(fig, path) == path
    check_png(str(path), fig)
    before = path.read_bytes()
    ax.plot([0, 1], [0, 1], color="C3")
    plots.save_figure(fig, str(path))
    assert path.read_bytes() != before
    assert os.listdir(tmp_path) == ["a.png"]


def test_save_figure_failure_leaves_old_file(keep, tmp_path, monkeypatch):
    plt = plots._plt()
    fig, _ = plt.subplots(figsize=(2, 2))
    keep.append(fig)
    path = tmp_path / "a.png"
    path.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.save_figure(fig, path)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.png"]


# ---------------------------------------------------------------------------------------------
# corner


def test_corner_three_posteriors_legend(keep):
    posts = {"NPE": draws(), "NLE": draws(shift=0.3), "NRE": draws(shift=-0.3)}
    fig = plots.plot_corner(posts, truth=[0.0, 0.1, 0.2], labels=["a", "b", "c"])
    keep.append(fig)
    texts = legend_texts(fig)
    assert {"NPE", "NLE", "NRE"} <= set(texts)
    assert "truth" in texts and "68% HPD" in texts and "95% HPD" in texts
    # two HPD contour sets per posterior in the lower triangle: one contour set each
    lower = fig.axes[D]  # row 1, column 0
    assert len(lower.collections) >= 3


def test_corner_names_override_and_one_dimension(keep):
    fig = plots.plot_corner([draws(d=1), draws(d=1)], names=["x", "y"], limits=[(-4, 4)])
    keep.append(fig)
    assert len(visible_axes(fig)) == 1
    assert {"x", "y"} <= set(legend_texts(fig))
    assert fig.axes[0].get_xlim() == (-4, 4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"samples": np.zeros(10)}, r"samples: expected shape \(n, d\), got \(10,\)"),
        ({"samples": [draws(), draws(d=2)]}, r"samples\[1\]: expected shape \(n, d=3\)"),
        ({"samples": {"a": draws(), "b": np.zeros((5, 4))}}, r"samples\['b'\]"),
        ({"samples": draws(), "truth": np.zeros(2)}, r"truth: expected shape \(d=3,\), got \(2,\)"),
        ({"samples": draws(), "reference": np.zeros((5, 2))}, r"reference: expected shape"),
        ({"samples": draws(), "labels": ["a"]}, r"labels: expected 3 labels"),
        ({"samples": draws(), "limits": [(0, 1)] * 2}, r"limits: expected shape \(d=3, 2=2\)"),
        ({"samples": draws(), "limits": [(1, 0)] * 3}, r"limits: expected finite pairs"),
        ({"samples": [draws(), draws()], "names": ["a"]}, r"names: expected 2 names"),
        ({"samples": draws(), "levels": (0.5, 1.2)}, r"levels"),
        ({"samples": draws(), "bins": 1}, r"bins"),
        ({"samples": np.full((5, 3), np.nan)}, r"samples: expected finite draws"),
    ],
)
def test_corner_bad_input(kwargs, match):
    samples = kwargs.pop("samples")
    with pytest.raises(ValueError, match=match):
        plots.plot_corner(samples, **kwargs)


# ---------------------------------------------------------------------------------------------
# HPD thresholds


def test_hpd_thresholds_hand_made():
    hist = np.array([[4.0, 3.0], [2.0, 1.0]])  # masses 0.4, 0.3, 0.2, 0.1
    t = _hpd_thresholds(hist, [0.4, 0.5, 0.7, 0.9, 1.0])
    np.testing.assert_array_equal(t, [4.0, 3.0, 3.0, 2.0, 1.0])
    # ties: both bins of count 2 are needed together
    t = _hpd_thresholds(np.array([2.0, 2.0, 1.0]), [0.3, 0.5])
    np.testing.assert_array_equal(t, [2.0, 2.0])


def test_hpd_thresholds_standard_normal():
    edges = np.linspace(-5, 5, 101)
    centres = 0.5 * (edges[1:] + edges[:-1])
    p1 = np.diff(norm.cdf(edges))
    mass = np.outer(p1, p1)  # exact bin masses of a 2-D standard normal
    t68, t95 = _hpd_thresholds(mass, [0.68, 0.95])
    assert t68 > t95
    for t, level in ((t68, 0.68), (t95, 0.95)):
        enclosed = mass[mass >= t].sum()
        assert level <= enclosed <= level + 0.01
        # the region is the disk of radius sqrt(-2 log(1 - level))
        r = np.hypot(*np.meshgrid(centres, centres, indexing="ij"))
        radius = np.sqrt(-2 * np.log(1 - level))
        assert r[mass >= t].max() <= radius + 0.15
        assert r[mass < t].min() >= radius - 0.15
    # from draws: the bins above the 0.68 threshold hold about 0.68 of the true mass
    x = np.random.default_rng(1).normal(size=(20_000, 2))
    hist, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[edges, edges])
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(hist, 2.0, mode="constant")
    (t,) = _hpd_thresholds(smooth, [0.68])
    assert mass[smooth >= t].sum() == pytest.approx(0.68, abs=0.03)


def test_hpd_thresholds_bad_input():
    with pytest.raises(ValueError, match="hist"):
        _hpd_thresholds(np.zeros((3, 3)), [0.5])
    with pytest.raises(ValueError, match="hist"):
        _hpd_thresholds(np.array([1.0, -1.0]), [0.5])
    with pytest.raises(ValueError, match="levels"):
        _hpd_thresholds(np.ones(4), [0.0])


# ---------------------------------------------------------------------------------------------
# losses


def test_losses_arrays_and_best_dots(keep):
    info = make_fitinfo()
    fig = plots.plot_losses(info.train_loss, info.validation_loss, title="t")
    keep.append(fig)
    ax = fig.axes[0]
    dots = [ln for ln in ax.lines if ln.get_marker() == "o" and len(ln.get_xdata()) == 1]
    assert len(dots) == 3
    for k, dot in enumerate(dots):
        assert dot.get_xdata()[0] == np.nanargmin(info.validation_loss[:, k]) + 1
    fig = plots.plot_losses(np.linspace(3, 1, 7))  # one member, no validation
    keep.append(fig)
    assert len(visible_axes(fig)) == 1


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.zeros((5, 2)), np.zeros((4, 2))),
         r"validation_loss: expected shape \(epochs=5, members=2\), got \(4, 2\)"),
        ((np.zeros((2, 2, 2)),), r"train_loss: expected shape \(epochs, members\)"),
        ((np.zeros((0, 2)),), r"train_loss"),
        ((make_fitinfo(), np.zeros((15, 3))), r"validation_loss: expected None"),
    ],
)
def test_losses_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        plots.plot_losses(*args)


# ---------------------------------------------------------------------------------------------
# calibration and accuracy


def test_coverage_legend_holds_error_bias_method(keep):
    fig = plots.plot_coverage(make_coverage(), sbc=make_sbc(), labels=["a", "b", "c"])
    keep.append(fig)
    texts = " ".join(legend_texts(fig))
    assert "error 0.030" in texts and "bias -0.030" in texts and "exact" in texts
    assert {"a", "b", "c"} <= set(legend_texts(fig))


def test_bad_result_shapes():
    cov = make_coverage()
    with pytest.raises(ValueError, match=r"coverage.empirical: expected shape \(L=21,\)"):
        plots.plot_coverage(cov._replace(empirical=cov.empirical[:-1]))
    with pytest.raises(ValueError, match=r"coverage.upper"):
        plots.plot_coverage(cov._replace(upper=np.zeros((21, 2))))
    with pytest.raises(ValueError, match=r"sbc.ranks: expected shape \(n_test, d\)"):
        plots.plot_coverage(cov, sbc=make_sbc()._replace(ranks=np.zeros(5)))
    with pytest.raises(ValueError, match="labels"):
        plots.plot_coverage(cov, sbc=make_sbc(), labels=["a"])
    sbc = make_sbc()
    with pytest.raises(ValueError, match=r"sbc.expected: expected shape \(bins=10,\)"):
        plots.plot_ranks(sbc._replace(expected=np.ones(9)))
    with pytest.raises(ValueError, match=r"sbc.bin_edges: expected shape \(bins \+ 1=11,\)"):
        plots.plot_ranks(sbc._replace(bin_edges=np.arange(10)))
    with pytest.raises(ValueError, match=r"sbc.ks_pvalue"):
        plots.plot_ranks(sbc._replace(ks_pvalue=np.ones(2)))
    tarp = make_tarp()
    with pytest.raises(ValueError, match=r"tarp.ecp: expected shape \(L=21,\)"):
        plots.plot_tarp(tarp._replace(ecp=np.zeros(3)))
    with pytest.raises(ValueError, match=r"tarp.credibility"):
        plots.plot_tarp(tarp._replace(credibility=np.zeros((2, 2))))
    pred = make_predictions()
    with pytest.raises(ValueError, match=r"predictions.hi68: expected shape \(n_test=60, d=3\)"):
        plots.plot_predictions(pred._replace(hi68=np.zeros((60, 2))))
    with pytest.raises(ValueError, match=r"predictions.rmse: expected shape \(d=3,\)"):
        plots.plot_predictions(pred._replace(rmse=np.zeros(2)))
    with pytest.raises(ValueError, match=r"log_prob.values: expected shape \(n_test,\)"):
        plots.plot_log_prob(make_log_prob()._replace(values=np.zeros((3, 2))))
    with pytest.raises(ValueError, match=r"log_prob.values.*none finite"):
        plots.plot_log_prob(make_log_prob()._replace(values=np.full(3, -np.inf)))
    pp = make_predictive()
    match = r"predictive.x_pred: expected shape \(batch_0=4, m, x_dim=12\)"
    with pytest.raises(ValueError, match=match):
        plots.plot_predictive(pp._replace(x_pred=np.zeros((4, 30, 11))))
    with pytest.raises(ValueError, match=r"predictive.pvalue"):
        plots.plot_predictive(pp._replace(pvalue=np.zeros(12)))
    with pytest.raises(ValueError, match=r"index: expected an integer in \[0, 4\)"):
        plots.plot_predictive(pp, index=4)
    with pytest.raises(ValueError, match="labels"):
        plots.plot_predictive(pp, labels=["a", "b"])
    with pytest.raises(TypeError, match="coverage"):
        plots.plot_coverage(np.zeros(3))


def test_predictions_subset_of_300(keep):
    fig = plots.plot_predictions(make_predictions(n=700, d=1), labels=["Om"])
    keep.append(fig)
    ax = fig.axes[0]
    points = ax.containers[0].lines[0]
    assert len(points.get_xdata()) == 300
    assert "300 of 700" in fig.get_suptitle()
    assert "RMSE 0.3" in ax.get_title() and "68%: 68%" in ax.get_title()


def test_log_prob_title_and_nonfinite(keep):
    lp = make_log_prob()
    values = np.array(lp.values)
    values[:2] = -np.inf
    fig = plots.plot_log_prob(lp._replace(values=values))
    keep.append(fig)
    title = fig.axes[0].get_title()
    assert "kde estimate" in title and "2 non-finite" in title
    fig = plots.plot_log_prob(lp._replace(method="exact"), title="NPE")
    keep.append(fig)
    assert fig.axes[0].get_title() == "NPE (exact)"


def test_ranks_titles_hold_ks_pvalue(keep):
    sbc = make_sbc(d=2)
    fig = plots.plot_ranks(sbc, labels=["a", "b"])
    keep.append(fig)
    for ax, p in zip(visible_axes(fig), sbc.ks_pvalue, strict=True):
        assert f"KS p = {p:.3g}" in ax.get_title()


def test_predictive_labels_and_no_batch(keep):
    pp = make_predictive(batch=(), x_dim=5)
    fig = plots.plot_predictive(pp, labels=list("abcde"))
    keep.append(fig)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list("abcde")
    with pytest.raises(ValueError, match="index"):
        plots.plot_predictive(pp, index=1)
