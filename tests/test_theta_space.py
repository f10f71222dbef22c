"""NPE in theta space: a flow over theta truncated to the prior support by rejection, its
log_prob normalised by a Monte Carlo estimate of the in-support mass (issue 14, item 2)."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import ilijax
from ilijax.estimators import Estimator, on_support
from ilijax.estimators._support import support_mass, truncated_to_support, truncation_parts
from ilijax.posterior import SPACES, Group, Posterior, trace_counts
from ilijax.priors import support_bijector

BOX = ilijax.priors.uniform([0.0, 0.0], [1.0, 1.0])
NOISE = 0.3
# Near the corner (1, 0): the posterior, about N(x, 0.3^2) on the box, is cut by two edges.
X_CORNER = jnp.asarray([0.97, 0.03])
LEGACY = Path(__file__).parent / "data" / "legacy_v1"


def box_simulator(key, theta):
    return theta + NOISE * jax.random.normal(key, theta.shape)


@pytest.fixture(scope="module")
def trained():
    """A theta-space NPE posterior, trained a few epochs (its quality does not matter here:
    the truncation must hold for any flow)."""
    data = ilijax.simulate(jax.random.key(0), BOX, box_simulator, 1000, progress=False)
    post, _ = ilijax.npe(jax.random.key(1), data.theta, data.x, prior=BOX, space="theta",
                         estimator=ilijax.estimators.maf(hidden=8, transforms=2),
                         max_epochs=8, batch_size=100, progress=False)
    return post, data


def midpoint_grid(num: int):
    """Cell centres of a ``num x num`` grid on the unit box and the cell area."""
    c = (np.arange(num) + 0.5) / num
    g = np.stack(np.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
    return g.astype(np.float32), 1.0 / num ** 2


def box_integrals(log_density, num: int = 200):
    """Midpoint-rule integrals of ``exp(log_density)`` over the box on a ``num`` and a
    ``num / 2`` grid (one evaluation of both grids), and an error allowance for the finer one.

    The midpoint rule's error is ``C h^2`` for a smooth integrand, so ``I_h - I_2h ~ -3 C h^2``
    and the error of ``I_h`` is about ``|I_h - I_2h| / 3``; the allowance is twice
    ``|I_h - I_2h|`` (six times that estimate) plus 1e-4 for float32 rounding of the
    log-densities. Sums are in float64.
    """
    fine, a_fine = midpoint_grid(num)
    coarse, a_coarse = midpoint_grid(num // 2)
    lp = np.asarray(log_density(jnp.asarray(np.concatenate([fine, coarse]))), np.float64)
    i_fine = np.exp(lp[:len(fine)]).sum() * a_fine
    i_coarse = np.exp(lp[len(fine):]).sum() * a_coarse
    return i_fine, 2 * abs(i_fine - i_coarse) + 1e-4


def member0(post):
    bundle = post.groups[0].estimator
    return bundle, jax.tree.map(lambda a: a[0], post.groups[0].params)


# ----------------------------------------------------------------------- trained posterior
# Every call below uses the same shapes (X3 and N draws; theta paired with X3), so each
# compiled program is built once for the whole file.

X3 = jnp.asarray([[0.97, 0.03], [0.5, 0.5], [1.1, -0.1]])  # corner, centre, outside
N = 1000


def test_draws_never_leave_the_box(trained):
    post, _ = trained
    draws, info = post.sample(jax.random.key(2), X3, N, return_info=True)
    draws = np.asarray(draws)
    assert draws.shape == (3, N, 2)
    assert not np.isnan(draws).any()
    assert np.all((draws >= 0.0) & (draws <= 1.0))
    # The flow itself leaks at the corner, so the rejection had work to do (the check can
    # fail), and the accepted fraction reported is the estimated mass.
    mass, _ = post.support_mass(X3)
    assert float(mass[0]) < 0.97
    np.testing.assert_array_equal(info.stats["accepted_fraction"], np.asarray(mass))


def test_log_prob_integrates_to_one_over_the_box_and_the_raw_flow_does_not(trained):
    post, _ = trained
    bundle, params = member0(post)
    mass, se = post.support_mass(X3)
    mass, se = float(mass[0]), float(se[0])
    got, quad = box_integrals(lambda g: post.log_prob(g, X_CORNER))
    # exp(log_prob) integrates to Z / Z_hat. Z_hat is within 4 of its standard errors of Z, so
    # |Z / Z_hat - 1| <= 4 se / Z_hat; plus the grid's allowance (box_integrals).
    bound = 4 * se / mass + quad
    assert abs(got - 1.0) < bound, (got, bound)
    # Negative control: the same flow without the normalisation (its raw log_prob) holds only
    # the in-support mass, clearly not 1 on this cut case: the test above can fail.
    core = truncation_parts(bundle).core
    raw, quad_raw = box_integrals(
        jax.jit(jax.vmap(lambda t: core.log_prob(params, t, X_CORNER))))
    assert abs(raw - 1.0) > bound + quad_raw, (raw, bound)
    # ... and what it holds is the mass support_mass estimates: an independent estimate with
    # 16x the draws agrees with the grid within 4 standard errors plus the grid's allowance.
    ref, ref_se = support_mass(bundle, params, X_CORNER, num_draws=1 << 16,
                               key=jax.random.key(7))
    assert abs(raw - float(ref)) < 4 * float(ref_se) + quad_raw, (raw, ref)


def test_sampler_under_jit_with_the_posterior_as_argument_does_not_retrace(trained, tmp_path):
    post, data = trained
    # A second posterior of the same structure: rebuilt from a file (new bundle objects) with
    # moved params.
    ilijax.save(post, tmp_path / "p")
    other = jax.tree.map(lambda a: a * 1.01, ilijax.load(tmp_path / "p"))
    traces = []

    @jax.jit
    def draw(p, key, x):
        traces.append(1)  # runs only while tracing
        return p.sample(key, x, N)

    a = np.asarray(draw(post, jax.random.key(3), X3))
    b = np.asarray(draw(other, jax.random.key(3), X3))
    assert len(traces) == 1
    for d in (a, b):
        assert not np.isnan(d).any() and np.all((d >= 0) & (d <= 1))
    assert not np.allclose(a, b)  # different params, one program
    # One member: inside jit the draws are those of the eager call, key for key.
    np.testing.assert_allclose(a, post.sample(jax.random.key(3), X3, N), rtol=1e-6, atol=1e-6)
    # Eager sampling and log_prob of the second posterior trace nothing new either.
    theta = data.theta[:3]
    post.log_prob(theta, X3)
    before = trace_counts()
    other.sample(jax.random.key(4), X3, N)
    other.log_prob(theta, X3)
    other.support_mass(X3)
    assert trace_counts() == before


def test_save_load_round_trip_keeps_theta_space_and_log_prob(trained, tmp_path):
    post, data = trained
    path = ilijax.save(post, tmp_path / "theta")
    spec = json.loads(np.load(path)["__spec__"].tobytes().decode())
    assert spec["space"] == "theta"
    loaded = ilijax.load(path)
    assert loaded.space == "theta" and "space='theta'" in repr(loaded)
    theta = data.theta[:3]
    np.testing.assert_array_equal(loaded.log_prob(theta, X3), post.log_prob(theta, X3))
    np.testing.assert_array_equal(loaded.sample(jax.random.key(5), X3, N),
                                  post.sample(jax.random.key(5), X3, N))
    # The same params in the unconstrained space are another structure (no shared programs).
    unc = Posterior([Group(on_support(truncation_parts(g.estimator).core,
                                      support_bijector(BOX)), g.params, g.spec)
                     for g in post.groups], post.weights, BOX, x_dim=2)
    assert unc.space == "unconstrained"
    assert jax.tree.structure(unc) != jax.tree.structure(post)
    # Files written before the field existed load as unconstrained.
    legacy = ilijax.load(LEGACY / "npe_nsf")
    assert legacy.space == "unconstrained"
    assert truncation_parts(legacy.groups[0].estimator) is None


# ----------------------------------------------------------------------- exact truncated Gaussian

SCALE = np.array([0.3, 0.2], np.float32)


def gaussian_core() -> Estimator:
    """An exact Gaussian ``N(context, diag(SCALE^2))`` as a bundle (no network, no training)."""

    def init(key, theta, context):
        del key, theta, context
        return {"log_scale": jnp.log(jnp.asarray(SCALE))}

    def log_prob(params, theta, context):
        return jnp.sum(jax.scipy.stats.norm.logpdf(theta, context, jnp.exp(params["log_scale"])))

    def sample(params, key, context):
        return context + jnp.exp(params["log_scale"]) * jax.random.normal(key, context.shape)

    return Estimator(init, log_prob, sample, None)


def exact_mass(x):
    x = np.asarray(x, np.float64)
    return float(np.prod(stats.norm.cdf((1 - x) / SCALE) - stats.norm.cdf(-x / SCALE)))


def gaussian_posterior():
    # A smaller cap than the default 512 iterations: the observation far outside the box runs
    # the loop to the cap, which is the test's cost.
    bundle = truncated_to_support(gaussian_core(), BOX, max_iterations=64)
    params = jax.tree.map(lambda a: a[None], bundle.init(None, None, None))
    return Posterior([Group(bundle, params, None)], [1.0], BOX, x_dim=2, space="theta"), bundle


def test_truncated_gaussian_mass_and_density_match_the_exact_ones():
    post, bundle = gaussian_posterior()
    params = bundle.init(None, None, None)
    for x in ([0.9, 0.1], [0.5, 0.5], [1.2, -0.1]):
        x = jnp.asarray(x)
        exact = exact_mass(x)
        mass, se = support_mass(bundle, params, x)
        assert abs(float(mass) - exact) < 4 * float(se), (x, mass, exact)
        # log_prob is the analytic truncated density up to log(Z / Z_hat), which is within
        # the mass's error (4 se / Z_hat, plus float32 rounding).
        theta = jnp.asarray([[0.5, 0.5], [0.95, 0.02], [0.1, 0.9]])
        want = np.sum(stats.norm.logpdf(np.asarray(theta), np.asarray(x), SCALE), -1)
        want = want - np.log(exact)
        got = np.asarray(post.log_prob(theta, x))
        np.testing.assert_allclose(got, want, atol=4 * float(se) / float(mass) + 1e-5)
        # The Posterior's mass is the member's (one member).
        pm, pse = post.support_mass(x)
        assert float(pm) == float(mass) and float(pse) == float(se)
    # Outside the box: -inf (also for a point on no side of it).
    out = post.log_prob(jnp.asarray([[1.01, 0.5], [0.5, -1e-3], [np.inf, 0.5]]), jnp.zeros(2))
    assert np.all(np.asarray(out) == -np.inf)


def test_truncated_gaussian_draws_are_the_truncated_normal_or_nan_far_outside():
    post, _ = gaussian_posterior()
    x = jnp.asarray([[0.9, 0.1], [5.0, 5.0]])  # cut by the box; far outside it
    n = 5000
    with pytest.warns(UserWarning) as record:
        draws = post.sample(jax.random.key(6), x, n)
    messages = [str(r.message) for r in record]
    assert any("of the flow's mass lies in the prior support for observations [1]" in m
               for m in messages), messages
    assert any("draws are NaN for observations [1]" in m for m in messages), messages
    draws = np.asarray(draws)
    # Far outside: NaN (the documented give-up), never a point outside the box.
    assert np.isnan(draws[1]).all()
    assert not np.isnan(draws[0]).any() and np.all((draws[0] >= 0) & (draws[0] <= 1))
    lo, hi = (0 - np.asarray(x[0])) / SCALE, (1 - np.asarray(x[0])) / SCALE
    exact = stats.truncnorm(lo, hi, loc=np.asarray(x[0]), scale=SCALE)
    z = np.abs(draws[0].mean(0) - exact.mean()) / (exact.std() / np.sqrt(n))
    assert np.all(z < 4), z
    frac, se = post.support_mass(x)  # the estimate the warning reports
    assert abs(float(frac[0]) - exact_mass(x[0])) < 4 * float(se[0])
    assert float(frac[1]) == 0.0
    # No warning where the mass is large (warnings are errors in this suite).
    post.sample(jax.random.key(9), jnp.asarray([[0.9, 0.1], [0.5, 0.5]]), n)


def test_batch_rejection_and_per_draw_rejection_both_draw_the_truncated_normal():
    # The Posterior draws with sample_many (blocks of candidates written into a buffer); the
    # bundle's own sample rejects per draw. Both must be the exact truncated normal.
    _, bundle = gaussian_posterior()
    parts = truncation_parts(bundle)
    params = bundle.init(None, None, None)
    x = jnp.asarray([0.9, 0.1])
    n = 3000
    many = np.asarray(jax.jit(parts.sample_many, static_argnums=3)(
        params, jax.random.key(11), x, n))
    one = np.asarray(jax.jit(jax.vmap(bundle.sample, in_axes=(None, 0, None)))(
        params, jax.random.split(jax.random.key(12), n), x))
    lo, hi = (0 - np.asarray(x)) / SCALE, (1 - np.asarray(x)) / SCALE
    for draws in (many, one):
        assert draws.shape == (n, 2) and not np.isnan(draws).any()
        for j in range(2):
            exact = stats.truncnorm(lo[j], hi[j], loc=float(x[j]), scale=float(SCALE[j]))
            assert stats.kstest(draws[:, j], exact.cdf).pvalue > 1e-3
    # A budget too small for the request leaves the tail of the buffer NaN, never a point
    # outside the box: a budget of 1 candidate per draw (n candidates, in 4 blocks of n / 4) at
    # a mass of about 0.43 fills a Binomial(n, mass) share of it, in front.
    tight = truncation_parts(truncated_to_support(gaussian_core(), BOX, num_candidates=1,
                                                  max_iterations=1))
    part = np.asarray(tight.sample_many(params, jax.random.key(13), x, n))
    filled = ~np.isnan(part).any(-1)
    k = int(filled.sum())
    mass = exact_mass(x)
    assert abs(k - n * mass) < 4 * np.sqrt(n * mass * (1 - mass)), (k, n * mass)
    assert filled[:k].all() and not filled[k:].any()  # accepted draws fill the front
    assert np.all((part[:k] >= 0) & (part[:k] <= 1))


def test_mcmc_on_a_theta_space_posterior_targets_the_truncated_density():
    post, _ = gaussian_posterior()
    x = jnp.asarray([0.9, 0.1])
    n = 4000
    draws, info = post.sample(jax.random.key(8), x, n, method="mala", num_chains=4,
                              num_warmup=500, return_info=True)
    draws = np.asarray(draws)
    assert np.all((draws >= 0) & (draws <= 1))
    lo, hi = (0 - np.asarray(x)) / SCALE, (1 - np.asarray(x)) / SCALE
    exact = stats.truncnorm(lo, hi, loc=np.asarray(x), scale=SCALE)
    # MCSE z-test with the chains' own effective sample size.
    z = np.abs(draws.mean(0) - exact.mean()) / (draws.std(0) / np.sqrt(info.ess))
    assert np.all(z < 4), (z, info.ess)


# ----------------------------------------------------------------------- options

def test_space_is_checked_everywhere():
    post, bundle = gaussian_posterior()
    params = post.groups[0].params
    with pytest.raises(ValueError, match=r"Expected space in \('unconstrained', 'theta'\); "
                                         r"got 'x'"):
        Posterior(post.groups, [1.0], BOX, x_dim=2, space="x")
    with pytest.raises(ValueError, match="truncated_to_support; groups \\[0\\]"):
        Posterior([Group(gaussian_core(), params, None)], [1.0], BOX, x_dim=2, space="theta")
    with pytest.raises(ValueError, match="space='unconstrained' for method='nle'"):
        Posterior(post.groups, [1.0], BOX, x_dim=2, method="nle", space="theta")
    with pytest.raises(ValueError, match=r"Expected space in .*; got 'theta-space'"):
        ilijax.sequential(jax.random.key(0), box_simulator, BOX, X_CORNER, space="theta-space")
    with pytest.raises(ValueError, match="space='unconstrained' or 'auto' for method='nle'"):
        ilijax.sequential(jax.random.key(0), box_simulator, BOX, X_CORNER, method="nle",
                          space="theta")
    with pytest.raises(ValueError, match=r"Expected space in \('auto', 'unconstrained', "
                                         r"'theta'\); got 'Theta'"):
        ilijax.npe(jax.random.key(0), np.zeros((10, 2)), np.zeros((10, 2)), prior=BOX,
                   space="Theta")
    with pytest.raises(ValueError, match="num_draws"):
        support_mass(bundle, params, X_CORNER, num_draws=0)
    with pytest.raises(ValueError, match="max_iterations"):
        truncated_to_support(gaussian_core(), BOX, max_iterations=0)


def test_auto_space_is_theta_for_bounded_priors_and_unconstrained_elsewhere():
    from numpyro import distributions as dist

    from ilijax.posterior import resolve_space

    bounded = [BOX, ilijax.priors.log_uniform([1.0], [10.0]),
               ilijax.priors.truncated_normal([0.0], [1.0], [-1.0], [2.0]),
               ilijax.priors.independent([dist.Normal(0.0, 1.0), dist.Uniform(0.0, 1.0)]),
               dist.HalfNormal(jnp.ones(2)).to_event(1)]
    unbounded = [ilijax.priors.normal([0.0, 0.0], [1.0, 1.0]),
                 ilijax.priors.multivariate_normal([0.0, 0.0], np.eye(2))]
    for prior in bounded:
        assert resolve_space("auto", prior) == "theta", prior
        assert resolve_space("auto", prior, "nle") == "unconstrained"
    for prior in unbounded:
        assert resolve_space("auto", prior) == "unconstrained", prior
    for space in SPACES:
        assert resolve_space(space, BOX) == space
    assert ilijax.npe.__kwdefaults__["space"] == "auto"


@pytest.mark.slow
def test_sequential_npe_passes_space_through():
    # Round 2 draws its 200 proposals by rejection from round 1's theta-space posterior and
    # trains the APT loss on the bare flow.
    post, infos = ilijax.sequential(
        jax.random.key(10), box_simulator, BOX, X_CORNER, rounds=2,
        simulations_per_round=200, estimator=ilijax.estimators.mdn(components=2, hidden=8),
        space="theta", max_epochs=2, batch_size=100, progress=False)
    assert post.space == "theta" and [i.proposal for i in infos] == ["prior", "posterior"]
    draws = np.asarray(post.sample(jax.random.key(11), X_CORNER, 200))  # round 2's program
    assert not np.isnan(draws).any() and np.all((draws >= 0) & (draws <= 1))
