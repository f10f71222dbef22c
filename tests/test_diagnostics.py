"""Diagnostics against known answers, with positive and negative controls.

The positive control is the exact posterior of the conjugate ``gaussian_linear`` task; the
negative controls are the same Gaussian made over-confident (scale x 0.5) or biased (mean
shifted by 2 posterior standard deviations in every coordinate). Monte Carlo tolerances are
binomial (``z`` standard deviations) or come from the tests' own p-values.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import stats

import ilijax
from ilijax import diagnostics as D

N_TEST, S = 600, 400
DIM = 3
Z = 4.0  # binomial bounds: z standard deviations
P_MIN = 1e-3  # a calibrated posterior passes a uniformity test at this level
P_FAIL = 1e-6  # a miscalibrated one fails it at this level

TASK = ilijax.tasks.gaussian_linear(dim=DIM)
POST_SD = math.sqrt(0.05)


class GaussianPosterior:
    """The exact gaussian_linear posterior, optionally scaled and shifted (the controls)."""

    def __init__(self, scale=1.0, shift=0.0, with_log_prob=True):
        self.scale, self.shift = scale, shift
        self.normalized = True
        self.labels = TASK.labels
        self.method = "test"
        if not with_log_prob:
            self.log_prob = None
        self.sample_calls = 0
        self.log_prob_calls = 0

    def _dist(self, x):
        p = TASK.posterior(x)
        return dist.Normal(p.base_dist.loc + self.shift * POST_SD,
                           p.base_dist.scale * self.scale).to_event(1)

    def sample(self, key, x, num_samples):
        self.sample_calls += 1
        keys = jax.random.split(key, x.shape[0])
        return jax.vmap(lambda k, xi: self._dist(xi).sample(k, (num_samples,)))(keys, x)

    def log_prob(self, theta, x):
        self.log_prob_calls += 1
        return jax.vmap(lambda t, xi: self._dist(xi).log_prob(t))(theta, x)


@pytest.fixture(scope="module")
def test_set():
    kt, kx = jax.random.split(jax.random.key(0))
    theta = TASK.prior.sample(kt, (N_TEST,))
    x = jax.vmap(TASK.simulator)(jax.random.split(kx, N_TEST), theta)
    return theta, x


CONTROLS = {
    "exact": GaussianPosterior(),
    "overconfident": GaussianPosterior(scale=0.5),
    "biased": GaussianPosterior(shift=2.0),
}


@pytest.fixture(scope="module")
def draws(test_set):
    theta, x = test_set
    key = jax.random.key(1)
    return {name: D.sample_test_set(key, post, x, S) for name, post in CONTROLS.items()}


def binomial_ok(empirical, levels, n, z=Z):
    """Every level within z binomial sd (plus the 1/(S+1) discretisation of the ranks)."""
    lv = np.asarray(levels)
    sd = np.sqrt(lv * (1 - lv) / n)
    return np.abs(np.asarray(empirical) - lv) <= z * sd + 1.0 / (S + 1) + 1e-6


# --------------------------------------------------------------------------- sampling


def test_sample_test_set_shape_and_errors(test_set):
    _, x = test_set
    s = D.sample_test_set(jax.random.key(2), ilijax.tasks.ExactPosterior(TASK), x[:7], 11)
    assert s.shape == (7, 11, DIM)
    with pytest.raises(ValueError, match="x_test"):
        D.sample_test_set(jax.random.key(2), CONTROLS["exact"], x[0], 11)
    with pytest.raises(ValueError, match="num_samples"):
        D.sample_test_set(jax.random.key(2), CONTROLS["exact"], x, 0)
    with pytest.raises(ValueError, match="sample"):
        D.sample_test_set(jax.random.key(2), object(), x, 5)

    class Broken:
        def sample(self, key, x, n):
            return jnp.full((x.shape[0], n, DIM), jnp.nan)

    with pytest.raises(ValueError, match="NaN"):
        D.sample_test_set(jax.random.key(2), Broken(), x[:3], 4)


# --------------------------------------------------------------------------- SBC


def test_ranks_known_answer():
    samples = jnp.asarray([[[0.0, 5.0], [1.0, 4.0], [2.0, 3.0]]])  # (1, 3, 2)
    theta = jnp.asarray([[1.5, 10.0]])
    np.testing.assert_array_equal(D.ranks(samples, theta), [[2, 3]])


def test_sbc_positive_and_negative_controls(test_set, draws):
    theta, _ = test_set
    ok = D.sbc(draws["exact"], theta)
    assert ok.ranks.shape == (N_TEST, DIM) and ok.num_samples == S
    assert np.all(ok.ks_pvalue > P_MIN) and np.all(ok.chi2_pvalue > P_MIN)
    np.testing.assert_array_equal(ok.histogram.sum(0), N_TEST)
    assert ok.expected.sum() == pytest.approx(N_TEST)
    for name in ("overconfident", "biased"):
        bad = D.sbc(draws[name], theta)
        assert np.all(bad.ks_pvalue < P_FAIL) and np.all(bad.chi2_pvalue < P_FAIL), name
    # over-confident: a U shape (both end bins over-full); biased up: ranks pile at 0
    over = D.sbc(draws["overconfident"], theta)
    assert np.all(over.histogram[0] > 2 * over.expected[0])
    assert np.all(over.histogram[-1] > 2 * over.expected[-1])
    biased = D.sbc(draws["biased"], theta)
    assert np.all(biased.histogram[0] > 3 * biased.expected[0])


def test_sbc_bins_and_errors(test_set, draws):
    theta, _ = test_set
    r = D.sbc(draws["exact"][:, :9], theta, bins=4)  # S + 1 = 10 ranks in 4 unequal bins
    np.testing.assert_array_equal(r.bin_edges, [0, 2, 5, 8, 10])
    np.testing.assert_allclose(r.expected, N_TEST * np.array([2, 3, 3, 2]) / 10)
    with pytest.raises(ValueError, match="bins"):
        D.sbc(draws["exact"], theta, bins=1)
    with pytest.raises(ValueError, match="theta"):
        D.sbc(draws["exact"], theta[:, :2])
    with pytest.raises(ValueError, match="samples"):
        D.sbc(draws["exact"][0], theta)


# --------------------------------------------------------------------------- coverage


@pytest.mark.parametrize("density", ["exact", "kde"])
def test_expected_coverage_controls(test_set, draws, density):
    theta, x = test_set
    levels = np.linspace(0.05, 0.95, 19)

    def run(name):
        post = CONTROLS[name] if density == "exact" else None
        return D.expected_coverage(jax.random.key(3), draws[name], theta, posterior=post,
                                   x=x, levels=levels)

    ok = run("exact")
    assert ok.method == density
    assert np.all(binomial_ok(ok.empirical, levels, N_TEST)), np.asarray(ok.empirical)
    assert ok.ks_pvalue > P_MIN and ok.error < 0.05
    assert np.all(ok.lower <= ok.empirical) and np.all(ok.empirical <= ok.upper)
    for name in ("overconfident", "biased"):
        bad = run(name)
        assert not np.all(binomial_ok(bad.empirical, levels, N_TEST)), name
        assert bad.ks_pvalue < P_FAIL and bad.bias < -0.1, (name, bad.bias)
    under = D.expected_coverage(
        jax.random.key(3), D.sample_test_set(jax.random.key(4), GaussianPosterior(2.0), x, S),
        theta, posterior=GaussianPosterior(2.0) if density == "exact" else None, x=x)
    assert under.bias > 0.1  # conservative: the curve lies above the diagonal


def test_coverage_bootstrap_band_contains_binomial_width(test_set, draws):
    theta, x = test_set
    r = D.expected_coverage(jax.random.key(5), draws["exact"], theta, posterior=CONTROLS["exact"],
                            x=x, levels=np.array([0.5]), bootstrap=400)
    width = float(r.upper[0] - r.lower[0])
    # the 95% bootstrap band of a proportion near 1/2 is about 2 * 1.96 * sqrt(0.25 / n) wide
    expected = 2 * 1.96 * math.sqrt(0.25 / N_TEST)
    assert 0.7 * expected < width < 1.3 * expected
    binom = D.expected_coverage(jax.random.key(5), draws["exact"], theta, bootstrap=0,
                                levels=np.array([0.5]))
    assert float(binom.upper[0] - binom.lower[0]) == pytest.approx(expected, rel=0.1)


def test_coverage_precomputed_log_probs_match(test_set, draws):
    theta, x = test_set
    post = CONTROLS["exact"]
    a = D.expected_coverage(jax.random.key(6), draws["exact"], theta, posterior=post, x=x)
    b = D.expected_coverage(jax.random.key(6), draws["exact"], theta,
                            log_prob_samples=post.log_prob(draws["exact"], x),
                            log_prob_truth=post.log_prob(theta, x))
    np.testing.assert_array_equal(a.credibility, b.credibility)
    with pytest.raises(ValueError, match="log_prob_truth"):
        D.expected_coverage(jax.random.key(6), draws["exact"], theta, log_prob_samples=1.0)
    with pytest.raises(ValueError, match="levels"):
        D.expected_coverage(jax.random.key(6), draws["exact"], theta, levels=[0.5, 1.5])
    with pytest.raises(ValueError, match="band"):
        D.expected_coverage(jax.random.key(6), draws["exact"], theta, band=1.0)


def test_coverage_nan_log_densities_warn_and_count_against_coverage():
    # 4 observations, 4 draws each (credibility (k + 1/2) / 5, k = draws denser than the truth)
    lps = jnp.asarray([[0.0, 1, 2, 3], [jnp.nan, 1, 2, 3], [0, 1, 2, 3], [-jnp.inf, 1, 2, 3]])
    lpt = jnp.asarray([1.5, 2.5, jnp.nan, -jnp.inf])
    samples, theta = jnp.zeros((4, 4, 1)), jnp.zeros((4, 1))
    match = (r"non-finite log-densities in 3 of 4 test observations: 2 of 16 draws \(1 NaN\) "
             r"and 2 of 4 truths \(1 NaN\)\. NaN is counted against coverage")
    with pytest.warns(RuntimeWarning, match=match):
        cred, method = D.hpd_credibility(samples, theta, log_prob_samples=lps,
                                         log_prob_truth=lpt)
    # a NaN draw counts as denser (k = 2, not 1); a NaN truth as outside every region (k = 4);
    # a truth at -inf is less dense than every finite draw (k = 3)
    np.testing.assert_allclose(cred, [0.5, 0.5, 0.9, 0.7])
    assert method == "exact"
    with pytest.warns(RuntimeWarning, match="3 of 4 test observations"):
        D.expected_coverage(jax.random.key(0), samples, theta, log_prob_samples=lps,
                            log_prob_truth=lpt, bootstrap=0)
    # finite densities: no warning (warnings are errors here), the same ranks as before
    cred, _ = D.hpd_credibility(samples, theta, log_prob_samples=jnp.tile(lps[:1], (4, 1)),
                                log_prob_truth=jnp.asarray([1.5, 2.5, -1.0, 9.0]))
    np.testing.assert_allclose(cred, [0.5, 0.3, 0.9, 0.1])


@pytest.mark.parametrize(
    ("levels", "match"),
    [
        ([0.5, 0.2, 0.9], r"Expected levels in strictly increasing order; got \[0\.5, 0\.2"),
        ([0.2, 0.2], r"levels in strictly increasing order"),
        ([0.5, 1.5], r"Expected levels in \[0, 1\] as a 1-D array; got \[0\.5, 1\.5\]"),
        ([-0.1, 0.5], r"levels in \[0, 1\]"),
        ([0.1, float("nan")], r"levels in \[0, 1\]"),
        ([], r"Expected at least 1 level; got 0"),
        (1, r"Expected levels to be an int >= 2 or an array; got 1"),
        (True, r"levels in \[0, 1\] as a 1-D array; got True"),
        ("ten", r"Expected levels to be an int or a 1-D array"),
    ],
)
def test_coverage_bad_levels_name_the_field(levels, match):
    with pytest.raises(ValueError, match=match):
        D.expected_coverage(jax.random.key(0), jnp.zeros((2, 3, 1)), jnp.zeros((2, 1)),
                            levels=levels, bootstrap=0)


# --------------------------------------------------------------------------- TARP


def test_tarp_controls(test_set, draws):
    theta, _ = test_set
    levels = np.linspace(0.05, 0.95, 19)
    ok = D.tarp(jax.random.key(7), draws["exact"], theta, levels=levels)
    assert np.all(binomial_ok(ok.ecp, levels, N_TEST)), np.asarray(ok.ecp)
    assert ok.ks_pvalue > P_MIN
    assert np.all(ok.lower <= ok.ecp) and np.all(ok.ecp <= ok.upper)
    for name in ("overconfident", "biased"):
        bad = D.tarp(jax.random.key(7), draws[name], theta, levels=levels)
        assert not np.all(binomial_ok(bad.ecp, levels, N_TEST)), name
        assert bad.ks_pvalue < P_FAIL, (name, bad.ks_pvalue)
    over = D.tarp(jax.random.key(7), draws["overconfident"], theta)
    # sbi's ATC, the area between ECP and the diagonal over the upper half of the levels
    assert over.atc < -0.05 and abs(ok.atc) < 0.02
    np.testing.assert_allclose(  # by hand, on this grid of 19 levels
        ok.atc, np.sum((np.asarray(ok.ecp) - levels)[9:]) * 0.05, rtol=1e-5, atol=1e-7)


def test_tarp_known_answer_with_fixed_references():
    # one test pair, references at the origin: the truth at distance 1, draws at 0.5, 2, 3
    samples = jnp.asarray([[[0.5, 0.0], [2.0, 0.0], [0.0, 3.0]]])
    r = D.tarp(jax.random.key(0), samples, jnp.asarray([[1.0, 0.0]]),
               references=jnp.zeros((1, 2)), normalize=False, levels=np.array([0.3, 0.4]),
               bootstrap=0)
    # one of three draws is closer: credibility (1 + 1/2) / 4
    np.testing.assert_allclose(r.credibility, [0.375])
    np.testing.assert_array_equal(r.ecp, [0.0, 1.0])


@pytest.mark.parametrize(
    ("levels", "match"),
    [
        # sbi's ATC is 0.0 ("calibrated") on one level: rejected
        ([0.5], r"Expected at least 2 levels for TARP's ATC \(it needs a grid step\); got 1"),
        (1, r"Expected levels to be an int >= 2 or an array for TARP's ATC"),
        ([0.9, 0.1], r"Expected levels in strictly increasing order; got \[0\.9, 0\.1\]"),
        ([0.0, 2.0], r"Expected levels in \[0, 1\]"),
    ],
)
def test_tarp_bad_levels_name_the_field(levels, match):
    samples = jnp.asarray([[[0.5, 0.0], [2.0, 0.0], [0.0, 3.0]]])
    with pytest.raises(ValueError, match=match):
        D.tarp(jax.random.key(0), samples, jnp.asarray([[1.0, 0.0]]),
               references=jnp.zeros((1, 2)), normalize=False, levels=levels, bootstrap=0)


def test_tarp_two_levels_and_uneven_grid_are_valid():
    samples = jnp.asarray([[[0.5, 0.0], [2.0, 0.0], [0.0, 3.0]]])
    kw = dict(references=jnp.zeros((1, 2)), normalize=False, bootstrap=0)
    r = D.tarp(jax.random.key(0), samples, jnp.asarray([[1.0, 0.0]]), levels=2, **kw)
    np.testing.assert_array_equal(r.levels, [0.0, 1.0])
    u = D.tarp(jax.random.key(0), samples, jnp.asarray([[1.0, 0.0]]), levels=[0.1, 0.3, 0.9],
               **kw)
    # credibility 0.375: ecp (0, 0, 1); ATC over levels[1:] with steps (0.6, 0.6)
    np.testing.assert_array_equal(u.ecp, [0.0, 0.0, 1.0])
    assert u.atc == pytest.approx((0 - 0.3) * 0.6 + (1 - 0.9) * 0.6)


# --------------------------------------------------------------------------- log-prob


def test_log_prob_of_truth_exact_and_kde(test_set, draws):
    theta, x = test_set
    exact = D.log_prob_of_truth(theta, x, posterior=CONTROLS["exact"])
    assert exact.method == "exact"
    direct = jax.vmap(lambda t, xi: TASK.posterior(xi).log_prob(t))(theta, x)
    np.testing.assert_allclose(exact.values, direct, rtol=1e-6)
    # E log N(theta; mu, v) over the posterior itself: -d/2 (log 2 pi v + 1)
    expected = -DIM / 2 * (math.log(2 * math.pi * 0.05) + 1)
    assert abs(exact.mean - expected) < Z * exact.sem
    # Scott's KDE of Gaussian draws is the Gaussian with covariance inflated by c = 1 + h^2;
    # its expected log-density at a fresh draw is lower by d/2 (log c + 1/c - 1)
    kde = D.log_prob_of_truth(theta, samples=draws["exact"])
    assert kde.method == "kde"
    c = 1 + S ** (-2 / (DIM + 4))
    offset = -DIM / 2 * (math.log(c) + 1 / c - 1)
    diff = np.asarray(kde.values) - np.asarray(exact.values)
    assert abs(diff.mean() - offset) < Z * diff.std() / math.sqrt(N_TEST) + 0.02
    # a sample-only posterior falls back to the KDE; a normalised one is used as is
    sample_only = GaussianPosterior(with_log_prob=False)
    assert D.log_prob_of_truth(theta, x, posterior=sample_only,
                               samples=draws["exact"]).method == "kde"
    with pytest.raises(ValueError, match="neither"):
        D.log_prob_of_truth(theta, x)


def test_log_prob_warns_and_counts_outside_support():
    theta = jnp.asarray([[0.0], [5.0]])

    class Boxed:
        normalized = True

        def log_prob(self, t, x):
            return jnp.where(jnp.abs(t[:, 0]) < 1, 0.0, -jnp.inf)

    with pytest.warns(UserWarning, match="1 of 2"):
        r = D.log_prob_of_truth(theta, jnp.zeros((2, 1)), posterior=Boxed())
    assert r.mean == 0.0


def test_kde_matches_scipy():
    key = jax.random.key(8)
    draws = jax.random.normal(key, (2, 300, 2)) * jnp.asarray([1.0, 0.3]) + 0.5
    draws = draws.at[1].set(draws[1] @ jnp.asarray([[1.0, 0.6], [0.0, 1.0]]))
    pts = jax.random.normal(jax.random.key(9), (2, 7, 2))
    ours = D.kde_log_prob(draws, pts)
    for i in range(2):
        ref = stats.gaussian_kde(np.asarray(draws[i], np.float64).T).logpdf(
            np.asarray(pts[i], np.float64).T)
        np.testing.assert_allclose(ours[i], ref, rtol=1e-4)  # float32 against float64
    # Leave-one-out at the draws: scipy's KDE of all S draws (the bandwidth of all S draws)
    # with each draw's own kernel, N(0; 0, H), taken out of the sum and the count:
    # loo_i = log((S p_kde(x_i) - N(0; 0, H)) / (S - 1)).
    # (Keeping the own kernel would raise these log-densities by 3% to 40%.)
    loo = np.asarray(D.kde_log_prob(draws))
    assert loo.shape == (2, 300)
    for i in range(2):
        d = np.asarray(draws[i], np.float64)
        kde = stats.gaussian_kde(d.T)
        self_term = stats.multivariate_normal(np.zeros(2), kde.covariance).pdf(np.zeros(2))
        ref = np.log((300 * np.exp(kde.logpdf(d.T)) - self_term) / 299)
        np.testing.assert_allclose(loo[i], ref, rtol=1e-4)


# --------------------------------------------------------------------------- predictions


def test_predictions_known_answer_and_calibration(test_set, draws):
    s = jnp.broadcast_to(jnp.linspace(0.0, 1.0, 101)[None, :, None], (2, 101, 1))
    r = D.predictions(s, jnp.asarray([[0.5], [0.9]]))
    np.testing.assert_allclose(r.mean[:, 0], 0.5, atol=1e-6)
    np.testing.assert_allclose(r.std[:, 0], np.std(np.linspace(0, 1, 101), ddof=1), rtol=1e-5)
    np.testing.assert_allclose(r.lo68[:, 0], 0.16, atol=1e-6)
    np.testing.assert_allclose(r.hi95[:, 0], 0.975, atol=1e-6)
    np.testing.assert_allclose(r.rmse, [math.sqrt((0.0 + 0.4**2) / 2)], rtol=1e-5)
    np.testing.assert_allclose(r.inside68, [0.5])  # 0.9 is outside [0.16, 0.84]
    theta, _ = test_set
    ok = D.predictions(draws["exact"], theta)
    for level, frac in ((0.68, ok.inside68), (0.95, ok.inside95)):
        assert np.all(np.abs(np.asarray(frac) - level)
                      <= Z * math.sqrt(level * (1 - level) / N_TEST) + 2 / S)
    over = D.predictions(draws["overconfident"], theta)
    assert np.all(over.inside68 < 0.5)


# --------------------------------------------------------------------------- C2ST and MMD


def test_c2st_agrees_with_scikit_learn():
    """sbibm's c2st, written with scikit-learn, on a fixed case: two 2-D Gaussians 1 sd apart.
    Both are estimates of the same held-out accuracy on 2,000 draws; they agree within binomial
    noise (each has sd <= sqrt(0.25 / 2000))."""
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    p = rng.normal(size=(1000, 2)).astype(np.float32)
    q = (rng.normal(size=(1000, 2)) + np.array([1.0, 0.0])).astype(np.float32)
    mu, sd = p.mean(0), p.std(0, ddof=1)
    data = np.concatenate([(p - mu) / sd, (q - mu) / sd])
    target = np.concatenate([np.zeros(1000), np.ones(1000)])
    clf = MLPClassifier(activation="relu", hidden_layer_sizes=(20, 20), max_iter=10000,
                        solver="adam", random_state=1)
    sk = cross_val_score(clf, data, target, cv=KFold(5, shuffle=True, random_state=1),
                         scoring="accuracy").mean()
    ours = float(D.c2st(jax.random.key(10), p, q).accuracy)
    bayes = stats.norm.cdf(0.5)  # best possible accuracy: Phi(delta / 2)
    assert abs(ours - sk) < Z * math.sqrt(2 * 0.25 / 2000), (ours, sk)
    assert abs(ours - bayes) < 0.04 and ours > 0.55


def _mmd_reference(p, q, h):
    """Unbiased MMD^2 by explicit double loops (an independent implementation)."""
    def k(a, b):
        return math.exp(-float(np.sum((a - b) ** 2)) / (2 * h * h))

    m, n = len(p), len(q)
    kpp = sum(k(p[i], p[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kqq = sum(k(q[i], q[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kpq = sum(k(p[i], q[j]) for i in range(m) for j in range(n)) / (m * n)
    return kpp + kqq - 2 * kpq


def test_mmd_known_answers():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(12, 2))
    q = rng.normal(size=(9, 2)) + 0.7
    np.testing.assert_allclose(D.mmd(p, q, bandwidth=0.8), _mmd_reference(p, q, 0.8), rtol=1e-4)
    pooled = np.concatenate([p, q])
    dist_ = np.sqrt(((pooled[:, None] - pooled[None]) ** 2).sum(-1))
    h = np.median(dist_[np.triu_indices(len(pooled), 1)])
    np.testing.assert_allclose(D.mmd(p, q), _mmd_reference(p, q, h), rtol=1e-3)
    # same distribution: mean over 40 replicates within Z standard errors of 0
    keys = jax.random.split(jax.random.key(11), 2)
    a = jax.random.normal(keys[0], (40, 200, 2))
    b = jax.random.normal(keys[1], (40, 200, 2))
    same = np.asarray(D.mmd(a, b))
    assert same.shape == (40,)
    assert abs(same.mean()) < Z * same.std(ddof=1) / math.sqrt(40)
    shifted = np.asarray(D.mmd(a, b + 1.0))
    assert shifted.min() > same.max() + 10 * same.std()
    np.testing.assert_allclose(D.mmd(a[3], b[3]), same[3], rtol=1e-5)  # batch == single
    with pytest.raises(ValueError, match="samples_q"):
        D.mmd(a[0], b[0, :, :1])
    with pytest.raises(ValueError, match="at least 2"):
        D.mmd(a[0, :1], b[0])


@pytest.mark.parametrize(
    ("bandwidth", "match"),
    [
        # h = inf makes every kernel value 1 and MMD^2 = 0 ("same distribution")
        (float("inf"), r"Expected bandwidth to be a finite float > 0; got inf"),
        (float("nan"), r"Expected bandwidth to be a finite float > 0; got nan"),
        (0.0, r"Expected bandwidth to be a finite float > 0; got 0\.0"),
        (-1.0, r"Expected bandwidth to be a finite float > 0; got -1\.0"),
        (True, r"Expected bandwidth to be a finite float > 0; got True"),
        ("1", r"Expected bandwidth to be a finite float > 0; got '1'"),
    ],
)
def test_mmd_bad_bandwidth_names_the_field(bandwidth, match):
    p, q = np.zeros((5, 2)), np.ones((4, 2))
    with pytest.raises(ValueError, match=match):
        D.mmd(p, q, bandwidth=bandwidth)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_mmd_non_finite_draws_name_the_set(bad):
    rng = np.random.default_rng(2)
    p, q = rng.normal(size=(6, 2)), rng.normal(size=(5, 2))
    q[[1, 3], 0] = bad
    with pytest.raises(ValueError, match=r"Expected finite values in samples_q; got 2 rows"):
        D.mmd(p, q)
    with pytest.raises(ValueError, match=r"Expected finite values in samples_p; got 1 rows"):
        D.mmd(np.where(np.arange(6)[:, None] == 0, bad, p), p)
    # a numpy scalar bandwidth is valid and gives the float's answer
    np.testing.assert_allclose(D.mmd(p, p[::-1], bandwidth=np.float32(0.8)),
                               D.mmd(p, p[::-1], bandwidth=0.8), rtol=1e-6)


# --------------------------------------------------------------------------- predictive


def test_posterior_predictive_known_answer_and_kinds():
    draws = jnp.linspace(-1.0, 1.0, 200)[:, None]  # (m, 1)

    def sim(key, theta):  # deterministic: x = (theta, 2 theta)
        return jnp.concatenate([theta, 2 * theta])

    r = D.posterior_predictive(jax.random.key(0), None, sim, jnp.asarray([0.5, 5.0]),
                               samples=draws)
    below = np.mean(np.linspace(-1, 1, 200) <= 0.5)
    np.testing.assert_allclose(r.pvalue, [2 * (1 - below), 0.0], atol=1e-6)
    assert r.x_pred.shape == (200, 2) and float(r.zscore[1]) > 3
    r_np = D.posterior_predictive(jax.random.key(0), None,
                                  lambda th: np.concatenate([th, 2 * th], axis=1),
                                  jnp.asarray([0.5, 5.0]), samples=draws, kind="numpy")
    np.testing.assert_allclose(r_np.pvalue, r.pvalue)
    with pytest.raises(ValueError, match="dimension"):
        D.posterior_predictive(jax.random.key(0), None, sim, jnp.zeros(3), samples=draws)


def test_posterior_predictive_batch_of_observations(test_set):
    theta, x = test_set
    post = ilijax.tasks.ExactPosterior(TASK)
    r = D.posterior_predictive(jax.random.key(12), post, TASK.simulator, x[:50],
                               num_samples=300)
    assert r.x_pred.shape == (50, 300, DIM) and r.pvalue.shape == (50, DIM)
    # data simulated from the model are not extreme: few tiny p-values (the check is
    # conservative, so fewer than the nominal 1%)
    assert float(jnp.mean(r.pvalue < 0.01)) < 0.01 + Z * math.sqrt(0.01 * 0.99 / 150)
    far = D.posterior_predictive(jax.random.key(12), post, TASK.simulator, x[:5] + 3.0,
                                 num_samples=300)
    assert float(jnp.mean(far.pvalue < 0.01)) > 0.9


# --------------------------------------------------------------------------- ExactPosterior


def test_exact_posterior_broadcasting_and_unnormalised_density():
    post = ilijax.tasks.ExactPosterior(TASK)
    x = jnp.zeros((4, DIM))
    th = jnp.ones((4, 5, DIM)) * 0.1
    lp = post.log_prob(th, x)
    assert lp.shape == (4, 5) and post.normalized
    np.testing.assert_allclose(lp[2, 3], TASK.posterior(x[2]).log_prob(th[2, 3]), rtol=1e-6)
    assert post.log_prob(th[:, 0], x).shape == (4,)
    assert post.log_prob(th[0], x[0]).shape == (5,)
    # two_moons has no closed-form posterior: the density is likelihood x prior, unnormalised,
    # which still ranks draws exactly, so HPD coverage of its exact draws is calibrated
    moons = ilijax.tasks.two_moons()
    ref = ilijax.tasks.ExactPosterior(moons)
    assert not ref.normalized
    n = 300
    kt, kx, ks = jax.random.split(jax.random.key(13), 3)
    theta = moons.prior.sample(kt, (n,))
    x = jax.vmap(moons.simulator)(jax.random.split(kx, n), theta)
    draws = D.sample_test_set(ks, ref, x, 200)
    cov = D.expected_coverage(ks, draws, theta, posterior=ref, x=x)
    assert cov.method == "exact" and cov.ks_pvalue > P_MIN
    levels = np.asarray(cov.levels)
    inner = (levels > 0) & (levels < 1)
    sd = np.sqrt(levels * (1 - levels) / n)
    assert np.all(np.abs(np.asarray(cov.empirical) - levels)[inner]
                  <= Z * sd[inner] + 1 / 201 + 1e-6)
    with pytest.raises(ValueError, match="exact posterior draws"):
        ilijax.tasks.ExactPosterior(ilijax.tasks.slcp())
