"""Stacking weights of an ensemble against known optima of the held-out log score."""

import jax
import numpy as np
import pytest
from scipy import integrate, optimize, stats

from ilijax.inference import ensemble_weights, stacking_weights

Z = 4.5  # two-sided z-bound: false alarm 7e-6 per check


def test_stacking_gives_a_broken_member_no_weight():
    # Held-out draws of N(0, 1); member 0 is that density, member 1 is N(12, 1). The ratio
    # r_i = q1(x_i) / q0(x_i) = exp(12 x_i - 72) is < 1/4 wherever x_i < 5.88, i.e. at every
    # draw (P(some of 2000 N(0, 1) draws > 5.88) = 2000 * 2e-9 = 4e-6; checked below). Then the
    # score's derivative in w_1, sum_i (r_i - 1) / (1 + w_1 (r_i - 1)), is < 0 on all of
    # [0, 1]: the exact optimum is w = (1, 0). An EM step multiplies w_1 by
    # mean_i r_i / (1 + w_1 (r_i - 1)) <= 2 max_i r_i < 1/2 while w_1 <= 1/2, so from (1/2, 1/2)
    # 500 iterations leave w_1 below 2^-500: the tolerance 1e-6 is float32 rounding only.
    x = np.asarray(jax.random.normal(jax.random.key(0), (2000,)), np.float64)
    assert x.max() < 5.88
    lp = np.stack([stats.norm.logpdf(x), stats.norm.logpdf(x, loc=12.0)], axis=1)
    w = stacking_weights(lp)
    assert w.shape == (2,)
    assert w[1] < 1e-6 and w[0] > 1 - 1e-6, w
    # Either order of the members, and through ensemble_weights (the softmax of the mean
    # held-out log-likelihood would give the same answer here, so also a case where it does
    # not: a third member that diverged gets exactly 0).
    np.testing.assert_allclose(stacking_weights(lp[:, ::-1]), w[::-1], atol=1e-6)
    loss = -lp.mean(0)
    lp3 = np.concatenate([lp, lp[:, :1]], axis=1)
    with pytest.warns(RuntimeWarning, match="1 of 3"):
        w3 = ensemble_weights("stacking", np.append(loss, np.inf), np.array([0, 0, 1], bool),
                              lp3)
    assert w3[2] == 0.0
    np.testing.assert_allclose(w3, [1.0, 0.0, 0.0], atol=1e-6)


def test_stacking_recovers_known_mixture_weights():
    # Held-out draws of 0.3 N(-2, 1) + 0.7 N(2, 1); the members are the two components, so
    # the population optimum of the log score is the true mixing weights (0.3, 0.7) and the
    # sample optimum is the maximum-likelihood estimate of the mixing weight with known
    # components.
    n, alpha = 4000, 0.3
    k_c, k_e = jax.random.split(jax.random.key(1))
    first = np.asarray(jax.random.bernoulli(k_c, alpha, (n,)))
    x = np.where(first, -2.0, 2.0) + np.asarray(jax.random.normal(k_e, (n,)), np.float64)
    lp = np.stack([stats.norm.logpdf(x, -2.0), stats.norm.logpdf(x, 2.0)], axis=1)
    w = stacking_weights(lp)

    # 1. The EM result is the exact sample optimum: the 1-d concave maximisation done
    # independently (float32 EM; 1e-4 is far above its rounding, far below the spread below).
    def neg_score(a):
        return -np.sum(np.logaddexp(np.log(a) + lp[:, 0], np.log1p(-a) + lp[:, 1]))

    a_hat = optimize.minimize_scalar(neg_score, bounds=(1e-9, 1 - 1e-9), method="bounded",
                                     options=dict(xatol=1e-10)).x
    np.testing.assert_allclose(w, [a_hat, 1 - a_hat], atol=1e-4)

    # 2. It recovers the true weights within a z-bound. The MLE's sd is 1 / sqrt(n I) with
    # the Fisher information I = int (q0 - q1)^2 / p dx (by quadrature); it exceeds the
    # binomial sd sqrt(a (1 - a) / n) of the labelled-data estimate (the labels are unseen).
    def p(t):
        return alpha * stats.norm.pdf(t, -2.0) + (1 - alpha) * stats.norm.pdf(t, 2.0)

    info = integrate.quad(lambda t: (stats.norm.pdf(t, -2.0) - stats.norm.pdf(t, 2.0)) ** 2
                          / p(t), -12.0, 12.0)[0]
    sd = 1.0 / np.sqrt(n * info)
    assert sd > np.sqrt(alpha * (1 - alpha) / n)
    assert abs(w[0] - alpha) < Z * sd, (w, sd)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)


def test_a_member_trained_on_shuffled_x_gets_almost_no_weight():
    """Issue 14: a member trained on x shuffled across rows can only learn theta's marginal.
    With x = theta + 0.05 noise on a U(-1, 1)^2 prior the exact posterior's mean log density is
    about -log(2 pi e 0.05^2) = 3.15 against the prior's -log 4 = -1.39, so a real member is
    several nats better on held-out pairs, and softmax and stacking must both drop the other."""
    import ilijax

    prior = ilijax.priors.uniform([-1.0, -1.0], [1.0, 1.0])

    def pairs(key, n):
        k1, k2 = jax.random.split(key)
        theta = prior.sample(k1, (n,))
        return theta, theta + 0.05 * jax.random.normal(k2, theta.shape)

    theta, x = pairs(jax.random.key(0), 2000)
    held_theta, held_x = pairs(jax.random.key(9), 1000)
    shuffled = np.asarray(x)[np.asarray(jax.random.permutation(jax.random.key(3), 2000))]
    opts = dict(prior=prior, estimator=ilijax.estimators.maf(hidden=16, transforms=2),
                max_epochs=20, progress=False)
    good, _ = ilijax.npe(jax.random.key(1), theta, x, **opts)
    broken, _ = ilijax.npe(jax.random.key(1), theta, shuffled, **opts)
    lp = np.stack([np.asarray(p.log_prob(held_theta, held_x)) for p in (good, broken)], axis=1)
    assert np.isfinite(lp).all()
    # The broken member cannot beat theta's marginal, the prior, by more than Monte Carlo noise.
    se = lp.std(0) / np.sqrt(len(lp))
    assert lp[:, 1].mean() < -np.log(4.0) + Z * se[1]
    # softmax of the mean held-out log-likelihood: exp(-gap) / (1 + exp(-gap))
    gap = lp[:, 0].mean() - lp[:, 1].mean()
    w = ensemble_weights("softmax", -lp.mean(0), np.zeros(2, bool))
    np.testing.assert_allclose(w[1], 1.0 / (1.0 + np.exp(gap)), rtol=1e-5)
    assert w[1] < 0.05, (w, gap)
    assert stacking_weights(lp)[1] < 0.05
    assert ensemble_weights("uniform", -lp.mean(0), np.zeros(2, bool))[1] == 0.5
