"""Benchmark observations and reference posterior draws (sbibm's published files).

sbibm (Lueckmann et al., "Benchmarking Simulation-Based Inference", AISTATS 2021; MIT licence)
ships, for each task, 10 observations with their true parameters and 10,000 reference
posterior draws. :func:`load_reference` reads them straight from sbibm's wheel: the wheel is
fetched once with ``pip download sbibm==1.1.0 --no-deps`` into a cache folder (checked against
its SHA-256) and read as a zip file; sbibm and torch are never installed or imported.

Where the wheel cannot be had (no index reachable, ``source="ilijax"``), :func:`load_reference`
makes its own: the ``k``-th observation is simulated at a parameter drawn from the prior with
the fixed key ``fold_in(key(seed), k)``, and the reference draws come from the task's exact
sampler or, where it has none (``slcp``, ``bernoulli_glm``), from NUTS on the task's exact
likelihood. ``Reference.source`` says which; such observations differ from sbibm's, so C2ST
numbers are then comparable to the published ones in distribution only.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ilijax._checks import check_key
from ilijax.tasks._base import Task

__all__ = [
    "SBIBM_TASKS",
    "SBIBM_VERSION",
    "Reference",
    "cache_dir",
    "load_reference",
    "mcmc_reference",
    "sbibm_file",
    "sbibm_wheel",
]

SBIBM_VERSION = "1.1.0"
_SBIBM_WHEEL = f"sbibm-{SBIBM_VERSION}-py2.py3-none-any.whl"
_SBIBM_SHA256 = "12ecc6b4d327b92f9225f08faa6405e4274fb8e75943d86a53157d1b1bcfaf74"
#: Tasks whose reference files sbibm ships and ilijax implements.
SBIBM_TASKS = ("bernoulli_glm", "gaussian_linear", "gaussian_linear_uniform",
               "gaussian_mixture", "slcp", "two_moons")
#: Parameters whose sign the likelihood ignores (used by the MCMC fallback to balance modes).
_SIGN_SYMMETRIC = {"slcp": (2, 3)}


class Reference(NamedTuple):
    """One benchmark observation and its reference posterior.

    Attributes:
        task: Task name.
        num_observation: sbibm's observation number, 1-10.
        observation: ``(x_dim,)`` the observed data.
        true_parameters: ``(theta_dim,)`` the parameters it was simulated at.
        samples: ``(n, theta_dim)`` reference posterior draws.
        source: Where they come from: ``"sbibm-1.1.0 wheel"``, ``"ilijax exact sampler"`` or
            ``"ilijax NUTS on the exact likelihood"`` (with the reason the files were not used).
    """

    task: str
    num_observation: int
    observation: np.ndarray
    true_parameters: np.ndarray
    samples: np.ndarray
    source: str


def cache_dir() -> Path:
    """``$ILIJAX_CACHE`` or ``$XDG_CACHE_HOME/ilijax`` (default ``~/.cache/ilijax``)."""
    if os.environ.get("ILIJAX_CACHE"):
        return Path(os.environ["ILIJAX_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ilijax"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sbibm_wheel(folder: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The path of sbibm's wheel in the cache, fetched with pip (no dependencies) if missing.

    Args:
        folder: Cache folder (default ``cache_dir() / "sbibm"``).
        download: Fetch the wheel when it is not cached; if False a missing wheel is an error.

    Returns:
        Path of ``sbibm-1.1.0-py2.py3-none-any.whl``, verified against its SHA-256.

    Raises:
        FileNotFoundError: The wheel is not cached and ``download`` is False, or pip failed
            (its message is included).
        ValueError: The file's SHA-256 is not the published one.
    """
    folder = Path(folder) if folder is not None else cache_dir() / "sbibm"
    path = folder / _SBIBM_WHEEL
    if not path.exists():
        if not download:
            raise FileNotFoundError(f"sbibm wheel not cached at {path}")
        folder.mkdir(parents=True, exist_ok=True)
        # into a private folder first, then renamed: concurrent callers never see half a file
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", f"sbibm=={SBIBM_VERSION}",
                   "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q",
                   "-d", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            got = Path(tmp) / _SBIBM_WHEEL
            if done.returncode != 0 or not got.exists():
                raise FileNotFoundError(
                    f"could not fetch sbibm=={SBIBM_VERSION} with pip into {folder}: "
                    f"{(done.stderr or done.stdout).strip()[-500:]}"
                )
            os.replace(got, path)
    digest = _sha256(path)
    if digest != _SBIBM_SHA256:
        raise ValueError(
            f"{path}: expected SHA-256 {_SBIBM_SHA256}; got {digest} (delete it to refetch)"
        )
    return path


