"""Neural ratio estimation (NRE).

A classifier ``d(theta, x)`` (see :func:`ilijax.estimators.classifier`) is trained to tell pairs
drawn jointly, ``(theta, x) ~ p(theta, x)``, from pairs drawn from the product of the marginals,
``(theta', x) ~ p(theta) p(x)``. At the optimum its logit is the likelihood-to-evidence ratio

    log r(theta, x) = log p(x | theta) - log p(x) = log p(theta | x) - log p(theta),

so the posterior is ``p(theta | x) ∝ r(theta, x) p(theta)``, known up to a constant per
observation and sampled by MCMC (``Posterior.sample``). Four losses are provided, all with the
common signature ``loss(params, batch, key) -> scalar``:

- :func:`nre_a_loss`: binary cross-entropy, joint vs marginal pairs (Hermans et al. 2020).
- :func:`nre_b_loss`: ``num_atoms``-way contrastive cross-entropy (Durkan et al. 2020); the logit
  is identified only up to an additive function of ``x``, which MCMC at fixed ``x`` ignores.
- :func:`nre_c_loss`: ``num_atoms + 1`` classes, with an explicit "all marginal" class that pins
  the constant, so the logit is the ratio itself (Miller et al. 2022).
- :func:`bnre_loss`: NRE-A plus a balancing penalty that makes the classifier conservative
  (Delaunoy et al. 2022).

Marginal (contrastive) parameters are the ``theta`` of *other* rows of the same minibatch: rows
are i.i.d. draws of ``p(theta, x)``, so the ``theta`` of row ``j != i`` is a draw of ``p(theta)``
independent of ``x_i``. For every minibatch the rows are put in a uniformly random order and each
row is paired with the ``num`` rows that follow it in that order (cyclically). Given the random
order, the partners of a row are a uniformly random set of ``num`` distinct other rows, never the
row itself, in ``O(B num)`` work and memory (no ``B x B`` matrix) and without Python loops over
rows. Neighbouring rows share partners, which correlates the terms of the minibatch mean but
leaves its expectation unchanged.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ilijax import data as _data
from ilijax._checks import check_int, check_key
from ilijax.estimators.classifier import Classifier
from ilijax.inference._ensemble import WEIGHTINGS, ensemble_weights
from ilijax.inference._members import member_counts, train_groups
from ilijax.inference.npe import all_embedded, check_npe_dataset
from ilijax.posterior import Group, Posterior, member_bundle
from ilijax.priors import validate_prior
from ilijax.train import FitInfo, fit

__all__ = ["VARIANTS", "bnre_loss", "nre", "nre_a_loss", "nre_b_loss", "nre_c_loss"]

#: Loss variants accepted by :func:`nre`.
VARIANTS = ("a", "b", "c", "bnre")

LossFn = Callable[[Any, Any, jax.Array], jax.Array]


_check_int = check_int


def _check_float(name: str, value: Any, *, positive: bool) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not math.isfinite(v) or (v <= 0 if positive else v < 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"Expected {name} to be a finite number {bound}; got {value!r}")
    return v


def _shuffle_and_pair(key: jax.Array, batch, num: int, need: int):
    """The minibatch in a random row order and ``num`` distinct partner rows per row.

    Returns ``(theta, x, partners)`` with ``partners`` of shape ``(B, num)`` indexing the
    returned rows; ``partners[i]`` never contains ``i``. ``need`` is the number of rows the loss
    needs (checked at trace time, where ``B`` is static).
    """
    b = batch.theta.shape[0]
    if b < need:
        raise ValueError(
            f"Expected minibatches of at least {need} rows for this ratio loss (a row is "
            f"contrasted with parameters of other rows of the same minibatch); got {b} rows"
        )
    # A uniformly random row order (argsort of uniforms: one sort, quicker to compile on CPU
    # than jax.random.permutation); partners are the next `num` rows in that order, cyclically.
    order = jnp.argsort(jax.random.uniform(key, (b,)))
    partners = (jnp.arange(b)[:, None] + jnp.arange(1, num + 1)[None, :]) % b
    return batch.theta[order], batch.x[order], partners


def _logits(clf: Classifier, params, theta, x):
    """Logits of ``(theta_i, x_i)`` for ``theta (B, d)``, or of every ``(theta_ik, x_i)`` for
    ``theta (B, K, d)``."""
    one = jax.vmap(clf.log_ratio, in_axes=(None, 0, 0))
    if theta.ndim == 2:
        return one(params, theta, x)
    return jax.vmap(jax.vmap(clf.log_ratio, in_axes=(None, 0, None)), in_axes=(None, 0, 0))(
        params, theta, x
    )


def _binary_terms(clf: Classifier, params, batch, key):
    """Logits of the joint pairs and of one marginal pair per row, ``(B,)`` each."""
    theta, x, partners = _shuffle_and_pair(key, batch, 1, 2)
    joint = _logits(clf, params, theta, x)
    marginal = _logits(clf, params, theta[partners[:, 0]], x)
    return joint, marginal


def nre_a_loss(clf: Classifier) -> LossFn:
    """The NRE-A loss: binary cross-entropy of joint (label 1) against marginal (label 0) pairs.

    ``loss = E_{p(theta, x)}[-log sigmoid(d)] + E_{p(theta) p(x)}[-log(1 - sigmoid(d))]``,
    estimated on the minibatch: every row ``(theta_i, x_i)`` is a joint pair and
    ``(theta_j, x_i)``, ``j != i`` a random other row, a marginal pair. With equal class
    probabilities the Bayes-optimal logit is ``log r(theta, x)``. The two expectations are
    summed, as in Delaunoy et al. (2022), so :func:`bnre_loss` is this plus its penalty
    (the mean binary cross-entropy over the ``2B`` pairs is half of it).

    Args:
        clf: The classifier bundle.

    Returns:
        ``loss(params, batch, key) -> scalar`` with ``batch`` a :class:`ilijax.data.Dataset`
        of at least 2 rows.

    References:
        Hermans, Begy and Louppe, "Likelihood-free MCMC with Amortized Approximate Ratio
        Estimators", ICML 2020.
    """

    def loss(params, batch, key):
        joint, marginal = _binary_terms(clf, params, batch, key)
        return jnp.mean(jax.nn.softplus(-joint)) + jnp.mean(jax.nn.softplus(marginal))

    return loss


def nre_b_loss(clf: Classifier, num_atoms: int = 10) -> LossFn:
    """The NRE-B loss: which of ``num_atoms`` parameters was simulated with ``x``?

    For each row, the set ``{theta_i, theta_j1, ..., theta_j(K-1)}`` holds the true parameter and
    ``K - 1 = num_atoms - 1`` parameters of other rows (distinct, drawn from the minibatch). The
    classifier scores them with a softmax over its logits and the loss is the cross-entropy of
    the true one:

        loss = -E[ d(theta_i, x_i) - log sum_k exp d(theta_k, x_i) ].

    The optimum is ``d = log r(theta, x) + c(x)`` for an arbitrary ``c``: the loss is invariant
    to adding any function of ``x`` to the logit, so ``d`` is a ratio only up to a constant per
    observation (Durkan et al. 2020, section 3).

    Args:
        clf: The classifier bundle.
        num_atoms: ``K``, parameters per set (the true one included), at least 2; minibatches
            need at least ``K`` rows.

    Returns:
        ``loss(params, batch, key) -> scalar``.

    References:
        Durkan, Murray and Papamakarios, "On Contrastive Learning for Likelihood-free
        Inference", ICML 2020.
    """
    k = _check_int("num_atoms", num_atoms, 2)

    def loss(params, batch, key):
        theta, x, partners = _shuffle_and_pair(key, batch, k - 1, k)
        joint = _logits(clf, params, theta, x)  # (B,)
        contrast = _logits(clf, params, theta[partners], x)  # (B, K - 1)
        logits = jnp.concatenate([joint[:, None], contrast], axis=1)
        return -jnp.mean(joint - jax.nn.logsumexp(logits, axis=1))

    return loss


def nre_c_loss(clf: Classifier, num_atoms: int = 10, gamma: float = 1.0) -> LossFn:
    """The NRE-C loss: ``K + 1`` classes, one of which says "no parameter belongs to ``x``".

    A set ``(theta_1..theta_K, x)`` with ``K = num_atoms`` comes from one of ``K + 1`` classes:
    class 0, all ``theta_k ~ p(theta)`` independent of ``x``; class ``k >= 1``, ``theta_k`` was
    simulated with ``x`` and the others are independent. The class probabilities are
    ``p(y=0) = p_0`` and ``p(y=k) = p_K / K`` with ``gamma = p_K / p_0`` (so
    ``p_0 = 1 / (1 + gamma)``, ``p_K = gamma / (1 + gamma)``). By Bayes' rule the class
    posterior is, with ``r_k = r(theta_k, x)``,

        p(y=0 | set) = 1 / (1 + (gamma / K) sum_j r_j),
        p(y=k | set) = (gamma / K) r_k / (1 + (gamma / K) sum_j r_j),

    i.e. a softmax over the logits ``[0, log(gamma/K) + log r_1, ..., log(gamma/K) + log r_K]``.
    The classifier plugs ``d(theta_k, x)`` in for ``log r_k``, and the loss is the expected
    cross-entropy over the classes,

        loss = -p_K E_{y>=1}[log q(y | set)] - p_0 E_{y=0}[log q(0 | set)].

    Unlike NRE-B, the class 0 term fixes the constant: the optimum is ``d = log r`` exactly.
    On a minibatch, row ``i`` gives a joint set (``theta_i`` and ``K - 1`` other rows; by the
    symmetry of the softmax the position of the true parameter does not matter) and a marginal
    set (``K`` other rows). ``K = 1, gamma = 1`` is half of :func:`nre_a_loss`.

    Args:
        clf: The classifier bundle.
        num_atoms: ``K``, parameters per set, at least 1; minibatches need ``K + 1`` rows.
        gamma: Prior odds ``p_K / p_0`` of the joint classes against the marginal class (> 0).

    Returns:
        ``loss(params, batch, key) -> scalar``.

    References:
        Miller, Weniger and Forré, "Contrastive Neural Ratio Estimation", NeurIPS 2022.
    """
    k = _check_int("num_atoms", num_atoms, 1)
    g = _check_float("gamma", gamma, positive=True)
    p_joint, p_marginal = g / (1.0 + g), 1.0 / (1.0 + g)
    log_scale = math.log(g / k)

    def loss(params, batch, key):
        theta, x, partners = _shuffle_and_pair(key, batch, k, k + 1)
        joint = log_scale + _logits(clf, params, theta, x)  # (B,)
        others = log_scale + _logits(clf, params, theta[partners], x)  # (B, K)
        zero = jnp.zeros_like(joint)[:, None]
        # Joint set: theta_i and the first K - 1 partners; marginal set: all K partners.
        log_q_joint = joint - jax.nn.logsumexp(
            jnp.concatenate([zero, joint[:, None], others[:, : k - 1]], axis=1), axis=1
        )
        log_q_marginal = -jax.nn.logsumexp(jnp.concatenate([zero, others], axis=1), axis=1)
        return -jnp.mean(p_joint * log_q_joint + p_marginal * log_q_marginal)

    return loss


def bnre_loss(clf: Classifier, regularization: float = 100.0) -> LossFn:
    """The balanced NRE loss: :func:`nre_a_loss` plus a penalty on imbalance.

        loss = NRE-A + lambda (E_{p(theta, x)}[sigmoid(d)] + E_{p(theta) p(x)}[sigmoid(d)] - 1)^2

    A classifier is *balanced* when the two expectations sum to one; the exact ratio is
    (``E_joint[r / (1 + r)] + E_marginal[r / (1 + r)] = E_marginal[r] = 1``), and balanced
    classifiers give posteriors that are conservative rather than overconfident (Delaunoy et
    al. 2022, whose default ``lambda = 100`` is kept). Both expectations are estimated on the
    same minibatch pairs as the cross-entropy.

    Args:
        clf: The classifier bundle.
        regularization: ``lambda >= 0``; 0 gives NRE-A.

    Returns:
        ``loss(params, batch, key) -> scalar``.

    References:
        Delaunoy, Hermans, Rozet, Wehenkel and Louppe, "Towards Reliable Simulation-Based
        Inference with Balanced Neural Ratio Estimation", NeurIPS 2022.
    """
    lam = _check_float("regularization", regularization, positive=False)

    def loss(params, batch, key):
        joint, marginal = _binary_terms(clf, params, batch, key)
        bce = jnp.mean(jax.nn.softplus(-joint)) + jnp.mean(jax.nn.softplus(marginal))
        balance = jnp.mean(jax.nn.sigmoid(joint)) + jnp.mean(jax.nn.sigmoid(marginal)) - 1.0
        return bce + lam * balance**2

    return loss


def _rows_needed(variant: str, num_atoms: int) -> int:
    return {"a": 2, "bnre": 2, "b": num_atoms, "c": num_atoms + 1}[variant]


def _fit_default(name: str):
    return inspect.signature(fit).parameters[name].default


def nre(
    key: jax.Array,
    theta: Any,
    x: Any,
    *,
    prior,
    classifier: Classifier | Sequence[Classifier] | None = None,
    ensemble: int | Sequence[int] = 1,
    variant: str = "b",
    num_atoms: int = 10,
    gamma: float = 1.0,
    regularization: float = 100.0,
    weighting: str = "softmax",
    nan_policy: str = "drop",
    labels: Sequence[str] | None = None,
    validation_fraction: float = 0.1,
    **fit_options,
) -> tuple[Posterior, FitInfo]:
    """Trains an NRE ensemble of classifiers on ``(theta, x)`` pairs and returns its posterior.

    The posterior is ``p(theta | x) ∝ r(theta, x) p(theta)`` with ``r`` the ensemble's ratio; it
    is known up to a constant per observation (``posterior.normalized`` is False) and sampled by
    MCMC.

    Args:
        key: PRNG key; the same key gives the same split, initialisation, training and weights.
        theta: ``(n, theta_dim)`` parameters, drawn from ``prior``.
        x: ``(n, x_dim)`` simulated data, or ``(n, *x_shape)`` when every classifier has an
            embedding network (:func:`ilijax.estimators.embedded`).
        prior: numpyro distribution with event shape ``(theta_dim,)`` (see ``ilijax.priors``).
        classifier: A bundle from :func:`ilijax.estimators.classifier` (default: an MLP with two
            hidden layers of 50, as sbi), or a list of bundles (a heterogeneous ensemble, each
            bundle a group trained in the same compiled program). An embedded classifier
            (``ilijax.estimators.embedded(classifier(), ilijax.nn.DeepSet(...))``) sees the
            summaries of ``x`` and trains its embedding jointly (or shares one across members
            with ``share_embedding=True``, see :mod:`ilijax.inference._members`).
        ensemble: Members per bundle (each from its own key): an int, or one per bundle.
        variant: ``"b"`` (NRE-B, contrastive, the default as in sbi), ``"a"`` (NRE-A), ``"c"``
            (NRE-C) or ``"bnre"`` (balanced NRE-A); see the loss functions of this module.
        num_atoms: Parameters per contrastive set for ``"b"`` (``K >= 2``, true one included)
            and ``"c"`` (``K >= 1``); minibatches need ``K`` (b) or ``K + 1`` (c) rows.
        gamma: NRE-C prior odds of the joint classes against the marginal class.
        regularization: BNRE balancing strength ``lambda``.
        weighting: ``"softmax"`` of minus the held-out loss, ``"uniform"``, or ``"stacking"``
            (weights maximising the held-out ``log sum_k w_k r_k(theta, x)``, a log score when the
            ratios are normalised: not for variant ``"b"``, whose logits carry an arbitrary
            constant per observation and member).
        nan_policy: ``"drop"`` (warn with a count) or ``"raise"`` for non-finite rows.
        labels: Parameter names for plots.
        validation_fraction: Share of rows held out for early stopping and weights.
        **fit_options: Passed to :func:`ilijax.fit` (``optimizer``, ``learning_rate``,
            ``batch_size``, ``max_epochs``, ``patience``, ``clip_norm``, ``progress``,
            ``shard``, ``validation_chunk``). The validation set is evaluated in chunks of
            equal size (at most ``validation_chunk`` rows), so that no chunk is too small to
            hold a contrastive set.

    Returns:
        ``(posterior, info)``: a :class:`~ilijax.posterior.Posterior` with ``method="nre"`` and
        the :class:`~ilijax.train.FitInfo` of the training.

    Examples:
        >>> import jax, ilijax
        >>> from ilijax.inference.nre import nre
        >>> task = ilijax.tasks.gaussian_linear(dim=2)
        >>> data = ilijax.simulate(jax.random.key(0), task.prior, task.simulator, 2000)
        >>> post, info = nre(jax.random.key(1), data.theta, data.x, prior=task.prior,
        ...                  max_epochs=20, progress=False)
        >>> post.method
        'nre'

    References:
        Hermans, Begy and Louppe, ICML 2020 (NRE-A); Durkan, Murray and Papamakarios, ICML 2020
        (NRE-B); Miller, Weniger and Forré, NeurIPS 2022 (NRE-C); Delaunoy et al., NeurIPS 2022
        (BNRE).
    """
    key = check_key(key)
    prior = validate_prior(prior)
    if variant not in VARIANTS:
        raise ValueError(f"Expected variant in {VARIANTS}; got {variant!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"Expected weighting in {WEIGHTINGS}; got {weighting!r}")
    if weighting == "stacking" and variant == "b":
        raise ValueError(
            "Expected weighting 'softmax' or 'uniform' for variant 'b'; got 'stacking' (NRE-B "
            "logits are ratios only up to a constant per observation, so their held-out log "
            "score does not compare members; use variant 'a', 'c' or 'bnre' for stacking)"
        )
    if variant == "b":
        num_atoms = _check_int("num_atoms", num_atoms, 2)
    elif variant == "c":
        num_atoms = _check_int("num_atoms", num_atoms, 1)
        gamma = _check_float("gamma", gamma, positive=True)
    elif variant == "bnre":
        regularization = _check_float("regularization", regularization, positive=False)
    classifiers = [classifier] if isinstance(classifier, Classifier) else (
        [_default_classifier()] if classifier is None else list(classifier))
    if not classifiers or not all(isinstance(c, Classifier) for c in classifiers):
        raise ValueError(
            f"Expected classifier to be a Classifier bundle (ilijax.estimators.classifier) or a "
            f"list of them; got {classifier!r}"
        )
    member_counts(ensemble, len(classifiers))

    dataset = _data.check_data(theta, x, nan_policy=nan_policy)
    # The same checks as NPE (x rank 2, theta columns, theta in the support); boundary rows
    # need no warning here, as nothing is mapped to the unconstrained space for training.
    check_npe_dataset(prior, dataset, warn_edge=False, embedded=all_embedded(classifiers))

    k_split, k_init, k_fit = jax.random.split(key, 3)
    train, val = _data.split(k_split, dataset, validation_fraction)
    need = _rows_needed(variant, num_atoms)
    batch_size = int(fit_options.get("batch_size", _fit_default("batch_size")))
    batch = min(batch_size, train.theta.shape[0])
    # Equal validation chunks (fit evaluates full chunks plus a remainder): the smallest chunk is
    # about n_val / chunks, never a remainder of a few rows.
    n_val = val.theta.shape[0]
    chunk0 = int(fit_options.get("validation_chunk", _fit_default("validation_chunk")))
    num_chunks = -(-n_val // max(chunk0, 1))
    chunk = -(-n_val // num_chunks)
    fit_options["validation_chunk"] = chunk
    smallest = n_val % chunk or chunk
    for what, rows in (("training minibatches", batch), ("validation chunks", smallest)):
        if rows < need:
            detail = {"b": "num_atoms = ", "c": "num_atoms + 1 = "}.get(variant, "")
            raise ValueError(
                f"Expected {what} of at least {detail}{need} rows for variant {variant!r}; "
                f"got {rows} (batch_size={batch_size}, {train.theta.shape[0]} training and "
                f"{n_val} validation rows). Lower num_atoms or raise batch_size / the data size"
            )

    bundles, params, info = train_groups(
        k_init, k_fit, classifiers, ensemble, train, val,
        make_bundle=lambda c: member_bundle("nre", c, prior),
        make_loss=lambda c: _variant_loss(c, variant, num_atoms, gamma, regularization),
        fit_options=dict(validation_fraction=validation_fraction, **fit_options),
    )

    groups = [Group(b, p, c.spec) for b, p, c in zip(bundles, params, classifiers, strict=True)]
    x_shape = dataset.x.shape[1:]
    member_lp = None
    if weighting == "stacking":
        probe = Posterior(groups, np.ones(info.epochs.size), prior, x_shape=x_shape,
                          method="nre")
        member_lp = jax.jit(jax.vmap(probe.member_log_prob))(val.theta, val.x)
    weights = ensemble_weights(weighting, info.best_validation_loss, info.diverged, member_lp)
    posterior = Posterior(groups, weights, prior, x_shape=x_shape, method="nre", labels=labels)
    return posterior, info


def _default_classifier() -> Classifier:
    from ilijax.estimators.classifier import classifier

    return classifier()


def _variant_loss(clf: Classifier, variant: str, num_atoms: int, gamma: float,
                  regularization: float) -> LossFn:
    if variant == "a":
        return nre_a_loss(clf)
    if variant == "b":
        return nre_b_loss(clf, num_atoms)
    if variant == "c":
        return nre_c_loss(clf, num_atoms, gamma)
    return bnre_loss(clf, regularization)
