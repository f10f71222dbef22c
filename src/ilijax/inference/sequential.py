"""Multi-round (sequential) inference focused on one observation: SNPE, SNLE and SNRE.

Round 1 simulates from the prior. Every later round draws its parameters from the current
posterior at ``x_obs`` (the *proposal*), simulates them, and retrains on all simulations so far:

- ``"npe"`` (SNPE-C / APT, Greenberg et al. 2019): round 1 is maximum-likelihood NPE; later rounds
  train, warm-started from the previous round's params, with the atomic APT loss
  (:func:`apt_loss`), which corrects for the proposal without knowing its density, so the
  estimator stays the posterior ``q(theta | x)`` under the prior.
- ``"nle"`` (SNLE, Papamakarios et al. 2019) and ``"nre"`` (SNRE, Durkan et al. 2020): a likelihood
  or a ratio is valid under any proposal that covers the posterior, so every round retrains
  :func:`ilijax.inference.nle.nle` / :func:`ilijax.inference.nre.nre` on all simulations; their
  posteriors are sampled by MCMC.

For SNPE each round's new simulations are split into training and validation rows once, and the
splits accumulate, so a row never moves from training into validation between rounds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ilijax import data as _data
from ilijax._checks import check_float, check_int, check_key
from ilijax.estimators._base import Estimator
from ilijax.inference._ensemble import ensemble_weights
from ilijax.inference._members import member_counts, shares_embedding
from ilijax.inference.npe import (
    check_estimators,
    check_npe_dataset,
    init_members,
    npe_loss,
    space_bundles,
)
from ilijax.posterior import Group, Posterior, resolve_space
from ilijax.priors import validate_prior
from ilijax.simulate import run_simulator
from ilijax.train import FitInfo, fit

__all__ = ["METHODS", "RoundInfo", "SequentialState", "apt_loss", "sequential",
           "state_from_arrays", "state_to_arrays"]

#: Methods :func:`sequential` runs.
METHODS = ("npe", "nle", "nre")
_KINDS = ("auto", "jax", "numpy")
_NAN_POLICIES = ("drop", "raise")


class RoundInfo(NamedTuple):
    """What happened in one round of :func:`sequential`.

    Attributes:
        round: 1-based round index.
        num_simulations: Simulations requested this round.
        num_kept: Simulations kept after dropping rows with NaN/inf.
        proposal: Where the round's parameters came from: ``"prior"`` (round 1) or
            ``"posterior"`` (the previous round's posterior at ``x_obs``).
        fit_info: The :class:`~ilijax.train.FitInfo` of this round's training.
        simulate_time: Seconds spent running the simulator.
        train_time: Seconds spent training (compilation included).
        sample_time: Seconds spent drawing the round's parameters from the proposal.
    """

    round: int
    num_simulations: int
    num_kept: int
    proposal: str
    fit_info: FitInfo
    simulate_time: float
    train_time: float
    sample_time: float


class SequentialState(NamedTuple):
    """Everything :func:`sequential` needs to continue after a round, on the host.

    Handed to ``on_round`` after every round; pass it (or its :func:`state_to_arrays` dict,
    e.g. ``dict(np.load(path))``) back as ``sequential(..., resume=state)`` with the same key,
    simulator, prior, ``x_obs`` and options, and the run continues at round
    ``rounds_done + 1`` exactly as the uninterrupted run would (bit for bit on CPU): the
    rounds' keys are ``fold_in(key, r)``, the simulations so far are restored, and the
    proposal is the stored posterior.

    Attributes:
        method: ``"npe"``, ``"nle"`` or ``"nre"``.
        rounds_done: Rounds completed.
        theta: One ``(n_r, theta_dim)`` float32 array per round: its kept simulations.
        x: One ``(n_r, *x_shape)`` float32 array per round.
        posterior: The posterior after round ``rounds_done`` (SNPE's warm start and the next
            proposal).
        infos: One :class:`RoundInfo` per round done.
        key: ``uint32`` key data of the run's key (checked on resume).
        x_obs: The observation the rounds focus on.
    """

    method: str
    rounds_done: int
    theta: tuple[np.ndarray, ...]
    x: tuple[np.ndarray, ...]
    posterior: Posterior
    infos: tuple[RoundInfo, ...]
    key: np.ndarray
    x_obs: np.ndarray


_STATE_MARK = "__ilijax_sequential_state__"
_STATE_VERSION = 1
_FIT_ARRAYS = ("train_loss", "validation_loss", "best_validation_loss", "best_epoch", "epochs",
               "diverged", "group")


def state_to_arrays(state: SequentialState) -> dict[str, np.ndarray]:
    """Flattens a :class:`SequentialState` to named numpy arrays for ``np.savez`` (no pickle).

    The posterior is stored as :func:`ilijax.save` stores it (its arrays prefixed
    ``posterior/``), so every group needs an estimator spec (any factory's bundle has one).
    """
    from ilijax._format import posterior_to_arrays

    if not isinstance(state, SequentialState):
        raise ValueError(f"Expected a SequentialState; got {type(state).__name__}")
    out = {f"posterior/{k}": v for k, v in posterior_to_arrays(state.posterior).items()}
    meta = {"version": _STATE_VERSION, "method": state.method,
            "rounds_done": int(state.rounds_done), "infos": []}
    for r, (t, xx, info) in enumerate(zip(state.theta, state.x, state.infos, strict=True)):
        out[f"round{r}/theta"] = np.asarray(t, np.float32)
        out[f"round{r}/x"] = np.asarray(xx, np.float32)
        fi = info.fit_info
        for name in _FIT_ARRAYS:
            out[f"round{r}/fit/{name}"] = np.asarray(getattr(fi, name))
        meta["infos"].append({
            **{k: v for k, v in info._asdict().items() if k != "fit_info"},
            "fit": {"compile_time": float(fi.compile_time), "train_time": float(fi.train_time),
                    "epoch_traces": int(fi.epoch_traces), "sharded": list(fi.sharded),
                    "start_epoch": int(fi.start_epoch)},
        })
    out["key"] = np.asarray(state.key, np.uint32)
    out["x_obs"] = np.asarray(state.x_obs, np.float32)
    out[_STATE_MARK] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    return out


def state_from_arrays(arrays: Mapping[str, Any], *, prior=None) -> SequentialState:
    """Inverse of :func:`state_to_arrays` (``arrays`` a dict or an open ``np.load``).

    Args:
        arrays: The arrays.
        prior: The prior, for priors without a JSON description (as :func:`ilijax.load`).
    """
    from ilijax._format import posterior_from_arrays

    if _STATE_MARK not in arrays:
        raise ValueError(
            f"Expected arrays from ilijax.inference.sequential.state_to_arrays (with a "
            f"{_STATE_MARK!r} entry); got keys {sorted(arrays)[:5]}"
        )
    meta = json.loads(np.asarray(arrays[_STATE_MARK]).tobytes().decode("utf-8"))
    if meta.get("version") != _STATE_VERSION:
        raise ValueError(f"Expected sequential state version {_STATE_VERSION}; got "
                         f"{meta.get('version')!r}")
    post = posterior_from_arrays(
        {k[len("posterior/"):]: arrays[k] for k in arrays if k.startswith("posterior/")},
        prior=prior, source="the sequential state")
    theta, x, infos = [], [], []
    for r, m in enumerate(meta["infos"]):
        theta.append(np.asarray(arrays[f"round{r}/theta"], np.float32))
        x.append(np.asarray(arrays[f"round{r}/x"], np.float32))
        fit_info = FitInfo(**{name: np.asarray(arrays[f"round{r}/fit/{name}"])
                              for name in _FIT_ARRAYS},
                           **{**m["fit"], "sharded": tuple(m["fit"]["sharded"])})
        infos.append(RoundInfo(**{k: v for k, v in m.items() if k != "fit"},
                               fit_info=fit_info))
    return SequentialState(meta["method"], int(meta["rounds_done"]), tuple(theta), tuple(x),
                           post, tuple(infos), np.asarray(arrays["key"], np.uint32),
                           np.asarray(arrays["x_obs"], np.float32))


def atom_indices(key: jax.Array, num_rows: int, num_atoms: int) -> jax.Array:
    """Row indices of the atoms of each row of a minibatch: ``(num_rows, num_atoms)``.

    Column 0 is the row itself; columns ``1..num_atoms-1`` are distinct other rows. One random
    permutation of the rows is drawn and each row takes the ``num_atoms - 1`` rows that follow it
    cyclically in that order, so for every row its contrasting set is a uniformly random subset
    of the other rows (as sbi's multinomial draw without replacement), at ``O(num_rows *
    num_atoms)`` memory instead of ``O(num_rows^2)``: the validation loss sees thousands of rows
    at once. Sets of different rows are not independent, which leaves each row's expected loss
    unchanged.

    Args:
        key: PRNG key.
        num_rows: Rows in the minibatch (static).
        num_atoms: Atoms per row, ``1 <= num_atoms <= num_rows`` (static).

    Returns:
        int32 indices.
    """
    if not 1 <= num_atoms <= num_rows:
        raise ValueError(f"Expected 1 <= num_atoms <= num_rows ({num_rows}); got {num_atoms}")
    perm = jax.random.permutation(key, num_rows)
    position = jnp.zeros(num_rows, jnp.int32).at[perm].set(jnp.arange(num_rows, dtype=jnp.int32))
    offsets = position[:, None] + jnp.arange(num_atoms, dtype=jnp.int32)[None, :]
    return perm[offsets % num_rows].astype(jnp.int32)


def apt_loss(estimator: Estimator, prior, num_atoms: int = 10):
    """The atomic APT (SNPE-C) loss for one member and one minibatch.

    For row ``i`` with atoms ``theta_i`` and ``num_atoms - 1`` other parameters of the minibatch
    (:func:`atom_indices`, drawn with the loss key),

        loss_i = -log [ (q(theta_i | x_i) / p(theta_i)) / sum_j (q(theta_j | x_i) / p(theta_j)) ],

    the sum running over the atoms of row ``i``; the loss is the mean over rows. ``q`` is the
    estimator's density in theta-space (wrap it with ``on_support``; a theta-space core
    may be given bare, as its in-support mass ``Z(x_i)`` cancels between the atoms of row
    ``i``) and ``p`` the prior.
    Whatever proposal the rows were drawn from, the loss is minimised by ``q`` equal to the true
    posterior (Greenberg et al. 2019, Proposition 1 with atomic proposals), which is what lets
    later rounds train on proposal draws. With fewer rows than ``num_atoms`` (a small last
    validation chunk) every row of the batch is an atom. ``num_atoms = 1`` gives zero.

    Args:
        estimator: The bundle; ``log_prob(params, theta, x)`` is ``log q(theta | x)``.
        prior: The prior (numpyro distribution with event shape ``(theta_dim,)``).
        num_atoms: Atoms per row, the row's own parameter included (sbi's default is 10).

    Returns:
        ``loss(params, batch, key) -> scalar`` with ``batch`` a :class:`ilijax.data.Dataset`.

    References:
        Greenberg, Nonnenmacher and Macke, "Automatic Posterior Transformation for
        Likelihood-Free Inference", ICML 2019 (Eq. 6 and Section 3.3, "atomic proposals").
    """
    num_atoms = int(num_atoms)
    if num_atoms < 1:
        raise ValueError(f"Expected num_atoms >= 1; got {num_atoms}")
    log_q = jax.vmap(jax.vmap(estimator.log_prob, (None, 0, None)), (None, 0, 0))

    def loss(params, batch, key):
        theta, x = batch.theta, batch.x
        n = theta.shape[0]
        idx = atom_indices(key, n, min(num_atoms, n))  # (n, m)
        logits = log_q(params, theta[idx], x) - prior.log_prob(theta)[idx]  # (n, m)
        return -jnp.mean(logits[:, 0] - jax.nn.logsumexp(logits, axis=1))

    return loss


_check_int = check_int


def _budgets(simulations_per_round: Any, rounds: int) -> list[int]:
    if isinstance(simulations_per_round, int | np.integer) and not isinstance(
        simulations_per_round, bool
    ):
        return [_check_int("simulations_per_round", simulations_per_round, 2)] * rounds
    if isinstance(simulations_per_round, Sequence) and not isinstance(simulations_per_round, str):
        if len(simulations_per_round) != rounds:
            raise ValueError(
                f"Expected simulations_per_round to be an int or one int per round ({rounds}); "
                f"got {len(simulations_per_round)} values"
            )
        return [_check_int("simulations_per_round", n, 2) for n in simulations_per_round]
    raise ValueError(
        f"Expected simulations_per_round to be an int >= 2 or one per round; got "
        f"{simulations_per_round!r}"
    )


def _check_x_obs(x_obs: Any) -> np.ndarray:
    try:
        x = np.asarray(x_obs, np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"Expected x_obs to be a numeric array; got {type(x_obs).__name__}") from e
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1 or x.size == 0:
        raise ValueError(
            f"Expected x_obs to be one observation of shape (x_dim,); got shape {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"Expected finite x_obs; got {int((~np.isfinite(x)).sum())} NaN/inf")
    return x


def _concat(parts: list[_data.Dataset]) -> _data.Dataset:
    return _data.Dataset(jnp.concatenate([p.theta for p in parts]),
                         jnp.concatenate([p.x for p in parts]))


def sequential(
    key: jax.Array,
    simulator: Callable[..., Any],
    prior,
    x_obs: Any,
    *,
    method: str = "npe",
    rounds: int = 2,
    simulations_per_round: int | Sequence[int] = 1000,
    estimator: Estimator | Sequence[Estimator] | None = None,
    classifier: Any = None,
    ensemble: int | Sequence[int] = 1,
    num_atoms: int = 10,
    proposal_samples_options: Mapping[str, Any] | None = None,
    simulator_kind: str = "auto",
    nan_policy: str = "drop",
    progress: bool = True,
    labels: Sequence[str] | None = None,
    on_round: Callable[[SequentialState], None] | None = None,
    resume: SequentialState | Mapping[str, Any] | None = None,
    space: str = "auto",
    **fit_options,
) -> tuple[Posterior, list[RoundInfo]]:
    """Multi-round inference for one observation ``x_obs`` (SNPE-C/APT, SNLE or SNRE).

    Round 1 draws ``simulations_per_round`` parameters from the prior; round ``r > 1`` draws
    them from the round ``r - 1`` posterior at ``x_obs``. Each round simulates its parameters,
    drops rows with NaN/inf (with a warning that counts them, ``nan_policy="drop"``) and trains
    on all simulations so far (see the module docstring for each method).

    Args:
        key: PRNG key; round ``r`` uses ``jax.random.fold_in(key, r - 1)``.
        simulator: A JAX function ``(key, theta) -> x`` for one parameter vector (vmapped and
            jitted) or a Python callable ``(theta_batch) -> x_batch`` on numpy batches; see
            :func:`ilijax.simulate.run_simulator`.
        prior: numpyro distribution with event shape ``(theta_dim,)``.
        x_obs: The observation, ``(x_dim,)`` (``(1, x_dim)`` is accepted).
        method: ``"npe"``, ``"nle"`` or ``"nre"``.
        rounds: Number of rounds (1 is plain amortised inference on prior simulations).
        simulations_per_round: Simulations per round: an int, or one int per round.
        estimator: For ``"npe"`` and ``"nle"``: a bundle from ``ilijax.estimators`` or a list
            (NPE: heterogeneous groups); default as :func:`ilijax.inference.npe.npe` / ``nle``.
        classifier: For ``"nre"``: the ratio classifier (default as ``nre``).
        ensemble: Members per bundle.
        num_atoms: Atoms per row of the APT loss (``"npe"``) and of the NRE loss (``"nre"``);
            at least 2.
        proposal_samples_options: Keyword arguments for ``posterior.sample`` when drawing
            proposals (e.g. MCMC settings for ``"nle"``/``"nre"``).
        simulator_kind: ``"auto"``, ``"jax"`` or ``"numpy"`` (see
            :func:`ilijax.simulate.run_simulator`).
        nan_policy: ``"drop"`` or ``"raise"`` for simulations with NaN/inf.
        progress: Show progress bars (rounds, simulation, training) on stderr.
        labels: Parameter names for plots.
        on_round: ``on_round(state)``, called on the host after every round with a
            :class:`SequentialState` (the simulations so far, the posterior, the round infos):
            the checkpoint of a multi-round run, as ``on_checkpoint`` is ``fit``'s. Persist it
            without pickle with :func:`state_to_arrays` (the pipeline writes
            ``{name}_rounds.npz``). An exception raised here stops the run and propagates.
        resume: A :class:`SequentialState` from ``on_round``, or its :func:`state_to_arrays`
            dict, to continue a killed run at the next round; call with the same key,
            simulator, prior, ``x_obs``, method and options (method, key, ``x_obs`` and the
            budgets of the rounds done are checked, ``ValueError`` on a mismatch).
        space: ``"auto"`` (default: ``"theta"`` for NPE with a bounded prior, else
            ``"unconstrained"``), ``"theta"`` or ``"unconstrained"``, as in
            :func:`ilijax.inference.npe.npe`. In theta space round 1 trains the bare flow by
            maximum likelihood and later rounds by the APT loss on it (the in-support mass
            cancels between the atoms of a row), and proposals are drawn by rejection into
            the support. Other methods accept only ``"auto"`` and ``"unconstrained"``.
        **fit_options: Passed to :func:`ilijax.fit` (``max_epochs``, ``batch_size``,
            ``learning_rate``, ``patience``, ...), with ``schedule="constant"`` unless given
            (sbi's training per round: Adam 5e-4, early stopping after 20 epochs; fit's
            default fixed-length cosine run would spend 40,000 steps on every round);
            ``validation_fraction`` (default 0.1) is the
            share of each round's simulations held out. ``checkpoint_every`` and
            ``on_checkpoint`` apply to every round's training (each round's states start again
            at epoch 0); a round itself resumes from its start.

    Returns:
        ``(posterior, rounds_info)``: the last round's :class:`~ilijax.posterior.Posterior` and
        one :class:`RoundInfo` per round.

    Raises:
        ValueError: On bad arguments (each message names the field), an ``x_obs`` whose shape
            differs from the simulator's output, or too few finite simulations in a round.

    Examples:
        >>> import jax, ilijax
        >>> from ilijax.inference.sequential import sequential
        >>> task = ilijax.tasks.two_moons()
        >>> x_obs = task.simulator(jax.random.key(0), jax.numpy.array([0.3, -0.2]))
        >>> post, info = sequential(jax.random.key(1), task.simulator, task.prior, x_obs,
        ...                         rounds=2, simulations_per_round=500,
        ...                         estimator=ilijax.estimators.maf(), max_epochs=20,
        ...                         progress=False)
        >>> [i.proposal for i in info]
        ['prior', 'posterior']

    References:
        Greenberg, Nonnenmacher and Macke, "Automatic Posterior Transformation for
        Likelihood-Free Inference", ICML 2019. Papamakarios, Sterratt and Murray, "Sequential
        Neural Likelihood", AISTATS 2019. Durkan, Murray and Papamakarios, "On Contrastive
        Learning for Likelihood-Free Inference", ICML 2020.
    """
    key = check_key(key)
    prior = validate_prior(prior)
    if method not in METHODS:
        raise ValueError(f"Expected method in {METHODS}; got {method!r}")
    space = resolve_space(space, prior, method)
    rounds = _check_int("rounds", rounds, 1)
    if on_round is not None and not callable(on_round):
        raise ValueError(f"Expected on_round to be callable; got {on_round!r}")
    budgets = _budgets(simulations_per_round, rounds)
    if isinstance(ensemble, int | np.integer) and not isinstance(ensemble, bool):
        ensemble = _check_int("ensemble", ensemble, 1)
    if method in ("npe", "nre"):
        num_atoms = _check_int("num_atoms", num_atoms, 2)
    if simulator_kind not in _KINDS:
        raise ValueError(f"Expected simulator_kind in {_KINDS}; got {simulator_kind!r}")
    if nan_policy not in _NAN_POLICIES:
        raise ValueError(f"Expected nan_policy in {_NAN_POLICIES}; got {nan_policy!r}")
    if proposal_samples_options is None:
        proposal_samples_options = {}
    if not isinstance(proposal_samples_options, Mapping):
        raise ValueError(
            f"Expected proposal_samples_options to be a dict of posterior.sample options; got "
            f"{proposal_samples_options!r}"
        )
    if not callable(simulator):
        raise ValueError(f"Expected simulator to be callable; got {simulator!r}")
    if method == "nre":
        if estimator is not None:
            raise ValueError("Expected estimator=None for method='nre' (pass classifier=...)")
    elif classifier is not None:
        raise ValueError(f"Expected classifier=None for method={method!r} (it is used by 'nre')")
    x_obs = _check_x_obs(x_obs)
    validation_fraction = fit_options.pop("validation_fraction", 0.1)
    # Rounds are short and retrained (or warm-started) every round: sbi's constant rate with
    # early stopping, not fit's fixed-length cosine run (40,000 steps per round), unless asked.
    fit_options.setdefault("schedule", "constant")
    check_float("validation_fraction", validation_fraction, low=0.0, high=1.0)
    key_data = np.asarray(jax.random.key_data(key) if jnp.issubdtype(
        key.dtype, jax.dtypes.prng_key) else key, np.uint32)
    state = _check_resume(resume, method, key_data, x_obs, budgets, prior)
    if state is not None and state.posterior.space != space:
        raise ValueError(f"Expected a resume state of space {space!r}; got "
                         f"{state.posterior.space!r}")

    if method == "npe":
        estimators = check_estimators(estimator, ensemble)
        if any(shares_embedding(e, c) for e, c in zip(
                estimators, member_counts(ensemble, len(estimators)), strict=True)):
            raise ValueError(
                "Expected share_embedding=False for sequential NPE (its rounds warm-start every "
                "member, embedding included); got an estimator with share_embedding=True"
            )
        trainer = _SNPE(prior, estimators, ensemble, num_atoms,
                        validation_fraction, labels, progress, fit_options, space)
    else:
        trainer = _Retrain(method, prior, estimator, classifier, ensemble, num_atoms,
                           validation_fraction, labels, progress, fit_options)

    posterior, infos, done = None, [], 0
    history: list[_data.Dataset] = []
    if state is not None:
        done, posterior, infos = state.rounds_done, state.posterior, list(state.infos)
        for r in range(done):
            new = _data.Dataset(jnp.asarray(state.theta[r]), jnp.asarray(state.x[r]))
            history.append(new)
            trainer.restore(_round_keys(key, r)[2], new)
        trainer.set_posterior(posterior)
    bar = None
    if progress:
        from ilijax._progress import progress_bar

        bar = progress_bar(total=rounds, desc="rounds", unit="round", initial=done, leave=True)
    x_obs_j = jnp.asarray(x_obs)
    for r, n in enumerate(budgets):
        if r < done:
            continue
        k_theta, k_sim, k_train = _round_keys(key, r)
        t0 = time.perf_counter()
        if posterior is None:
            theta = prior.sample(k_theta, (n,))
        else:
            theta = posterior.sample(k_theta, x_obs_j, n, **proposal_samples_options)
        theta = np.asarray(theta, np.float32)
        sample_time = time.perf_counter() - t0

        t0 = time.perf_counter()
        x = run_simulator(k_sim, simulator, theta, kind=simulator_kind, progress=progress)
        simulate_time = time.perf_counter() - t0
        new = _data.check_data(theta, x, nan_policy=nan_policy)
        if r == 0 and new.x.shape[1:] != x_obs.shape:
            raise ValueError(
                f"Expected x_obs of the simulator's output shape {tuple(new.x.shape[1:])}; got "
                f"{x_obs.shape}"
            )

        t0 = time.perf_counter()
        posterior, fit_info = trainer.round(k_train, r, new)
        train_time = time.perf_counter() - t0
        infos.append(RoundInfo(r + 1, n, int(new.theta.shape[0]),
                               "prior" if r == 0 else "posterior", fit_info, simulate_time,
                               train_time, sample_time))
        history.append(new)
        if on_round is not None:
            on_round(SequentialState(
                method, r + 1, tuple(np.asarray(h.theta) for h in history),
                tuple(np.asarray(h.x) for h in history), posterior, tuple(infos),
                key_data.copy(), x_obs.copy()))
        if bar is not None:
            best = float(np.nanmin(fit_info.best_validation_loss))
            bar.set_postfix(kept=f"{new.theta.shape[0]}/{n}", best_val=f"{best:.4g}")
            bar.update(1)
    if bar is not None:
        bar.close()
    return posterior, infos


def _round_keys(key: jax.Array, r: int):
    """``(k_theta, k_sim, k_train)`` of round ``r`` (0-based)."""
    return jax.random.split(jax.random.fold_in(key, r), 3)


def _check_resume(resume, method, key_data, x_obs, budgets, prior) -> SequentialState | None:
    if resume is None:
        return None
    if isinstance(resume, Mapping):
        resume = state_from_arrays(resume, prior=prior)
    if not isinstance(resume, SequentialState):
        raise ValueError(
            f"Expected resume to be a SequentialState (from on_round) or its state_to_arrays "
            f"dict; got {type(resume).__name__} (a fit TrainState cannot resume a multi-round "
            f"run)"
        )
    if resume.method != method:
        raise ValueError(f"Expected a resume state of method {method!r}; got "
                         f"{resume.method!r}")
    if not np.array_equal(np.asarray(resume.key, np.uint32), key_data):
        raise ValueError("Expected the resume state to come from a run with the same key; got "
                         "a state made with another key")
    if resume.x_obs.shape != x_obs.shape or not np.array_equal(resume.x_obs, x_obs):
        raise ValueError("Expected the resume state to come from a run at the same x_obs; got "
                         "another observation")
    if not 1 <= resume.rounds_done <= len(budgets):
        raise ValueError(f"Expected a resume state with 1 to {len(budgets)} rounds done; got "
                         f"{resume.rounds_done}")
    done = [i.num_simulations for i in resume.infos]
    if done != budgets[:resume.rounds_done]:
        raise ValueError(f"Expected the resume state's rounds to have the budgets "
                         f"{budgets[:resume.rounds_done]}; got {done}")
    return resume


class _SNPE:
    """SNPE-C: NPE in round 1, then the atomic APT loss on all simulations, warm-started."""

    def __init__(self, prior, estimators, ensemble, num_atoms, validation_fraction, labels,
                 progress, fit_options, space="unconstrained"):
        self.prior, self.estimators, self.ensemble = prior, estimators, ensemble
        self.space = space
        self.num_atoms, self.validation_fraction = num_atoms, validation_fraction
        self.labels, self.progress, self.fit_options = labels, progress, fit_options
        self.train, self.val, self.params = [], [], None

    def restore(self, key, new):
        """Appends a finished round's splits (as ``round`` made them), for a resume."""
        k_split = jax.random.split(key, 3)[0]
        train, val = _data.split(k_split, new, self.validation_fraction)
        self.train.append(train)
        self.val.append(val)

    def set_posterior(self, posterior):
        self.params = [g.params for g in posterior.groups]

    def round(self, key, r, new):
        _, k_init, k_fit = jax.random.split(key, 3)
        # The proposal's own draws may round onto a closed boundary in float32; only the
        # prior's are reported (as npe does).
        bijector = check_npe_dataset(self.prior, new, stacklevel=4,
                                     warn_edge=r == 0 and self.space != "theta")
        self.restore(key, new)
        train, val = _concat(self.train), _concat(self.val)
        make_bundle, make_trained = space_bundles(self.space, self.prior, bijector)
        wrapped = [make_bundle(e) for e in self.estimators]
        trained = [make_trained(e) for e in self.estimators]
        if r == 0:
            self.params = init_members(k_init, wrapped, self.ensemble, train)
            losses = [npe_loss(t) for t in trained]
        else:
            losses = [apt_loss(t, self.prior, self.num_atoms) for t in trained]
        self.params, info = fit(k_fit, self.params, losses, train, val,
                                progress=self.progress, **self.fit_options)
        groups = [Group(w, p, e.spec)
                  for w, p, e in zip(wrapped, self.params, self.estimators, strict=True)]
        weights = ensemble_weights("softmax", info.best_validation_loss, info.diverged)
        posterior = Posterior(groups, weights, self.prior, x_dim=new.x.shape[1], method="npe",
                              labels=self.labels, space=self.space)
        return posterior, info


