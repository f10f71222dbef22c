"""Simulators with known answers, for tests, docs and benchmarks.

The tasks follow sbibm's definitions (Lueckmann et al., "Benchmarking Simulation-Based
Inference", AISTATS 2021), plus ``toy``, a small demo in the style of ltu-ili's example. Each is a
:class:`Task` bundle; look one up by name with :func:`get`.
"""

from __future__ import annotations

from collections.abc import Callable

from ilijax.tasks._base import ExactPosterior as ExactPosterior
from ilijax.tasks._base import Task as Task
from ilijax.tasks._base import rejection_sample as rejection_sample
from ilijax.tasks.bernoulli_glm import bernoulli_glm as bernoulli_glm
from ilijax.tasks.gaussian_linear import gaussian_linear as gaussian_linear
from ilijax.tasks.gaussian_linear_uniform import (
    gaussian_linear_uniform as gaussian_linear_uniform,
)
from ilijax.tasks.gaussian_mixture import gaussian_mixture as gaussian_mixture
from ilijax.tasks.slcp import slcp as slcp
from ilijax.tasks.toy import toy as toy
from ilijax.tasks.two_moons import two_moons as two_moons

__all__ = [
    "TASKS",
    "ExactPosterior",
    "Task",
    "bernoulli_glm",
    "gaussian_linear",
    "gaussian_linear_uniform",
    "gaussian_mixture",
    "get",
    "rejection_sample",
    "slcp",
    "toy",
    "two_moons",
]

TASKS: dict[str, Callable[[], Task]] = {
    "bernoulli_glm": bernoulli_glm,
    "gaussian_linear": gaussian_linear,
    "gaussian_linear_uniform": gaussian_linear_uniform,
    "gaussian_mixture": gaussian_mixture,
    "slcp": slcp,
    "toy": toy,
    "two_moons": two_moons,
}


def get(name: str) -> Task:
    """Builds the task registered under ``name`` with its default settings.

    Args:
        name: One of :data:`TASKS` (``"bernoulli_glm"``, ``"gaussian_linear"``,
            ``"gaussian_linear_uniform"``, ``"gaussian_mixture"``, ``"slcp"``, ``"toy"``,
            ``"two_moons"``).

    Returns:
        The :class:`Task`.
    """
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name]()
