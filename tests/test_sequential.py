"""Sequential (multi-round) inference: the APT loss, SNPE on two moons, NaN rows, bad input."""

import importlib
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import ilijax
from ilijax.data import Dataset
from ilijax.estimators import maf, mdn
from ilijax.estimators._base import Estimator
from ilijax.estimators.classifier import classifier
from ilijax.inference.npe import npe_loss
from ilijax.inference.sequential import apt_loss, atom_indices, sequential
from ilijax.priors import normal

# The module itself (ilijax.inference.sequential is also the name of the function it exports).
sequential_module = importlib.import_module("ilijax.inference.sequential")

# ----------------------------------------------------------------------------- the APT loss


def gaussian_bundle():
    """q(theta | x) = N(theta; a x, s^2) in one dimension, params {"a", "log_s"}."""

    def log_prob(params, theta, x):
        s = jnp.exp(params["log_s"])
        return jnp.sum(jax.scipy.stats.norm.logpdf(theta, params["a"] * x, s))

    def sample(params, key, x):
        return params["a"] * x + jnp.exp(params["log_s"]) * jax.random.normal(key, x.shape)

    return Estimator(lambda key, theta, x: {}, log_prob, sample)


TINY = Dataset(theta=jnp.array([[0.3], [-1.2], [0.8], [2.0]], jnp.float32),
               x=jnp.array([[0.5], [-0.7], [1.1], [1.6]], jnp.float32))
TINY_PARAMS = {"a": jnp.float32(0.9), "log_s": jnp.float32(np.log(0.6))}


def hand_apt(idx):
    """The APT loss of the tiny example, one row and one atom at a time (float64)."""
    theta, x = np.asarray(TINY.theta, np.float64)[:, 0], np.asarray(TINY.x, np.float64)[:, 0]
    total = 0.0
    for i, atoms in enumerate(np.asarray(idx)):
        ratios = [stats.norm.pdf(theta[j], 0.9 * x[i], 0.6) / stats.norm.pdf(theta[j], 0.0, 1.5)
                  for j in atoms]
        total += -np.log(ratios[0] / np.sum(ratios))
    return total / len(idx)


def test_apt_loss_equals_hand_computation():
    prior = normal(jnp.zeros(1), 1.5)
    est = gaussian_bundle()
    # Every row of the batch is an atom: no randomness, any key gives the hand value.
    loss = jax.jit(apt_loss(est, prior, num_atoms=4))
    everything = np.array([np.roll(np.arange(4), -i) for i in range(4)])  # row i first
    for k in range(2):
        value = float(loss(TINY_PARAMS, TINY, jax.random.key(k)))
        np.testing.assert_allclose(value, hand_apt(everything), rtol=1e-5)
    # More atoms than rows: clipped to the rows.
    value = float(jax.jit(apt_loss(est, prior, num_atoms=10))(TINY_PARAMS, TINY,
                                                              jax.random.key(0)))
    np.testing.assert_allclose(value, hand_apt(everything), rtol=1e-5)
    # Two atoms: the row and one other row, drawn with the loss key.
    key = jax.random.key(3)
    idx = atom_indices(key, 4, 2)
    np.testing.assert_array_equal(np.asarray(idx[:, 0]), np.arange(4))
    assert np.all(np.asarray(idx[:, 1]) != np.arange(4))
    value = float(jax.jit(apt_loss(est, prior, num_atoms=2))(TINY_PARAMS, TINY, key))
    np.testing.assert_allclose(value, hand_apt(idx), rtol=1e-5)
    # One atom: the ratio is 1 / 1.
    assert float(jax.jit(apt_loss(est, prior, num_atoms=1))(TINY_PARAMS, TINY, key)) == 0.0


def test_atoms_are_distinct_other_rows_drawn_uniformly():
    n, m, reps = 7, 4, 4000
    idx = np.asarray(jax.jit(jax.vmap(lambda k: atom_indices(k, n, m)))(
        jax.random.split(jax.random.key(0), reps)))  # (reps, n, m)
    assert idx.shape == (reps, n, m)
    np.testing.assert_array_equal(idx[:, :, 0], np.broadcast_to(np.arange(n), (reps, n)))
    assert all(len(set(row)) == m for row in idx.reshape(-1, m))
    # Each other row is among a row's m - 1 contrasting atoms with probability (m-1)/(n-1).
    p = (m - 1) / (n - 1)
    for i in range(n):
        hits = np.array([(idx[:, i, 1:] == j).any(axis=1).mean() for j in range(n) if j != i])
        assert np.all(np.abs(hits - p) < 4 * np.sqrt(p * (1 - p) / reps)), (i, hits)


