"""Neural ratio estimation: the classifier bundle, the four losses (known answers), training
accuracy of the log-ratio, and the MCMC posterior against the analytic Gaussian posterior."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ilijax
from ilijax.data import Dataset
from ilijax.estimators import Classifier, build, classifier
from ilijax.inference.nre import (
    _shuffle_and_pair,
    bnre_loss,
    nre,
    nre_a_loss,
    nre_b_loss,
    nre_c_loss,
)

Z = 4.5  # z-bound for Monte Carlo checks (two-sided p ~ 7e-6 per check)
PRIOR_VAR = NOISE_VAR = 0.1  # gaussian_linear's defaults


# ----------------------------------------------------------------------------- helpers


def exact_log_ratio(theta, x):
    """log r(theta, x) = log p(x | theta) - log p(x) for gaussian_linear (p(x) = N(0, 0.2 I))."""
    lik = jax.scipy.stats.norm.logpdf(x, theta, math.sqrt(NOISE_VAR)).sum(-1)
    evidence = jax.scipy.stats.norm.logpdf(x, 0.0, math.sqrt(PRIOR_VAR + NOISE_VAR)).sum(-1)
    return lik - evidence


def affine_exact():
    """A classifier whose logit is ``scale * log r + shift``; (1, 0) is the exact ratio."""

    def init(key, theta, x):
        del key, theta, x
        return {"scale": jnp.float32(1.0), "shift": jnp.float32(0.0)}

    def log_ratio(params, theta, x):
        return params["scale"] * exact_log_ratio(theta, x) + params["shift"]

    return Classifier(init, log_ratio)


def constant(c):
    return Classifier(lambda key, theta, x: {}, lambda params, theta, x: jnp.float32(c))


@jax.jit
def _joint(key, eps):
    theta = math.sqrt(PRIOR_VAR) * jax.random.normal(key, eps.shape)
    return theta, theta + math.sqrt(NOISE_VAR) * eps


def joint_batch(key, n, dim=2):
    """n joint draws (theta, x) of the gaussian_linear task."""
    k_theta, k_noise = jax.random.split(key)
    theta, x = _joint(k_theta, jax.random.normal(k_noise, (n, dim)))
    return Dataset(theta, x)


LOSSES = {
    "a": lambda clf: nre_a_loss(clf),
    "b": lambda clf: nre_b_loss(clf, 10),
    "c": lambda clf: nre_c_loss(clf, 5, 1.0),
    "c_gamma3": lambda clf: nre_c_loss(clf, 3, 3.0),
    "bnre": lambda clf: bnre_loss(clf, 100.0),
}


# ----------------------------------------------------------------------------- classifier


@pytest.mark.parametrize("kind", ["mlp", "resnet"])
def test_classifier_bundle_contract(kind):
    clf = classifier(kind=kind, hidden=8, blocks=2, activation="tanh")
    assert clf.spec == {"name": "classifier",
                        "config": {"kind": kind, "hidden": 8, "blocks": 2, "activation": "tanh"}}
    key = jax.random.key(0)
    theta = jax.random.normal(key, (50, 3)) * 4.0 + 2.0
    x = jax.random.normal(jax.random.key(1), (50, 5)) * 0.5 - 1.0
    params = clf.init(key, theta, x)
    # z-score statistics of the training set are stored in the params.
    np.testing.assert_allclose(params["theta_shift"].value, np.mean(theta, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params["theta_scale"].value, np.std(theta, 0), rtol=1e-5)
    np.testing.assert_allclose(params["x_shift"].value, np.mean(x, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params["x_scale"].value, np.std(x, 0), rtol=1e-5)
    # One example pair: identity statistics.
    one = clf.init(key, theta[0], x[0])
    np.testing.assert_array_equal(one["theta_shift"].value, np.zeros(3))
    np.testing.assert_array_equal(one["x_scale"].value, np.ones(5))
    # One pair in, a float32 scalar out; vmap equals a loop.
    out = clf.log_ratio(params, theta[0], x[0])
    assert out.shape == () and out.dtype == jnp.float32
    batch = jax.vmap(clf.log_ratio, in_axes=(None, 0, 0))(params, theta[:4], x[:4])
    loop = [clf.log_ratio(params, theta[i], x[i]) for i in range(4)]
    np.testing.assert_allclose(batch, loop, rtol=1e-5, atol=1e-6)
    # The logit depends on both theta and x.
    assert not np.isclose(clf.log_ratio(params, theta[1], x[0]), out)
    assert not np.isclose(clf.log_ratio(params, theta[0], x[1]), out)
    # The spec rebuilds the same function (what ilijax.load relies on).
    again = build(clf.spec)
    np.testing.assert_array_equal(again.log_ratio(params, theta[0], x[0]), out)


def test_classifier_argument_errors():
    with pytest.raises(ValueError, match=r"kind in \('mlp', 'resnet'\); got 'cnn'"):
        classifier(kind="cnn")
    with pytest.raises(ValueError, match="hidden to be a positive int; got 0"):
        classifier(hidden=0)
    with pytest.raises(ValueError, match="blocks to be a positive int; got 1.5"):
        classifier(blocks=1.5)
    with pytest.raises(ValueError, match="activation in .*; got 'swish'"):
        classifier(activation="swish")
    clf = classifier(hidden=4)
    with pytest.raises(ValueError, match="same number of rows; got 3 and 4"):
        clf.init(jax.random.key(0), jnp.zeros((3, 2)), jnp.zeros((4, 2)))


# ----------------------------------------------------------------------------- pairing


def test_partners_are_distinct_other_rows_uniformly_chosen():
    b, num, reps = 6, 3, 4000
    batch = Dataset(jnp.arange(b, dtype=jnp.float32)[:, None], jnp.zeros((b, 1)))
    keys = jax.random.split(jax.random.key(0), reps)
    theta, _, partners = jax.vmap(lambda k: _shuffle_and_pair(k, batch, num, num + 1))(keys)
    rows = np.asarray(theta[..., 0]).astype(int)  # (reps, b): original row of each position
    for r in rows[:50]:
        assert sorted(r) == list(range(b))  # a permutation
    ids = rows[np.arange(reps)[:, None, None], np.asarray(partners)]  # partners' original rows
    assert np.all(ids != rows[:, :, None])  # never paired with itself
    assert all(len(set(p)) == num for p in ids.reshape(-1, num)[:500])  # distinct
    # Row 0's partners are a uniform random subset of the other rows: each appears with
    # probability num / (b - 1) (binomial bound over the repetitions).
    pos0 = np.argmax(rows == 0, axis=1)
    part0 = ids[np.arange(reps), pos0]
    p = num / (b - 1)
    for j in range(1, b):
        freq = np.mean(np.any(part0 == j, axis=1))
        assert abs(freq - p) < Z * math.sqrt(p * (1 - p) / reps), (j, freq)


def test_losses_need_enough_rows():
    clf = constant(0.0)
    small = Dataset(jnp.zeros((4, 2)), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 10 rows .* got 4 rows"):
        nre_b_loss(clf, 10)({}, small, jax.random.key(0))
    with pytest.raises(ValueError, match="at least 5 rows .* got 4 rows"):
        nre_c_loss(clf, 4)({}, small, jax.random.key(0))
    one = Dataset(jnp.zeros((1, 2)), jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        nre_a_loss(clf)({}, one, jax.random.key(0))


# ----------------------------------------------------------------------------- losses


def test_constant_logits_known_values():
    batch = joint_batch(jax.random.key(0), 64)
    key = jax.random.key(1)
    clf = Classifier(lambda key, theta, x: {}, lambda params, theta, x: params["c"])
    cases_c = [(1, 1.0), (5, 1.0), (4, 0.25), (9, 7.0)]
    losses = [jax.jit(f) for f in (nre_a_loss(clf), nre_b_loss(clf, 7), bnre_loss(clf, 100.0),
                                   *(nre_c_loss(clf, k, g) for k, g in cases_c))]
    for c in (-1.3, 0.0, 0.7):
        got = [float(f({"c": jnp.float32(c)}, batch, key)) for f in losses]
        sp = math.log1p(math.exp(c))  # softplus(c)
        # NRE-A: -log sigmoid(c) - log(1 - sigmoid(c)) = softplus(-c) + softplus(c).
        a = sp - c + sp
        # NRE-B: every atom equally likely, cross-entropy log K.
        b = math.log(7)
        # BNRE: the balance term E_joint sigmoid + E_marginal sigmoid - 1 is 2 sigmoid(c) - 1.
        bnre = a + 100.0 * (2.0 / (1.0 + math.exp(-c)) - 1.0) ** 2
        # NRE-C: logits [0, l, ..., l] with l = log(gamma / K) + c; the cross-entropy is
        # log(1 + gamma e^c) - p_K l with p_K = gamma / (1 + gamma).
        nre_c = [math.log1p(g * math.exp(c)) - g / (1 + g) * (math.log(g / k) + c)
                 for k, g in cases_c]
        np.testing.assert_allclose(got, [a, b, bnre, *nre_c], rtol=1e-5, err_msg=f"c={c}")


def test_nre_c_with_one_atom_is_half_nre_a_and_bnre_at_zero_is_nre_a():
    clf = classifier(hidden=8)
    batch = joint_batch(jax.random.key(0), 64)
    params = clf.init(jax.random.key(1), batch.theta, batch.x)
    key = jax.random.key(2)
    a, c, bnre = jax.jit(lambda p: (nre_a_loss(clf)(p, batch, key),
                                    nre_c_loss(clf, 1, 1.0)(p, batch, key),
                                    bnre_loss(clf, 0.0)(p, batch, key)))(params)
    # K = 1, gamma = 1: classes {marginal, joint} with probability 1/2 each, logits [0, d].
    np.testing.assert_allclose(c, a / 2, rtol=1e-5)
    np.testing.assert_allclose(bnre, a, rtol=1e-5)


def test_nre_b_is_invariant_to_a_constant_and_a_c_are_not():
    batch = joint_batch(jax.random.key(0), 256)
    key = jax.random.key(3)
    clf = affine_exact()
    p0 = {"scale": jnp.float32(1.0), "shift": jnp.float32(0.0)}
    p1 = {"scale": jnp.float32(1.0), "shift": jnp.float32(2.5)}
    names = ("b", "a", "c", "bnre")
    values = jax.jit(lambda p: jnp.stack([LOSSES[n](clf)(p, batch, key) for n in names]))
    v0, v1 = np.asarray(values(p0)), np.asarray(values(p1))
    np.testing.assert_allclose(v1[0], v0[0], rtol=1e-5)
    assert np.all(v1[1:] > v0[1:] + 0.1), (v0, v1)


@pytest.mark.parametrize("name", list(LOSSES))
def test_exact_ratio_is_the_population_optimum(name):
    """At scale 1, shift 0 (the exact log-ratio) the gradient of the population loss in
    (scale, shift) is zero, and perturbed classifiers have a larger population loss. Both are
    checked on independent minibatches: the mean over them must be within Z standard errors
    of zero (gradient) and above zero by more than Z standard errors (loss differences)."""
    clf = affine_exact()
    loss = jax.jit(LOSSES[name](clf))
    grad = jax.jit(jax.grad(LOSSES[name](clf)))
    reps, n = 16, 2000
    keys = jax.random.split(jax.random.key(10), reps)
    exact = {"scale": jnp.float32(1.0), "shift": jnp.float32(0.0)}
    perturbed = [(0.7, 0.0), (1.3, 0.0)] + ([] if name == "b" else [(1.0, -0.5), (1.0, 0.5)])
    grads, diffs = [], []
    for i in range(reps):
        k_data, k_loss = jax.random.split(keys[i])
        batch = joint_batch(k_data, n)
        g = grad(exact, batch, k_loss)
        grads.append([float(g["scale"]), float(g["shift"])])
        base = loss(exact, batch, k_loss)
        diffs.append([float(loss({"scale": jnp.float32(s), "shift": jnp.float32(c)}, batch,
                                 k_loss) - base) for s, c in perturbed])
    grads, diffs = np.array(grads), np.array(diffs)
    se_g = grads.std(0, ddof=1) / math.sqrt(reps)
    assert np.all(np.abs(grads.mean(0)) < Z * se_g + 1e-6), (grads.mean(0), se_g)
    se_d = diffs.std(0, ddof=1) / math.sqrt(reps)
    assert np.all(diffs.mean(0) > Z * se_d), (diffs.mean(0), se_d)


def test_bnre_balance_is_zero_for_the_exact_ratio_and_not_for_a_shifted_one():
    """E_joint sigmoid(log r) + E_marginal sigmoid(log r) = E_marginal[r] = 1 for the exact
    ratio; a logit shifted by +1 is unbalanced (both expectations grow)."""
    clf = affine_exact()
    batch = joint_batch(jax.random.key(4), 20_000)
    key = jax.random.key(5)
    lam = 100.0

    @jax.jit
    def terms(p):
        penalty = bnre_loss(clf, lam)(p, batch, key) - nre_a_loss(clf)(p, batch, key)
        # Recompute the balance term from the same pairs, with its Monte Carlo error.
        theta, x, partners = _shuffle_and_pair(key, batch, 1, 2)
        sj = jax.nn.sigmoid(jax.vmap(clf.log_ratio, (None, 0, 0))(p, theta, x))
        sm = jax.nn.sigmoid(jax.vmap(clf.log_ratio, (None, 0, 0))(p, theta[partners[:, 0]], x))
        return penalty, sj, sm

    for shift, balanced in ((0.0, True), (1.0, False)):
        penalty, sj, sm = terms({"scale": jnp.float32(1.0), "shift": jnp.float32(shift)})
        balance = float(sj.mean() + sm.mean() - 1.0)
        np.testing.assert_allclose(penalty, lam * balance**2, rtol=1e-3, atol=1e-5)
        se = math.sqrt(float(sj.var() + sm.var()) / batch.theta.shape[0])
        if balanced:
            assert abs(balance) < Z * se, (balance, se)
        else:
            assert balance > 0.1 and balance > Z * se, (balance, se)


def test_loss_argument_errors():
    clf = constant(0.0)
    with pytest.raises(ValueError, match="num_atoms to be an int >= 2; got 1"):
        nre_b_loss(clf, 1)
    with pytest.raises(ValueError, match="num_atoms to be an int >= 1; got 0"):
        nre_c_loss(clf, 0)
    with pytest.raises(ValueError, match="num_atoms to be an int >= 2; got 2.5"):
        nre_b_loss(clf, 2.5)
    for bad in (0.0, -1.0, float("nan"), float("inf"), "x"):
        with pytest.raises(ValueError, match="gamma to be a finite number > 0"):
            nre_c_loss(clf, 3, bad)
    with pytest.raises(ValueError, match="regularization to be a finite number >= 0; got -1"):
        bnre_loss(clf, -1.0)


# ----------------------------------------------------------------------------- nre()


@pytest.fixture(scope="module")
def small():
    task = ilijax.tasks.gaussian_linear(dim=2)
    data = ilijax.simulate(jax.random.key(0), task.prior, task.simulator, 200, progress=False)
    return task, data


def test_nre_argument_errors(small):
    task, data = small
    kw = dict(prior=task.prior, progress=False)
    with pytest.raises(ValueError, match=r"variant in \('a', 'b', 'c', 'bnre'\); got 'd'"):
        nre(jax.random.key(0), data.theta, data.x, variant="d", **kw)
    with pytest.raises(ValueError, match="num_atoms to be an int >= 2; got 1"):
        nre(jax.random.key(0), data.theta, data.x, num_atoms=1, **kw)
    with pytest.raises(ValueError, match="training minibatches of at least num_atoms = 20 rows "
                                         "for variant 'b'; got 16"):
        nre(jax.random.key(0), data.theta, data.x, num_atoms=20, batch_size=16, **kw)
    with pytest.raises(ValueError, match="at least num_atoms \\+ 1 = 17 rows for variant 'c'"):
        nre(jax.random.key(0), data.theta, data.x, variant="c", num_atoms=16, batch_size=16,
            **kw)
    with pytest.raises(ValueError, match="validation chunks of at least num_atoms = 30 rows"):
        nre(jax.random.key(0), data.theta, data.x, num_atoms=30, batch_size=64, **kw)
    with pytest.raises(ValueError, match="gamma to be a finite number > 0"):
        nre(jax.random.key(0), data.theta, data.x, variant="c", gamma=-2.0, **kw)
    with pytest.raises(ValueError, match="regularization to be a finite number >= 0"):
        nre(jax.random.key(0), data.theta, data.x, variant="bnre", regularization=-2.0, **kw)
    with pytest.raises(ValueError, match="for variant 'b'; got 'stacking'"):
        nre(jax.random.key(0), data.theta, data.x, weighting="stacking", **kw)
    with pytest.raises(ValueError, match="weighting in"):
        nre(jax.random.key(0), data.theta, data.x, weighting="best", **kw)
    with pytest.raises(ValueError, match=r"ensemble >= 1 \(members per bundle\); got 0"):
        nre(jax.random.key(0), data.theta, data.x, ensemble=0, **kw)
    with pytest.raises(ValueError, match="Expected classifier to be a Classifier bundle"):
        nre(jax.random.key(0), data.theta, data.x, classifier=ilijax.estimators.mdn(), **kw)
    with pytest.raises(ValueError, match="theta with 2 columns .* got 3"):
        nre(jax.random.key(0), jnp.zeros((200, 3)), data.x, **kw)
    with pytest.raises(ValueError, match="x of shape \\(n, x_dim\\)"):
        nre(jax.random.key(0), data.theta, jnp.zeros((200, 2, 2)), **kw)


# ----------------------------------------------------------------------------- training

# 10,000 simulations of the 2-d conjugate Gaussian task; 40 epochs of a 2 x 32 MLP.
NUM_SIMULATIONS = 10_000
FIT = dict(batch_size=256, max_epochs=40, patience=None, learning_rate=2e-3, progress=False,
           shard=False)


@pytest.fixture(scope="module")
def simulations():
    task = ilijax.tasks.gaussian_linear(dim=2)
    data = ilijax.simulate(jax.random.key(0), task.prior, task.simulator, NUM_SIMULATIONS,
                           progress=False)
    test = ilijax.simulate(jax.random.key(1), task.prior, task.simulator, 2000, progress=False)
    return task, data, test


@pytest.fixture(scope="module")
def trained(simulations):
    """``trained(variant) -> (posterior, info)``, each variant trained once per module."""
    task, data, _ = simulations
    cache = {}

    def get(variant):
        if variant not in cache:
            # NRE-C also exercises an ensemble with stacking weights (its ratios are normalised).
            extra = dict(ensemble=2, weighting="stacking") if variant == "c" else {}
            cache[variant] = nre(jax.random.key(2), data.theta, data.x, prior=task.prior,
                                 classifier=classifier(hidden=32), variant=variant, **FIT,
                                 **extra)
        return cache[variant]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["b", "c", "a", "bnre"])
def test_log_ratio_matches_the_exact_likelihood_ratio(simulations, trained, variant):
    """On held-out pairs, the learned log r(theta, x) - log r(theta', x) (theta' an independent
    prior draw, x simulated from theta) matches log p(x | theta) - log p(x | theta'), which
    holds for every variant (NRE-B's x-dependent constant cancels). A, C and BNRE also learn
    the constant: their log r at joint pairs matches the exact one.

    BNRE gets a looser bound on the differences: its balance penalty makes it conservative by
    design (Delaunoy et al. 2022), i.e. it overestimates small ratios (theta' in the prior's
    tails). Its defining property, balance on held-out pairs, is checked instead."""
    task, _, test = simulations
    post, info = trained(variant)
    assert post.method == "nre" and post.normalized is False and info.epoch_traces == 1
    assert post.num_members == (2 if variant == "c" else 1)
    np.testing.assert_allclose(post.weights.sum(), 1.0, rtol=1e-12)
    other = task.prior.sample(jax.random.key(3), (test.theta.shape[0],))

    def log_ratio(theta, x):  # the ensemble's log sum_k w_k r_k(theta, x)
        return np.asarray(post.log_prob(theta, x) - task.prior.log_prob(theta))

    joint, marginal = log_ratio(test.theta, test.x), log_ratio(other, test.x)
    exact_joint = np.asarray(exact_log_ratio(test.theta, test.x))
    learned, exact = joint - marginal, exact_joint - np.asarray(exact_log_ratio(other, test.x))
    corr = np.corrcoef(learned, exact)[0, 1]
    mae = np.mean(np.abs(learned - exact))
    print(f"{variant}: differences: corr {corr:.4f}, mean abs error {mae:.3f} "
          f"(sd of exact {exact.std():.2f})")
    min_corr, max_mae = (0.9, 0.45) if variant == "bnre" else (0.95, 0.2)
    assert corr > min_corr, corr
    assert mae < max_mae * exact.std(), (mae, exact.std())
    if variant == "b":
        return
    err = joint - exact_joint
    print(f"{variant}: log r at joint pairs: mean error {err.mean():.3f}, "
          f"mean abs error {np.abs(err).mean():.3f}")
    assert abs(err.mean()) < 0.15 and np.abs(err).mean() < 0.35, err
    if variant == "bnre":
        sj, sm = jax.nn.sigmoid(joint), jax.nn.sigmoid(marginal)
        balance = float(sj.mean() + sm.mean() - 1.0)
        se = math.sqrt(float(sj.var() + sm.var()) / joint.size)
        print(f"bnre: held-out balance {balance:.4f} (se {se:.4f})")
        assert abs(balance) < Z * se, (balance, se)


@pytest.mark.slow
def test_nre_posterior_matches_the_analytic_posterior(simulations, trained, tmp_path):
    task, _, _ = simulations
    post, _ = trained("b")
    theta0 = task.prior.sample(jax.random.key(5), (4,))
    x = jax.vmap(task.simulator)(jax.random.split(jax.random.key(6), 4), theta0)
    draws, si = post.sample(jax.random.key(7), x, 2000, return_info=True)
    assert draws.shape == (4, 2000, 2) and si.method == "nuts"
    exact = jax.vmap(lambda xx: task.posterior(xx).mean)(x)
    sd = math.sqrt(1.0 / (1.0 / PRIOR_VAR + 1.0 / NOISE_VAR))
    m, s = np.asarray(draws.mean(1)), np.asarray(draws.std(1))
    print("mean error / sd", (m - exact) / sd, "sd ratio", s / sd, "ess", si.ess)
    # Bound = Monte Carlo error of the chains (Z standard errors from their bulk ESS) + the
    # estimator's own error: 0.2 posterior sd in the mean and 20% in the sd.
    mc = Z * sd / np.sqrt(si.ess)
    assert np.all(np.abs(m - exact) < mc + 0.2 * sd), (m - exact) / sd
    assert np.all(np.abs(s / sd - 1) < 0.2 + Z / np.sqrt(2 * si.ess)), s / sd
    corr = np.array([np.corrcoef(np.asarray(d).T)[0, 1] for d in draws])
    assert np.all(np.abs(corr) < 0.15 + Z / np.sqrt(si.ess.min(1))), corr
    assert np.all(si.rhat < 1.05), si.rhat
    # The ratio is the posterior over the prior: for one member, log_prob = log r + log prior.
    g = post.groups[0]
    member = jax.tree.map(lambda a: a[0], g.params)
    th = draws[0, :5]
    expected = jax.vmap(g.estimator.log_prob, (None, 0, None))(member, th, x[0]) \
        + task.prior.log_prob(th)
    np.testing.assert_allclose(post.log_prob(th, x[0]), expected, rtol=1e-5, atol=1e-5)
    # Saved and loaded, the classifier is rebuilt from its spec and gives the same density.
    loaded = ilijax.load(ilijax.save(post, tmp_path / "nre"))
    assert loaded.method == "nre" and loaded.groups[0].spec == post.groups[0].spec
    np.testing.assert_array_equal(np.asarray(loaded.log_prob(th, x[0])),
                                  np.asarray(post.log_prob(th, x[0])))
