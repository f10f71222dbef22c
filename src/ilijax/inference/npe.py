"""Neural posterior estimation (NPE).

Trains conditional density estimators ``q(theta | x)`` by maximum likelihood on simulated pairs
(Papamakarios & Murray 2016, "Fast epsilon-free inference of simulation models with Bayesian
conditional density estimation"; Greenberg et al. 2019 for the single-round case of APT, which is
this loss). For a bounded prior the estimators learn theta itself by default and the posterior is
the flow truncated to the support (sbi's leakage correction,
:func:`~ilijax.estimators._support.truncated_to_support`), so its draws never leave it; with
``space="unconstrained"`` they learn in the unconstrained space of the support instead, where
the posterior is normalised exactly (:func:`ilijax.estimators.on_support`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ilijax import data as _data
from ilijax._checks import check_key
from ilijax.estimators._base import Estimator
from ilijax.estimators._support import on_support, truncated_to_support
from ilijax.estimators.embedded import embedding_parts
from ilijax.inference._ensemble import WEIGHTINGS, ensemble_weights
from ilijax.inference._members import init_group, member_counts, train_groups
from ilijax.posterior import Group, Posterior, resolve_space
from ilijax.priors import support_bijector, validate_prior
from ilijax.train import FitInfo

__all__ = ["npe", "npe_loss"]


def npe_loss(estimator: Estimator):
    """The NPE loss ``-mean_i log q(theta_i | x_i)`` for one member and one minibatch.

    Args:
        estimator: The bundle whose ``log_prob`` is the density of the training theta: wrapped
            by ``on_support`` in the unconstrained space, the bare core in theta space (its
            density unnormalised on the support, as sbi trains it).

    Returns:
        ``loss(params, batch, key) -> scalar`` with ``batch`` a :class:`ilijax.data.Dataset`.
    """

    def loss(params, batch, key):
        del key
        lp = jax.vmap(estimator.log_prob, in_axes=(None, 0, 0))(params, batch.theta, batch.x)
        return -jnp.mean(lp)

    return loss


def _default_estimator() -> Estimator:
    from ilijax.estimators.nsf import nsf

    return nsf()


def npe(
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
    space: str = "auto",
    **fit_options,
) -> tuple[Posterior, FitInfo]:
    """Trains an NPE ensemble on ``(theta, x)`` pairs and returns its posterior.

    Args:
        key: PRNG key; the same key gives the same split, initialisation, training and weights.
        theta: ``(n, theta_dim)`` parameters, drawn from ``prior``.
        x: ``(n, x_dim)`` simulated data, or ``(n, *x_shape)`` (spectra, maps, point clouds)
            when every estimator has an embedding network (:func:`ilijax.estimators.embedded`).
        prior: numpyro distribution with event shape ``(theta_dim,)`` (see ``ilijax.priors``).
        estimator: A bundle from ``ilijax.estimators`` (default ``nsf()``: hidden 50,
            5 transforms, 10 bins, as sbi), or a list of bundles: a heterogeneous ensemble, each
            bundle a group trained in the same compiled program. An embedded bundle
            (``ilijax.estimators.embedded(nsf(), ilijax.nn.CNN2D(...))``) trains its embedding
            jointly; with ``share_embedding=True`` one embedding is trained and shared by the
            group's members (see :mod:`ilijax.inference._members`).
        ensemble: Members per bundle (each from its own key): one int for every bundle, or one
            int per bundle (ltu-ili's ``repeats``).
        weighting: ``"softmax"`` of the held-out log-likelihood (ltu-ili's default),
            ``"uniform"`` or ``"stacking"`` (weights maximising the held-out mixture log score).
        nan_policy: ``"drop"`` (warn with a count) or ``"raise"`` for non-finite rows.
        labels: Parameter names for plots.
        validation_fraction: Share of rows held out for early stopping and weights.
        space: Where the flows learn: ``"auto"`` (default), ``"theta"`` or
            ``"unconstrained"``. ``"auto"`` is ``"theta"`` when the prior's support is
            bounded (a box, a positive or a half-bounded one) and ``"unconstrained"`` when it
            is all of R^d, where the two are the same density (see
            :func:`ilijax.posterior.resolve_space`); ``posterior.space`` says which ran.

            - ``"theta"``: the flow models theta itself (z-scored by the training theta) and
              is trained unnormalised, as sbi does; the posterior is the flow truncated to
              the support (:func:`~ilijax.estimators._support.truncated_to_support`): ``log_prob``
              divides by the in-support mass ``Z(x)``, estimated from ``M = 4096`` flow
              draws with a fixed key (deterministic; standard error
              ``sqrt(Z (1 - Z) / M)``, see :meth:`Posterior.support_mass`), so every
              ``log_prob`` observation costs ``M`` flow draws per member on top of the
              density; direct sampling rejects draws outside the support in batches (about
              ``1 / Z(x)`` flow draws per draw; NaN after 2048 candidates per draw) and warns
              where the estimated mass is below 1%.
            - ``"unconstrained"``: the flow models ``u = T^{-1}(theta)``, ``T`` the prior's
              support bijection (a scaled sigmoid for a box), and the posterior is its
              pushforward (:func:`ilijax.estimators.on_support`): exactly normalised on the
              support, direct draws cost one flow pass each. Near a box edge, though, a
              posterior that is cut by the edge becomes an exponential tail in ``u``, which
              a spline flow's linear tails fit poorly.

            Theta space scored better C2ST on the sbibm box tasks compared in both spaces
            (two_moons, gaussian_mixture, slcp; ``benchmarks/README.md``) but is
            over-confident where a posterior piles up against an edge (the demo's curvature);
            keep ``"unconstrained"`` where ``log_prob``
            must be cheap or exactly normalised, or where the flow leaks most of its mass out
            of the support (an observation far from the simulations).
        **fit_options: Passed to :func:`ilijax.fit` unchanged (``optimizer``, ``learning_rate``,
            ``batch_size``, ``max_epochs``, ``patience``, ``clip_norm``, ``progress``, ``shard``).

    Returns:
        ``(posterior, info)``: a :class:`~ilijax.posterior.Posterior` and the
        :class:`~ilijax.train.FitInfo` of the training.

    Examples:
        >>> import jax, ilijax
        >>> task = ilijax.tasks.gaussian_linear()
        >>> data = ilijax.simulate(jax.random.key(0), task.prior, task.simulator, 2000)
        >>> post, info = ilijax.npe(jax.random.key(1), data.theta, data.x, prior=task.prior,
        ...                         estimator=ilijax.estimators.maf(), progress=False)
        >>> post.sample(jax.random.key(2), data.x[:3], 100).shape
        (3, 100, 10)
    """
    key = check_key(key)
    prior = validate_prior(prior)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"Expected weighting in {WEIGHTINGS}; got {weighting!r}")
    space = resolve_space(space, prior)
    estimators = check_estimators(estimator, ensemble)
    dataset = _data.check_data(theta, x, nan_policy=nan_policy)
    bijector = check_npe_dataset(prior, dataset, stacklevel=3, warn_edge=space != "theta",
                                 embedded=all_embedded(estimators))

    k_split, k_init, k_fit = jax.random.split(key, 3)
    train, val = _data.split(k_split, dataset, validation_fraction)
    make_bundle, make_trained = space_bundles(space, prior, bijector)
    wrapped, params, info = train_groups(
        k_init, k_fit, estimators, ensemble, train, val,
        make_bundle=make_bundle,
        make_loss=lambda e: npe_loss(make_trained(e)),
        fit_options=dict(validation_fraction=validation_fraction, **fit_options),
    )

    groups = [Group(w, p, e.spec) for w, p, e in zip(wrapped, params, estimators, strict=True)]
    x_shape = dataset.x.shape[1:]
    member_lp = None
    if weighting == "stacking":
        probe = Posterior(groups, np.ones(info.epochs.size), prior, x_shape=x_shape,
                          space=space)
        member_lp = jax.jit(jax.vmap(probe.member_log_prob))(val.theta, val.x)
    weights = ensemble_weights(weighting, info.best_validation_loss, info.diverged, member_lp)
    posterior = Posterior(groups, weights, prior, x_shape=x_shape, method="npe", labels=labels,
                          space=space)
    return posterior, info


def space_bundles(space: str, prior, bijector):
    """``(make_bundle, make_trained)`` for ``space``: the member bundle the posterior evaluates
    and the bundle whose ``log_prob`` the loss maximises on the training theta (on_support for
    both in the unconstrained space; in theta space the truncated bundle, and the bare core,
    whose normaliser ``Z(x)`` is not estimated per training row)."""
    if space == "theta":
        return (lambda e: truncated_to_support(e, prior)), (lambda e: e)
    wrap = lambda e: on_support(e, bijector)  # noqa: E731
    return wrap, wrap


# Set-up shared with ``ilijax.inference.sequential`` (SNPE trains the same bundles round by round).


def check_estimators(
    estimator: Estimator | Sequence[Estimator] | None, ensemble: int | Sequence[int]
) -> list[Estimator]:
    """The list of bundles (one group each) from ``estimator``; checks ``ensemble`` (an int
    >= 1, or one per bundle)."""
    estimators = [estimator] if isinstance(estimator, Estimator) else (
        [_default_estimator()] if estimator is None else list(estimator))
    if not estimators or not all(isinstance(e, Estimator) for e in estimators):
        raise ValueError(
            f"Expected estimator to be an Estimator bundle or a list of them; got {estimator!r}"
        )
    member_counts(ensemble, len(estimators))
    return estimators


def all_embedded(estimators: Sequence[Any]) -> bool:
    """Whether every bundle has an embedding network (then ``x`` may have any event shape)."""
    return all(embedding_parts(e) is not None for e in estimators)


def check_npe_dataset(
    prior,
    dataset: _data.Dataset,
    *,
    stacklevel: int = 2,
    warn_edge: bool = True,
    embedded: bool = False,
):
    """Checks a checked dataset against the prior and returns the prior's support bijector.

    ``x`` must be ``(n, x_dim)`` (any ``(n, *x_shape)`` when ``embedded``: the embedding
    networks check the event shape), ``theta`` must have the prior's columns and lie in its
    support; rows exactly on the boundary of a closed support are counted in a warning
    (``warn_edge``).
    """
    if dataset.x.ndim != 2 and not embedded:
        raise ValueError(
            f"Expected x of shape (n, x_dim); got {dataset.x.shape}. Flatten it, or use an "
            f"embedding network (ilijax.estimators.embedded)"
        )
    theta_dim = int(prior.event_shape[0])
    if dataset.theta.shape[1] != theta_dim:
        raise ValueError(
            f"Expected theta with {theta_dim} columns (the prior's event shape); got "
            f"{dataset.theta.shape[1]}"
        )
    _data.check_theta_in_support(prior, dataset.theta)
    bijector = support_bijector(prior)
    if warn_edge:
        on_edge = ~np.all(np.isfinite(np.asarray(bijector.inv(dataset.theta))), axis=1)
        if on_edge.any():
            warnings.warn(
                f"{int(on_edge.sum())} of {on_edge.size} rows of theta lie exactly on the "
                f"boundary of the prior support; they are treated as lying just inside it",
                UserWarning,
                stacklevel=stacklevel,
            )
    return bijector


def init_members(key: jax.Array, wrapped: Sequence[Estimator], ensemble: int | Sequence[int],
                 train) -> list:
    """Stacked params of ``ensemble`` members per group (an int for all, or one per group),
    standardised on ``train``."""
    counts = member_counts(ensemble, len(wrapped))
    return [init_group(jax.random.fold_in(key, i), w, counts[i], train.theta, train.x)
            for i, w in enumerate(wrapped)]