def sbibm_file(task: str, relative: str, *, folder: str | os.PathLike | None = None) -> bytes:
    """The bytes of ``sbibm/tasks/<task>/files/<relative>`` in sbibm's wheel."""
    with zipfile.ZipFile(sbibm_wheel(folder)) as zf:
        name = f"sbibm/tasks/{task}/files/{relative}"
        try:
            return zf.read(name)
        except KeyError:
            raise FileNotFoundError(f"{name} is not in {_SBIBM_WHEEL}") from None


def _csv(data: bytes) -> np.ndarray:
    """A float32 table from sbibm's CSV files (one header row, comma separated)."""
    arr = np.loadtxt(io.StringIO(data.decode()), delimiter=",", skiprows=1, dtype=np.float64,
                     ndmin=2)
    return arr.astype(np.float32)


def _check(task: str, num_observation: int) -> None:
    if task not in SBIBM_TASKS:
        raise ValueError(f"Expected task in {SBIBM_TASKS}; got {task!r}")
    if isinstance(num_observation, bool) or not 1 <= int(num_observation) <= 10:
        raise ValueError(f"Expected num_observation in 1..10; got {num_observation!r}")


def mcmc_reference(
    key: jax.Array,
    task: Task,
    x: np.ndarray,
    num_samples: int,
    *,
    num_chains: int = 100,
    num_warmup: int = 1000,
    thin: int = 5,
    num_candidates: int = 10_000,
) -> np.ndarray:
    """Posterior draws from NUTS on a task's exact likelihood (the fallback reference).

    Chains start from ``num_candidates`` prior draws resampled by likelihood (sampling
    importance resampling, which spreads them over the modes by their mass) and run in the
    unconstrained space of the prior's support. For ``slcp``, whose likelihood ignores the
    signs of ``theta_3`` and ``theta_4``, each draw then gets random signs for both, so the
    four modes are balanced exactly instead of by the chains' starting points.

    Args:
        key: PRNG key.
        task: A task with ``log_likelihood``.
        x: ``(x_dim,)`` the observation.
        num_samples: Draws to return.
        num_chains: Chains (each keeps ``ceil(num_samples / num_chains)`` draws).
        num_warmup: Adaptation steps per chain.
        thin: Keep every ``thin``-th step.
        num_candidates: Prior draws screened for the starting points.

    Returns:
        ``(num_samples, theta_dim)`` float32 draws.
    """
    key = check_key(key)
    from ilijax.priors import support_bijector
    from ilijax.samplers.mcmc import nuts

    if task.log_likelihood is None:
        raise ValueError(f"Expected a task with an exact likelihood; {task.name} has none")
    prior, lik = task.prior, task.log_likelihood
    bij = support_bijector(prior)
    x = jnp.asarray(x, jnp.float32)

    def logdensity(u):
        theta = bij(u)
        return lik(theta, x) + prior.log_prob(theta) + bij.log_abs_det_jacobian(u, theta)

    k_cand, k_pick, k_run, k_sign = jax.random.split(key, 4)
    cand = prior.sample(k_cand, (num_candidates,))
    logw = jax.vmap(lik, (0, None))(cand, x)
    logw = jnp.where(jnp.isfinite(logw), logw, -jnp.inf)
    pick = jax.random.choice(k_pick, num_candidates, (num_chains,), replace=False,
                             p=jax.nn.softmax(logw))
    init = bij.inv(cand[pick])
    run = jax.jit(lambda k, u0: nuts(k, logdensity, u0, num_samples, num_warmup=num_warmup,
                                     thin=thin)[0])
    draws = bij(run(k_run, init)).reshape(-1, task.theta_dim)[:num_samples]
    dims = _SIGN_SYMMETRIC.get(task.name)
    if dims:
        signs = jnp.where(jax.random.bernoulli(k_sign, 0.5, (num_samples, len(dims))), -1.0, 1.0)
        draws = draws.at[:, list(dims)].multiply(signs)
    return np.asarray(draws, np.float32)