def exact_posterior_bundle(prior_var, noise_var):
    """The exact Gaussian posterior of gaussian_linear for a N(0, prior_var) prior."""
    post_var = 1.0 / (1.0 / prior_var + 1.0 / noise_var)

    def log_prob(params, theta, x):
        del params
        return jnp.sum(jax.scipy.stats.norm.logpdf(theta, x * post_var / noise_var,
                                                   np.sqrt(post_var)))

    return Estimator(lambda key, theta, x: {}, log_prob, lambda p, k, x: x)


def test_apt_loss_of_exact_posterior_is_the_likelihood_classifier():
    # q = exact posterior, p = prior: q(theta|x) / p(theta) = p(x|theta) / p(x), and p(x)
    # cancels between numerator and denominator (Greenberg et al. 2019, Eq. 6).
    task = ilijax.tasks.gaussian_linear(dim=2)
    data = ilijax.simulate(jax.random.key(0), task.prior, task.simulator, 32, progress=False)
    lik = jax.jit(jax.vmap(jax.vmap(task.log_likelihood, (0, None)), (None, 0)))(
        data.theta, data.x)  # lik[i, j] = log p(x_i | theta_j)
    lik = np.asarray(lik, np.float64)
    expected = np.mean(-np.diag(lik) + np.log(np.exp(lik).sum(axis=1)))
    loss = jax.jit(apt_loss(exact_posterior_bundle(0.1, 0.1), task.prior, num_atoms=32))
    np.testing.assert_allclose(float(loss(None, data, jax.random.key(1))), expected, rtol=1e-4)


def test_apt_prefers_the_posterior_where_maximum_likelihood_learns_the_proposal():
    # theta from a narrow shifted proposal: maximum likelihood (npe_loss) prefers the proposal
    # posterior q_prop(theta|x) ~ p(x|theta) p_prop(theta); APT prefers the true posterior
    # (Greenberg et al. 2019, Prop. 1). Paired losses over many minibatches, 4-sigma bounds.
    task = ilijax.tasks.gaussian_linear(dim=2)
    prop_mean, prop_var = 0.2, 0.02
    true_post = exact_posterior_bundle(0.1, 0.1)
    prop_post_var = 1.0 / (1.0 / prop_var + 1.0 / 0.1)

    def prop_log_prob(params, theta, x):
        del params
        mean = prop_post_var * (prop_mean / prop_var + x / 0.1)
        return jnp.sum(jax.scipy.stats.norm.logpdf(theta, mean, np.sqrt(prop_post_var)))

    prop_post = Estimator(lambda key, theta, x: {}, prop_log_prob, lambda p, k, x: x)

    def batch(key):
        k_theta, k_x = jax.random.split(key)
        theta = prop_mean + np.sqrt(prop_var) * jax.random.normal(k_theta, (50, 2))
        x = jax.vmap(task.simulator)(jax.random.split(k_x, 50), theta)
        return Dataset(theta, x)

    keys = jax.random.split(jax.random.key(0), 400)
    data = jax.jit(jax.vmap(batch))(keys)

    def paired(make_loss):
        a, b = make_loss(true_post), make_loss(prop_post)
        diff = jax.jit(jax.vmap(lambda d, k: a(None, d, k) - b(None, d, k)))(data, keys)
        diff = np.asarray(diff, np.float64)
        return diff.mean(), diff.std(ddof=1) / np.sqrt(diff.size)

    mean, se = paired(lambda e: apt_loss(e, task.prior, num_atoms=10))
    assert mean + 4 * se < 0, (mean, se)
    mean, se = paired(npe_loss)
    assert mean - 4 * se > 0, (mean, se)


# ----------------------------------------------------------------------------- SNPE end to end

MOONS_THETA = jnp.array([0.3, -0.2])  # a point with a two-crescent posterior
MOONS_FIT = dict(estimator=maf(hidden=32, transforms=3), batch_size=50, patience=None,
                 shard=False, progress=False)


