"""Input checks and small statistics shared by the diagnostics."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from ilijax._checks import check_float

Array = jax.Array


def check_draws(samples: Any, name: str = "samples") -> Array:
    """``(n_test, S, d)`` finite float32 draws, or a ValueError naming ``name``."""
    s = jnp.asarray(samples, jnp.float32)
    if s.ndim != 3 or s.shape[0] < 1 or s.shape[1] < 1 or s.shape[2] < 1:
        raise ValueError(
            f"Expected {name} of shape (n_test, num_samples, theta_dim) with every axis >= 1; "
            f"got shape {s.shape}"
        )
    bad = ~jnp.all(jnp.isfinite(s), axis=-1)
    nbad = int(jnp.sum(bad))
    if nbad:
        raise ValueError(
            f"Expected finite {name}; got {nbad} draws with NaN or inf (of {bad.size}) in "
            f"{int(jnp.sum(jnp.any(bad, axis=1)))} test observations"
        )
    return s


def check_truth(theta: Any, n_test: int, dim: int, name: str = "theta") -> Array:
    """``(n_test, dim)`` finite float32 true parameters, or a ValueError naming ``name``."""
    t = jnp.asarray(theta, jnp.float32)
    if t.shape != (n_test, dim):
        raise ValueError(
            f"Expected {name} of shape ({n_test}, {dim}) to match the draws; got {t.shape}"
        )
    if not bool(jnp.all(jnp.isfinite(t))):
        raise ValueError(
            f"Expected finite {name}; got {int(jnp.sum(~jnp.isfinite(t)))} NaN/inf entries"
        )
    return t


def check_real(name: str, value: Any, *, low: float, closed: bool = False) -> float:
    """``value`` as a finite float ``> low`` (``>= low`` with ``closed``), or a ValueError naming
    ``name`` (see :func:`ilijax._checks.check_float`)."""
    return check_float(name, value, low, closed=closed)


def check_levels(levels: Any, min_levels: int = 1, why: str = "") -> Array:
    """Credibility levels: an int ``L >= max(2, min_levels)`` gives ``linspace(0, 1, L)``; or an
    explicit 1-D grid of at least ``min_levels`` strictly increasing levels in ``[0, 1]``.
    ``why`` (e.g. ``" for TARP's ATC"``) is appended to the too-few-levels message."""
    if isinstance(levels, int | np.integer) and not isinstance(levels, bool):
        low = max(2, min_levels)
        if levels < low:
            raise ValueError(
                f"Expected levels to be an int >= {low} or an array{why}; got {levels}"
            )
        return jnp.linspace(0.0, 1.0, int(levels), dtype=jnp.float32)
    try:
        lv = np.asarray(levels, np.float32)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected levels to be an int or a 1-D array of levels in [0, 1]; got {levels!r}"
        ) from None
    if lv.ndim != 1 or not bool(np.all((lv >= 0) & (lv <= 1))):
        raise ValueError(f"Expected levels in [0, 1] as a 1-D array; got {levels!r}")
    low = max(1, min_levels)
    if lv.shape[0] < low:
        raise ValueError(
            f"Expected at least {low} level{'s' if low > 1 else ''}{why}; got {lv.shape[0]}: "
            f"{levels!r}"
        )
    if not bool(np.all(np.diff(lv) > 0)):
        raise ValueError(f"Expected levels in strictly increasing order; got {levels!r}")
    return jnp.asarray(lv)


def check_band(band: float, bootstrap: int) -> None:
    if isinstance(band, bool) or not 0.0 < float(band) < 1.0:
        raise ValueError(f"Expected band in (0, 1); got {band}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) \
            or bootstrap < 0:
        raise ValueError(f"Expected bootstrap to be an int >= 0; got {bootstrap!r}")


def pit(count: Array, num_samples: int) -> Array:
    """Maps a count ``k`` in ``{0, ..., S}`` (the truth's position among ``S`` draws) to
    ``(k + 1/2) / (S + 1)`` in ``(0, 1)``: uniform up to a ``1 / (S + 1)`` discretisation when
    the posterior is calibrated, so continuous uniformity tests apply (conservatively)."""
    return (count.astype(jnp.float32) + 0.5) / (num_samples + 1.0)


def ks_uniform_pvalue(u: Any) -> np.ndarray:
    """Kolmogorov-Smirnov p-value of each column of ``u`` (``(n,)`` or ``(n, d)``) against
    ``U(0, 1)``. Runs on the host: ``u`` holds one value per test observation."""
    a = np.asarray(u, dtype=np.float64)
    if a.ndim == 1:
        return np.float64(stats.kstest(a, "uniform").pvalue)
    return np.array([stats.kstest(a[:, j], "uniform").pvalue for j in range(a.shape[1])])


def coverage_curve(key: Array, credibility: Array, levels: Array, bootstrap: int, band: float):
    """Empirical CDF of ``credibility`` at ``levels`` with a bootstrap band over test pairs.

    Returns ``(empirical, lower, upper)``, each ``(L,)``. With ``bootstrap == 0`` the band is the
    binomial normal approximation ``p +- z sqrt(p (1 - p) / n)``.
    """
    return _coverage_curve(key, credibility, levels, int(bootstrap), float(band))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _coverage_curve(key, credibility, levels, bootstrap, band):
    n = credibility.shape[0]

    def ecdf(c):
        return jnp.mean(c[:, None] <= levels[None, :], axis=0)

    emp = ecdf(credibility)
    if bootstrap == 0:
        z = jax.scipy.stats.norm.ppf(0.5 + band / 2)
        half = z * jnp.sqrt(emp * (1 - emp) / n)
        return emp, jnp.clip(emp - half, 0, 1), jnp.clip(emp + half, 0, 1)
    idx = jax.random.randint(key, (bootstrap, n), 0, n)
    curves = jax.lax.map(lambda i: ecdf(credibility[i]), idx, batch_size=32)
    lo = jnp.quantile(curves, (1 - band) / 2, axis=0)
    hi = jnp.quantile(curves, 1 - (1 - band) / 2, axis=0)
    return emp, lo, hi