class _Retrain:
    """SNLE / SNRE: retrain ``nle`` / ``nre`` on all simulations so far, every round."""

    def __init__(self, method, prior, estimator, classifier, ensemble, num_atoms,
                 validation_fraction, labels, progress, fit_options):
        self.method, self.prior = method, prior
        self.estimator, self.classifier = estimator, classifier
        self.ensemble, self.num_atoms = ensemble, num_atoms
        self.validation_fraction, self.labels = validation_fraction, labels
        self.progress, self.fit_options = progress, fit_options
        self.parts = []

    def restore(self, key, new):
        del key
        self.parts.append(new)

    def set_posterior(self, posterior):
        del posterior  # every round retrains from scratch

    def round(self, key, r, new):
        del r
        self.parts.append(new)
        data = _concat(self.parts)
        common = dict(prior=self.prior, ensemble=self.ensemble, labels=self.labels,
                      validation_fraction=self.validation_fraction, progress=self.progress,
                      **self.fit_options)
        if self.method == "nle":
            from ilijax.inference.nle import nle

            return nle(key, data.theta, data.x, estimator=self.estimator, **common)
        from ilijax.inference.nre import nre

        return nre(key, data.theta, data.x, classifier=self.classifier,
                   num_atoms=self.num_atoms, **common)
