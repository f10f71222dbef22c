"""Neural likelihood estimation (NLE).

Trains conditional density estimators ``q(x | theta)`` of the simulator's likelihood by maximum
likelihood on simulated pairs (Papamakarios, Sterratt & Murray 2019, "Sequential neural
likelihood: fast likelihood-free inference with autoregressive flows", AISTATS; Lueckmann et
al. 2019 for the ensemble view). The posterior is ``p(theta | x) ∝ q(x | theta) p(theta)``,
known up to a constant per observation, and is sampled by MCMC (blackjax NUTS by default) in
the unconstrained space of the prior's support, all chains of all observations at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ilijax import data as _data
from ilijax._checks import check_key
from ilijax.estimators._base import Estimator
from ilijax.inference._ensemble import WEIGHTINGS, ensemble_weights
from ilijax.inference._members import member_counts
from ilijax.inference.npe import check_npe_dataset, init_members
from ilijax.posterior import Group, Posterior, member_bundle
from ilijax.priors import validate_prior
from ilijax.train import FitInfo, fit

__all__ = ["nle", "nle_loss"]


def nle_loss(estimator: Estimator):
    """The NLE loss ``-mean_i log q(x_i | theta_i)`` for one member and one minibatch.

    Args:
        estimator: A bundle modelling ``y = x`` given ``context = theta``.

    Returns:
        ``loss(params, batch, key) -> scalar`` with ``batch`` a :class:`ilijax.data.Dataset`.
    """

    def loss(params, batch, key):
        del key
        lp = jax.vmap(estimator.log_prob, in_axes=(None, 0, 0))(params, batch.x, batch.theta)
        return -jnp.mean(lp)

    return loss


def _default_estimator() -> Estimator:
    from ilijax.estimators.maf import maf

    return maf()


def nle(
    key: jax.Array,
    theta: Any,
    x: Any,
    *,
    prior,
    estimator: Estimator | Sequence[Estimator] | None = None,
    ensemble: int | Sequence[int] = 1,
    weighting: str = "softmax",
    nan_policy: str = "drop",
    labels: Sequence[str] | None = None,
    validation_fraction: float = 0.1,
    **fit_options,
) -> tuple[Posterior, FitInfo]:
    """Trains an NLE ensemble on ``(theta, x)`` pairs and returns its (MCMC-sampled) posterior.

    The posterior's ``log_prob(theta, x)`` is the **unnormalised**
    ``log sum_k w_k q_k(x | theta) + log p(theta)`` (``posterior.normalized`` is False); its
    ``sample(key, x, n)`` runs NUTS by default (``method=`` picks another sampler, see
    :mod:`ilijax.samplers`), vmapped over a batch of observations.

    Args:
        key: PRNG key; the same key gives the same split, initialisation, training and weights.
        theta: ``(n, theta_dim)`` parameters, drawn from ``prior``.
        x: ``(n, x_dim)`` simulated data.
        prior: numpyro distribution with event shape ``(theta_dim,)`` (see ``ilijax.priors``).
        estimator: A bundle from ``ilijax.estimators`` modelling ``x`` given ``theta``
            (default ``maf()``: hidden 50, 5 transforms, as sbi's NLE), or a list of bundles
            (a heterogeneous ensemble, each bundle a group).
        ensemble: Members per bundle (each from its own key): an int, or one per bundle.
        weighting: ``"softmax"`` of the held-out log-likelihood, ``"uniform"`` or
            ``"stacking"`` (weights maximising the held-out mixture log score of ``x``).
        nan_policy: ``"drop"`` (warn with a count) or ``"raise"`` for non-finite rows.
        labels: Parameter names for plots.
        validation_fraction: Share of rows held out for early stopping and weights.
        **fit_options: Passed to :func:`ilijax.fit` (``optimizer``, ``learning_rate``,
            ``batch_size``, ``max_epochs``, ``patience``, ``clip_norm``, ``progress``, ``shard``).

    Returns:
        ``(posterior, info)``: a :class:`~ilijax.posterior.Posterior` with ``method="nle"``
        and the :class:`~ilijax.train.FitInfo` of the training.

    Examples:
        >>> import jax, ilijax
        >>> task = ilijax.tasks.gaussian_linear(dim=2)
        >>> data = ilijax.simulate(jax.random.key(0), task.prior, task.simulator, 2000)
        >>> post, info = ilijax.nle(jax.random.key(1), data.theta, data.x, prior=task.prior,
        ...                         progress=False)
        >>> post.sample(jax.random.key(2), data.x[:3], 100).shape   # NUTS, 3 x 4 chains
        (3, 100, 2)
    """
    key = check_key(key)
    prior = validate_prior(prior)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"Expected weighting in {WEIGHTINGS}; got {weighting!r}")
    estimators = [estimator] if isinstance(estimator, Estimator) else (
        [_default_estimator()] if estimator is None else list(estimator))
    if not estimators or not all(isinstance(e, Estimator) for e in estimators):
        raise ValueError(
            f"Expected estimator to be an Estimator bundle or a list of them; got {estimator!r}"
        )
    counts = member_counts(ensemble, len(estimators))
    # The member bundles' init takes (key, theta, x) and standardises y = x, context = theta
    # on the whole training set. Built first: an estimator with an embedding network is
    # refused here (x is the modelled variable, not a context).
    bundles = [member_bundle("nle", e, prior) for e in estimators]
    dataset = _data.check_data(theta, x, nan_policy=nan_policy)
    # The same checks as NPE (x rank 2, theta columns, theta in the support); boundary rows
    # need no warning here, as nothing is mapped to the unconstrained space for training.
    check_npe_dataset(prior, dataset, warn_edge=False)

    k_split, k_init, k_fit = jax.random.split(key, 3)
    train, val = _data.split(k_split, dataset, validation_fraction)
    params = init_members(k_init, bundles, counts, train)
    losses = [nle_loss(e) for e in estimators]
    params, info = fit(k_fit, params, losses, train, val,
                       validation_fraction=validation_fraction, **fit_options)

    groups = [Group(b, p, e.spec) for b, p, e in zip(bundles, params, estimators, strict=True)]
    member_lp = None
    if weighting == "stacking":
        probe = Posterior(groups, np.ones(info.epochs.size), prior, x_dim=dataset.x.shape[1],
                          method="nle")
        member_lp = jax.jit(jax.vmap(probe.member_log_prob))(val.theta, val.x)
    weights = ensemble_weights(weighting, info.best_validation_loss, info.diverged, member_lp)
    posterior = Posterior(groups, weights, prior, x_dim=dataset.x.shape[1], method="nle",
                          labels=labels)
    return posterior, info
