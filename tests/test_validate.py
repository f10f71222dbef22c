"""``validate``: files that load back, one vectorised pass over the test set, clear errors."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import ilijax
from ilijax import diagnostics as D

TASK = ilijax.tasks.gaussian_linear(dim=2)


def make_test_set(n, seed=0):
    kt, kx = jax.random.split(jax.random.key(seed))
    theta = TASK.prior.sample(kt, (n,))
    x = jax.vmap(TASK.simulator)(jax.random.split(kx, n), theta)
    return theta, x


class Counting:
    """The exact posterior, counting calls from Python and traces of its per-pair density."""

    def __init__(self):
        self.inner = ilijax.tasks.ExactPosterior(TASK)
        self.labels = ("a", "b")
        self.normalized = True
        self.sample_calls = self.log_prob_calls = self.traces = 0

        def one(theta, x):
            self.traces += 1  # runs once per trace, never per observation
            return TASK.posterior(x).log_prob(theta)

        self._pairs = jax.jit(jax.vmap(one))
        self._sets = jax.jit(jax.vmap(jax.vmap(one, (0, None))))

    def sample(self, key, x, n):
        self.sample_calls += 1
        return self.inner.sample(key, x, n)

    def log_prob(self, theta, x):
        self.log_prob_calls += 1
        return self._sets(theta, x) if theta.ndim == 3 else self._pairs(theta, x)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("validation")
    theta, x = make_test_set(300)
    ref = jax.vmap(lambda k, xi: TASK.sample_posterior(k, xi, 200))(
        jax.random.split(jax.random.key(5), 4), x[:4])
    report = ilijax.validate(
        jax.random.key(1), Counting(), theta, x, num_samples=200, out_dir=out,
        metrics=D.report.METRICS, reference_samples=ref, simulator=TASK.simulator,
        predictive_samples=50, bootstrap=50, progress=False)
    return out, report, theta, x


def test_files_load_back_and_hold_what_was_computed(written):
    out, report, theta, x = written
    names = {"metrics.json", "samples.npy", "validation.nc", "corner.png", "coverage.png",
             "ranks.png", "tarp.png", "predictions.png", "log_prob.png", "predictive.png"}
    assert names <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    import os

    umask = os.umask(0)
    os.umask(umask)
    for name in ("metrics.json", "samples.npy", "validation.nc", "corner.png"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name  # not mkstemp's 0600

    m = json.loads((out / "metrics.json").read_text())
    assert m == json.loads(json.dumps(report.metrics))
    assert m["num_test"] == 300 and m["num_samples"] == 200 and m["labels"] == ["a", "b"]
    assert m["coverage"]["error"] == pytest.approx(report.coverage.error)
    assert m["coverage"]["method"] == "exact" and m["log_prob"]["method"] == "exact"
    assert m["tarp"]["atc"] == pytest.approx(report.tarp.atc)
    assert m["log_prob"]["mean"] == pytest.approx(report.log_prob.mean)
    np.testing.assert_allclose(list(m["sbc"]["ks_pvalue"].values()), report.sbc.ks_pvalue)
    np.testing.assert_allclose(list(m["predictions"]["rmse"].values()),
                               report.predictions.rmse, rtol=1e-6)
    assert m["c2st"]["num_observations"] == 4 and len(m["mmd"]["per_observation"]) == 4
    # The predictive p-values are those computed, and have their known distribution: the
    # posterior is exact, so x_pred ~ N(x / 2, 0.05 + 0.1) per dimension with x ~ N(0, 0.2), and
    # z = (x - x / 2) / sqrt(0.15) ~ N(0, 1/3); given z, the count k of the 50 simulations below
    # x is Binomial(50, Phi(z)) and p = min(1, 2 min(k, 50 - k) / 50). Expectations by
    # quadrature; 300 x 2 independent p-values, z-bounds of 4 sd (binomial for the fraction).
    from scipy import integrate, stats

    p = np.asarray(report.predictive.pvalue)
    assert p.shape == (300, 2)
    assert m["predictive"]["fraction_below_0.05"] == pytest.approx(np.mean(p < 0.05))
    assert m["predictive"]["mean_pvalue"] == pytest.approx(p.mean(), rel=1e-6)
    k = np.arange(51)

    def given_z(z, fn):
        return np.sum(stats.binom.pmf(k, 50, stats.norm.cdf(z)) * fn(k))

    def expect(fn):
        return integrate.quad(lambda z: given_z(z, fn) * stats.norm.pdf(z, scale=3**-0.5),
                              -8, 8)[0]

    small = expect(lambda k: np.minimum(k, 50 - k) <= 1)  # 2 min / 50 < 0.05
    mean_p = expect(lambda k: np.minimum(1.0, 2 * np.minimum(k, 50 - k) / 50))
    assert abs(np.mean(p < 0.05) - small) < 4 * np.sqrt(small * (1 - small) / p.size)
    assert abs(p.mean() - mean_p) < 4 * p.std() / np.sqrt(p.size), (p.mean(), mean_p)
    assert set(m["timings"]) >= {"samples", "sbc", "coverage", "tarp", "write"}

    np.testing.assert_array_equal(np.load(out / "samples.npy"), report.samples)
    dt = xr.open_datatree(out / "validation.nc", engine="h5netcdf")
    assert {"posterior", "observed_data", "true_parameters", "diagnostics"} <= set(dt.children)
    post = dt["posterior"]["theta"]
    assert post.dims == ("chain", "draw", "obs", "parameter")
    np.testing.assert_array_equal(post.values[0].transpose(1, 0, 2), report.samples)
    assert list(post["parameter"].values) == ["a", "b"]
    np.testing.assert_array_equal(dt["observed_data"]["x"].values, x)
    np.testing.assert_array_equal(dt["true_parameters"]["theta"].values, theta)
    np.testing.assert_array_equal(dt["diagnostics"]["rank"].values, report.sbc.ranks)
    np.testing.assert_allclose(dt["diagnostics"]["hpd_credibility"].values,
                               report.coverage.credibility)

    import matplotlib.image as mpimg

    for name in names:
        if name.endswith(".png"):
            img = mpimg.imread(out / name)
            assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, name
            assert float(img[..., :3].std()) > 0.01, f"{name} is blank"


def test_report_summary_and_calibration(written):
    _, report, _, _ = written
    text = report.summary()
    for word in ("SBC", "HPD coverage", "TARP", "C2ST", "MMD", "predictive"):
        assert word in text
    assert report.samples.shape == (300, 200, 2)
    # the exact posterior: calibrated, and C2ST at chance against exact reference draws
    assert np.all(report.sbc.ks_pvalue > 1e-3) and report.coverage.ks_pvalue > 1e-3
    acc = np.asarray(report.c2st.accuracy)
    assert abs(acc.mean() - 0.5) < 4 * np.sqrt(0.25 / (400 * 4)) + 0.05


def test_no_python_loop_over_observations():
    """Validating 1,000 observations calls the posterior as often as validating 100 (once to
    sample, twice for densities) and traces its density the same number of times."""
    calls = {}
    for n in (100, 1000):
        theta, x = make_test_set(n, seed=n)
        post = Counting()
        ilijax.validate(jax.random.key(2), post, theta, x, num_samples=100, bootstrap=20,
                        progress=False)
        calls[n] = (post.sample_calls, post.log_prob_calls, post.traces)
    assert calls[100] == calls[1000] == (1, 2, 2), calls


def test_trained_posterior_end_to_end_without_recompiling(tmp_path):
    """A real NPE posterior validated on two test sets of the same size: the second run
    compiles nothing new (the sampler and the density are traced once per test-set shape)."""
    data = ilijax.simulate(jax.random.key(3), TASK.prior, TASK.simulator, 1000, progress=False)
    post, _ = ilijax.npe(jax.random.key(4), data.theta, data.x, prior=TASK.prior,
                         estimator=ilijax.estimators.mdn(components=2, hidden=16),
                         max_epochs=5, progress=False)
    sizes = []
    for seed in (1, 2):
        theta, x = make_test_set(200, seed=10 + seed)
        rep = ilijax.validate(jax.random.key(seed), post, theta, x, num_samples=64,
                              bootstrap=20, progress=False, out_dir=tmp_path / str(seed),
                              plots=False)
        sizes.append(ilijax.posterior.trace_counts())
        assert rep.metrics["coverage"]["method"] == "exact"
        assert np.isfinite(rep.metrics["log_prob"]["mean"])
        assert (tmp_path / str(seed) / "validation.nc").exists()
    assert sizes[0] == sizes[1], sizes


def test_sample_only_posterior_uses_kde():
    theta, x = make_test_set(120)

    class SampleOnly:
        def __init__(self):
            self.inner = ilijax.tasks.ExactPosterior(TASK)

        def sample(self, key, x, n):
            return self.inner.sample(key, x, n)

    rep = ilijax.validate(jax.random.key(6), SampleOnly(), theta, x, num_samples=100,
                          bootstrap=20, progress=False)
    assert rep.coverage.method == "kde" and rep.log_prob.method == "kde"
    assert rep.metrics["labels"] == ["theta_0", "theta_1"]


def test_precomputed_samples_are_used():
    theta, x = make_test_set(50)
    s = ilijax.tasks.ExactPosterior(TASK).sample(jax.random.key(7), x, 30)
    post = Counting()
    rep = ilijax.validate(jax.random.key(8), post, theta, x, samples=s, bootstrap=0,
                          progress=False, metrics=("sbc", "predictions"))
    assert post.sample_calls == 0 and rep.coverage is None and rep.tarp is None
    np.testing.assert_array_equal(rep.samples, s)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"metrics": ("sbc", "bogus")}, "bogus"),
        ({"metrics": ("c2st",)}, "reference_samples"),
        ({"metrics": ("predictive",)}, "simulator"),
        ({"labels": ("only_one",)}, "labels"),
        ({"corner_index": 50}, "corner_index"),
        ({"samples": jnp.zeros((50, 10, 3))}, "samples"),
        ({"metrics": ("mmd",), "reference_samples": jnp.zeros((60, 10, 2))},
         "reference_samples"),
    ],
)
def test_bad_input_names_the_field(kwargs, match):
    theta, x = make_test_set(50)
    with pytest.raises(ValueError, match=match):
        ilijax.validate(jax.random.key(0), Counting(), theta, x, num_samples=10,
                        progress=False, **kwargs)


def test_mismatched_test_set():
    theta, x = make_test_set(50)
    with pytest.raises(ValueError, match="theta_test"):
        ilijax.validate(jax.random.key(0), Counting(), theta[:40], x, progress=False)
    with pytest.raises(ValueError, match="x_test"):
        ilijax.validate(jax.random.key(0), Counting(), theta, x[0], progress=False)