def load_reference(
    task: str | Task,
    num_observation: int,
    *,
    source: str = "auto",
    num_samples: int = 10_000,
    seed: int = 0,
    folder: str | os.PathLike | None = None,
) -> Reference:
    """Observation ``num_observation`` (1-10) of an sbibm task with its reference posterior.

    Args:
        task: A task name from :data:`SBIBM_TASKS` or its :class:`~ilijax.tasks.Task`.
        num_observation: 1-10, sbibm's numbering.
        source: ``"sbibm"`` (the published files; an error if they cannot be fetched),
            ``"ilijax"`` (generate them, see the module docstring) or ``"auto"`` (the files if
            they can be had, otherwise generate, and say why in ``Reference.source``).
        num_samples: Reference draws to return: sbibm's files hold 10,000 (the first
            ``num_samples`` are returned); generated references draw this many.
        seed: Seed of the generated observations and draws (``source`` ``"ilijax"``).
        folder: Cache folder of the wheel (default ``cache_dir() / "sbibm"``).

    Returns:
        A :class:`Reference`.
    """
    from ilijax import tasks as _tasks

    task_obj = task if isinstance(task, Task) else _tasks.get(task)
    name = task_obj.name
    _check(name, num_observation)
    k = int(num_observation)
    if source not in ("auto", "sbibm", "ilijax"):
        raise ValueError(f"Expected source in ('auto', 'sbibm', 'ilijax'); got {source!r}")
    reason = "source='ilijax'"
    if source in ("auto", "sbibm"):
        try:
            obs = _csv(sbibm_file(name, f"num_observation_{k}/observation.csv", folder=folder))
            true = _csv(sbibm_file(name, f"num_observation_{k}/true_parameters.csv",
                                   folder=folder))
            raw = sbibm_file(name, f"num_observation_{k}/reference_posterior_samples.csv.bz2",
                             folder=folder)
            samples = _csv(bz2.decompress(raw))
        except (FileNotFoundError, ValueError, OSError) as err:
            if source == "sbibm":
                raise
            reason = f"sbibm files unavailable: {err}"
        else:
            if num_samples > samples.shape[0]:
                raise ValueError(
                    f"Expected num_samples <= {samples.shape[0]} (sbibm's file for {name} "
                    f"observation {k}); got {num_samples}"
                )
            return Reference(name, k, obs[0], true[0], samples[:num_samples],
                             f"sbibm-{SBIBM_VERSION} wheel")
    key = jax.random.fold_in(jax.random.key(seed), k)
    k_theta, k_x, k_post = jax.random.split(key, 3)
    true = np.asarray(task_obj.prior.sample(k_theta), np.float32)
    obs = np.asarray(task_obj.simulator(k_x, jnp.asarray(true)), np.float32)
    if task_obj.sample_posterior is not None:
        samples = np.asarray(jax.jit(task_obj.sample_posterior, static_argnums=2)(
            k_post, jnp.asarray(obs), int(num_samples)))
        how = "ilijax exact sampler"
    else:
        samples = mcmc_reference(k_post, task_obj, obs, int(num_samples))
        how = "ilijax NUTS on the exact likelihood"
    return Reference(name, k, obs, true, samples, f"{how} ({reason})")