@pytest.mark.slow
def test_snpe_rounds_focus_the_simulations_and_keep_the_posterior_with_the_same_budget():
    """SNPE (APT) with 3 rounds of 500 against one round of 1,500 simulations.

    Measured over keys 1-4 (8,000 draws each, share of draws within 0.05 of the exact
    posterior): before the standardisation statistics were frozen, one round 0.56-0.70 and
    three rounds 0.66-0.77; since, one round 0.68-0.79 and three rounds 0.69-0.81. Three rounds
    no longer win on every key (key 4: 0.69 against 0.79), so what is asserted is what APT
    guarantees: the later rounds simulate where the posterior is (their parameters are
    posterior draws), and the final posterior is as good as one round's within the Monte Carlo
    error of the check plus 0.1 for the network (the spread over keys).
    """
    task = ilijax.tasks.two_moons()
    x_obs = task.simulator(jax.random.key(0), MOONS_THETA)
    # Same simulations (1,500) and the same number of gradient steps (1,350 training rows x 60
    # epochs = 450 x 30 + 900 x 30 + 1,350 x 30).
    one, info1 = sequential(jax.random.key(1), task.simulator, task.prior, x_obs, rounds=1,
                            simulations_per_round=1500, max_epochs=60, **MOONS_FIT)
    states = []
    three, info3 = sequential(jax.random.key(1), task.simulator, task.prior, x_obs, rounds=3,
                              simulations_per_round=500, max_epochs=30, on_round=states.append,
                              **MOONS_FIT)
    assert [i.proposal for i in info3] == ["prior", "posterior", "posterior"]
    assert [i.round for i in info3] == [1, 2, 3]
    assert [i.num_kept for i in info3] == [500] * 3 and info1[0].num_simulations == 1500
    assert all(i.fit_info.epoch_traces == 1 and i.train_time > 0 for i in info1 + info3)

    # Share of points within 0.05 of the exact posterior (two crescents 0.01 thick, ~1/4 of
    # the prior box across): 4,000 reference draws cover it densely.
    ref = np.asarray(task.sample_posterior(jax.random.key(2), x_obs, 4000))

    def near(points):
        dist = np.sqrt(((points[:, None] - ref[None]) ** 2).sum(-1)).min(axis=1)
        return float(np.mean(dist < 0.05))

    # The rounds' simulations: round 1 from the prior, rounds 2 and 3 from the posteriors.
    prior_share, *proposal_shares = [near(t) for t in states[-1].theta]
    se = np.sqrt(0.25 / 500)  # binomial sd bound of a share of 500
    assert all(p > 3 * prior_share + 4 * se for p in proposal_shares), (prior_share,
                                                                         proposal_shares)
    n = 8000

    def draw(post):
        # 16 x 500 draws: the program the proposals of 500 compiled (persistent cache).
        draws = np.concatenate([post.sample(k, x_obs, 500)
                                for k in jax.random.split(jax.random.key(3), n // 500)])
        assert np.all(np.abs(draws) <= 1.0)
        return draws

    d1, d3 = draw(one), draw(three)
    p1, p3 = near(d1), near(d3)
    print(f"two moons: share of draws within 0.05 of the posterior: 1 round {p1:.4f}, "
          f"3 rounds {p3:.4f}; of the simulations, prior {prior_share:.3f}, rounds 2-3 "
          f"{proposal_shares}")
    margin = 4 * np.sqrt(p1 * (1 - p1) / n + p3 * (1 - p3) / n)
    assert p3 > p1 - margin - 0.1, (p1, p3, margin)
    # The exact posterior puts equal mass on both crescents (sign of theta_1 + theta_2): the
    # rounds must not collapse onto one. Over keys 1-4 the share on one side was 0.40-0.54
    # before and 0.44-0.63 since the statistics were frozen; 0.5 +- 0.2 tells a collapse (0 or
    # 1) from that spread.
    side = float(np.mean(d3.sum(axis=1) > 0))
    assert abs(side - 0.5) < 0.2, side


# ----------------------------------------------------------------------------- SNLE and SNRE

GAUSS_THETA = jnp.array([0.3, -0.2])
# MALA for the proposals and the check: its program traces and compiles in about 2/3 of NUTS's
# time (NUTS, the default, is tested with NLE and NRE themselves).
MCMC = dict(method="mala", num_warmup=300)
GAUSS_FIT = dict(rounds=2, simulations_per_round=500, max_epochs=20, patience=None,
                 batch_size=50, shard=False, progress=False, proposal_samples_options=MCMC)
Z = 4.5
# R-hat above 1.01 from 4 chains of 125 draws happens by chance; the check asserts < 1.05.
RHAT_NOISE = "ignore:.*R-hat > 1.01:RuntimeWarning"


def check_gaussian_posterior(task, post, x_obs, infos):
    """Posterior mean and sd of an MCMC-sampled posterior against the exact N(x/2, 0.05 I)."""
    assert [i.proposal for i in infos] == ["prior", "posterior"]
    assert all(i.num_kept == 500 for i in infos)
    draws, si = post.sample(jax.random.key(2), x_obs, 500, return_info=True, **MCMC)
    assert si.method == "mala" and np.all(si.rhat < 1.05), si.rhat
    exact = task.posterior(x_obs)
    m_ref, sd = np.asarray(exact.mean), np.sqrt(np.asarray(exact.variance))
    m, s = np.asarray(draws.mean(0)), np.asarray(draws.std(0))
    print(f"{post.method}: mean error / sd {(m - m_ref) / sd}, sd ratio {s / sd}, ess {si.ess}")
    # Bound = Monte Carlo error (Z standard errors from the chains' bulk ESS) + the estimator's
    # own error, allowed 0.3 posterior sd in the mean and 30% in the sd (1,000 simulations).
    assert np.all(np.abs(m - m_ref) < Z * sd / np.sqrt(si.ess) + 0.3 * sd), (m - m_ref) / sd
    assert np.all(np.abs(s / sd - 1) < 0.3 + Z / np.sqrt(2 * si.ess)), s / sd


@pytest.mark.slow
@pytest.mark.filterwarnings(RHAT_NOISE)
def test_snle_two_rounds_match_the_analytic_posterior():
    task = ilijax.tasks.gaussian_linear(dim=2)
    x_obs = task.simulator(jax.random.key(0), GAUSS_THETA)
    post, infos = sequential(jax.random.key(1), task.simulator, task.prior, x_obs, method="nle",
                             estimator=maf(hidden=16, transforms=2), **GAUSS_FIT)
    assert post.method == "nle"
    check_gaussian_posterior(task, post, x_obs, infos)


@pytest.mark.slow
@pytest.mark.filterwarnings(RHAT_NOISE)
def test_snre_two_rounds_match_the_analytic_posterior():
    task = ilijax.tasks.gaussian_linear(dim=2)
    x_obs = task.simulator(jax.random.key(0), GAUSS_THETA)
    post, infos = sequential(jax.random.key(1), task.simulator, task.prior, x_obs, method="nre",
                             classifier=classifier(hidden=32), learning_rate=2e-3, **GAUSS_FIT)
    assert post.method == "nre"
    check_gaussian_posterior(task, post, x_obs, infos)


# ----------------------------------------------------------------------------- NaN rows, errors


def nan_simulator(record):
    """gaussian_linear(dim=2) on numpy batches; NaN rows wherever theta_1 > 0.3."""
    rng = np.random.default_rng(0)

    def simulate(theta):
        x = theta + np.sqrt(0.1) * rng.standard_normal(theta.shape)
        bad = theta[:, 0] > 0.3
        x[bad] = np.nan
        record.append(int(bad.sum()))
        return x

    return simulate


def test_nan_rows_are_dropped_with_a_counting_warning_and_the_run_continues(monkeypatch):
    task = ilijax.tasks.gaussian_linear(dim=2)
    record, apt_calls = [], []

    def spy(estimator, prior, num_atoms):  # round 2 trains with the APT loss
        apt_calls.append(num_atoms)
        return apt_loss(estimator, prior, num_atoms)

    monkeypatch.setattr(sequential_module, "apt_loss", spy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post, info = sequential(jax.random.key(0), nan_simulator(record), task.prior,
                                np.array([0.25, 0.0]), rounds=2, simulations_per_round=200,
                                estimator=mdn(hidden=16, components=2), simulator_kind="numpy",
                                num_atoms=5, max_epochs=3, shard=False, progress=True)
    assert apt_calls == [5]
    dropped = [w for w in caught if "non-finite" in str(w.message)]
    assert all(issubclass(w.category, UserWarning) for w in dropped)
    assert len(record) == 2 and record[0] > 0  # P(theta_1 > 0.3) = 17% under the prior
    counts = [int(re.search(r"dropped (\d+) of 200 rows", str(w.message)).group(1))
              for w in dropped]
    assert counts == [c for c in record if c > 0]
    assert [i.num_kept for i in info] == [200 - c for c in record]
    assert [i.num_simulations for i in info] == [200, 200]
    draws = post.sample(jax.random.key(1), jnp.array([0.25, 0.0]), 100)
    assert draws.shape == (100, 2) and np.all(np.isfinite(np.asarray(draws)))
    # nan_policy="raise" stops at the first bad round instead.
    with pytest.raises(ValueError, match="rows with NaN/inf"):
        sequential(jax.random.key(0), nan_simulator([]), task.prior, np.array([0.25, 0.0]),
                   simulations_per_round=200, simulator_kind="numpy", nan_policy="raise",
                   progress=False)


def test_bad_arguments_are_reported():
    task = ilijax.tasks.gaussian_linear(dim=2)

    def identity(theta):  # a numpy simulator: nothing to compile
        return np.asarray(theta) + 0.0

    def run(**kw):
        args = dict(key=jax.random.key(0), simulator=identity, prior=task.prior,
                    x_obs=np.zeros(2), simulations_per_round=20, simulator_kind="numpy",
                    max_epochs=1, progress=False)
        args.update(kw)
        return sequential(**args)

    cases = [
        (dict(rounds=0), "rounds to be an int >= 1; got 0"),
        (dict(rounds=1.5), "rounds to be an int"),
        (dict(method="snpe"), r"method in \('npe', 'nle', 'nre'\); got 'snpe'"),
        (dict(simulations_per_round=1), "simulations_per_round to be an int >= 2"),
        (dict(rounds=3, simulations_per_round=[20, 20]), "one int per round \\(3\\); got 2"),
        (dict(num_atoms=1), "num_atoms to be an int >= 2"),
        (dict(ensemble=0), "ensemble to be an int >= 1"),
        (dict(simulator_kind="torch"), "simulator_kind in"),
        (dict(nan_policy="ignore"), "nan_policy in"),
        (dict(proposal_samples_options=[1]), "proposal_samples_options"),
        (dict(classifier=object()), "classifier=None for method='npe'"),
        (dict(method="nre", estimator=mdn()), "estimator=None for method='nre'"),
        (dict(estimator="maf"), "Estimator bundle"),
        (dict(x_obs=np.zeros((2, 2))), r"x_obs to be one observation of shape \(x_dim,\)"),
        (dict(x_obs=np.array([0.0, np.nan])), "finite x_obs"),
        (dict(x_obs=np.zeros(3)), r"x_obs of the simulator's output shape \(2,\); got \(3,\)"),
        (dict(validation_fraction=1.0), "validation_fraction"),
        (dict(resume={}), "Expected arrays from ilijax.inference.sequential.state_to_arrays"),
        (dict(resume=3), "Expected resume to be a SequentialState"),
        (dict(on_round=3), "on_round to be callable"),
        (dict(simulator=3), "simulator to be callable"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            run(**kw)


# ----------------------------------------------------------------------------- resume


def _linear(key, theta):
    return theta + 0.3 * jax.random.normal(key, theta.shape)


def test_snpe_killed_after_round_two_resumes_and_matches_the_uninterrupted_run(tmp_path):
    prior = normal([0.0, 0.0], [1.0, 1.0])
    x_obs = jnp.array([0.4, -0.3])
    opts = dict(method="npe", rounds=4, simulations_per_round=150, max_epochs=3,
                estimator=maf(hidden=8, transforms=2), progress=False)
    states = []
    full, full_info = sequential(jax.random.key(5), _linear, prior, x_obs,
                                 on_round=states.append, **opts)
    assert [s.rounds_done for s in states] == [1, 2, 3, 4]

    # A run killed while round 3 trains: on_round persisted round 2 (as the pipeline does).
    class Killed(Exception):
        pass

    path = tmp_path / "rounds.npz"

    def persist_then_die(state):
        np.savez(path, **sequential_module.state_to_arrays(state))
        if state.rounds_done == 2:
            raise Killed

    with pytest.raises(Killed):
        sequential(jax.random.key(5), _linear, prior, x_obs, on_round=persist_then_die, **opts)
    with np.load(path) as f:
        saved = dict(f)
    rounds = []
    resumed, info = sequential(jax.random.key(5), _linear, prior, x_obs, resume=saved,
                               on_round=rounds.append, **opts)
    assert [s.rounds_done for s in rounds] == [3, 4]
    assert [i.round for i in info] == [1, 2, 3, 4]
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for r in range(4):
        np.testing.assert_array_equal(rounds[-1].theta[r], states[-1].theta[r])
        np.testing.assert_array_equal(info[r].fit_info.train_loss,
                                      full_info[r].fit_info.train_loss)
    key = jax.random.key(0)
    np.testing.assert_array_equal(resumed.sample(key, x_obs, 20), full.sample(key, x_obs, 20))
    # A state from another key, or for another method, is refused.
    with pytest.raises(ValueError, match="same key"):
        sequential(jax.random.key(6), _linear, prior, x_obs, resume=saved, **opts)
    with pytest.raises(ValueError, match="method 'nle'"):
        sequential(jax.random.key(5), _linear, prior, x_obs, resume=saved,
                   **{**opts, "method": "nle", "estimator": None})
