"""Speed benchmark: NLE posterior sampling by MCMC on SLCP, ilijax (vmapped NUTS) vs sbi (slice).

Tested peer: sbi 0.27.0 with torch 2.13.0 (CPU); see ``benchmarks/README.md`` for installing it.

One NLE (MAF: hidden 50, 5 transforms) is trained by each library on the same ``--num-sims``
simulations of ``ilijax.tasks.slcp()`` (simulated once with ilijax; sbi gets the very same float32
arrays and a BoxUniform prior with the same bounds), for exactly ``--epochs`` epochs (no early
stopping), with the same batch size, Adam 5e-4, gradient clipping at 5 and a 10% validation split.
Then ``--samples`` posterior draws are made for each of ``--num-obs`` observations:

- ilijax: one ``posterior.sample(key, x_obs, n, method="nuts", num_chains=4, num_warmup=500,
  return_info=True)`` call: all chains of all observations in one jitted program. The first call
  (compile + run) and a second call with another key are timed separately.
- sbi: ``MCMCPosterior`` with sbi's defaults (``slice_np_vectorized``, 20 chains per observation,
  200 warm-up steps, thin 1, ``init_strategy="resample"``), drawn with ``sample_batched`` (all
  chains of all observations in one vectorized slice sampler; faster here than a per-observation
  loop) on the first ``--peer-observations`` observations (default 25: it costs ~15 s per
  observation on a quiet 2-core machine, so 100 would take ~25 minutes); with fewer than
  ``--num-obs`` its per-observation rate is extrapolated to ``--num-obs`` and the table and the
  JSON label it so.

Reported side by side: training time, sampling time, samples/s, sbi/ilijax ratios, R-hat (arviz
rank-normalised split R-hat, max and median over observations x parameters, computed the same way
for both from their chains; also with theta3, theta4 folded to their absolute values, since SLCP's
posterior is exactly symmetric under their sign flips and has four modes) and C2ST of each
library's draws against reference draws for the first ``--c2st-obs`` observations. SLCP has no
closed-form posterior in ilijax (``task.sample_posterior`` is None); the reference is numpyro NUTS
on the task's *exact* likelihood (16 chains, sign flips of theta3/theta4 randomised, which is exact
for this symmetric posterior), and the C2ST of two independent reference halves is the noise floor.

Usage:
    python benchmarks/speed_mcmc.py --quick     # smoke run (tiny sizes, short warm-ups)
    python benchmarks/speed_mcmc.py             # full size (see README for its duration)

Writes ``benchmarks/results/speed_mcmc.json`` (``--quick``: ``speed_mcmc_quick.json``) atomically,
after every phase, so a crash keeps what finished.
"""

from __future__ import annotations

import os

# One XLA CPU device per core, set before jax is imported (observations are split over them).
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count()}")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ARCH = {"hidden": 50, "transforms": 5}
TARGET_SPEEDUP = 10.0
TARGET_RHAT = 1.01
FULL = {
    "num_sims": 10_000,
    "epochs": 50,
    "num_obs": 100,
    "samples": 1000,
    "ilijax_warmup": 500,
    "sbi_warmup": 200,
    # sbi's slice sampler costs ~15 s per observation on a quiet 2-core machine (~33 s at load
    # average 5) whether batched over 10 or 20 observations: 100 would take ~25-55 minutes.
    "peer_observations": 25,
    "c2st_obs": 5,
    "reference_warmup": 1000,
    "reference_draws": 1000,
}
QUICK = {
    "num_sims": 1000,
    "epochs": 2,
    "num_obs": 2,
    "samples": 100,
    "ilijax_warmup": 100,
    "sbi_warmup": 20,
    "peer_observations": 2,
    "c2st_obs": 2,
    "reference_warmup": 200,
    "reference_draws": 200,
}


# ----------------------------------------------------------------------------------------------
# data


def _box_bounds(prior: Any) -> tuple[np.ndarray, np.ndarray]:
    base = prior
    while hasattr(base, "base_dist"):
        base = base.base_dist
    low = np.broadcast_to(np.asarray(base.low, np.float32), prior.event_shape)
    high = np.broadcast_to(np.asarray(base.high, np.float32), prior.event_shape)
    return np.array(low), np.array(high)


def make_data(n_train: int, n_obs: int, seed: int) -> dict[str, Any]:
    """Simulates SLCP once with ilijax: training pairs and test observations (with their truths)."""
    import jax

    from ilijax import tasks

    task = tasks.slcp()
    key_p, key_s = jax.random.split(jax.random.key(seed))
    n = n_train + n_obs
    theta = task.prior.sample(key_p, (n,))
    x = jax.jit(jax.vmap(task.simulator))(jax.random.split(key_s, n), theta)
    ll = jax.jit(jax.vmap(task.log_likelihood))(theta, x)
    theta, x = np.asarray(theta, np.float32), np.asarray(x, np.float32)
    low, high = _box_bounds(task.prior)
    return {
        "task": task,
        "theta": theta[:n_train],
        "x": x[:n_train],
        "theta_obs": theta[n_train:],
        "x_obs": x[n_train:],
        "log_lik": np.asarray(ll),
        "low": low,
        "high": high,
    }


# ----------------------------------------------------------------------------------------------
# ilijax side


def ilijax_available() -> tuple[bool, str]:
    try:
        from ilijax.estimators import maf  # noqa: F401
        from ilijax.inference.nle import nle  # noqa: F401
    except (ImportError, AttributeError) as e:
        return False, f"ilijax NLE API not available ({type(e).__name__}: {e})"
    return True, ""


def ilijax_train(data: dict, *, batch_size: int, epochs: int, seed: int) -> tuple[Any, dict]:
    import jax

    from ilijax.estimators import maf
    from ilijax.inference.nle import nle

    t0 = time.perf_counter()
    post, info = nle(
        jax.random.key(seed),
        data["theta"],
        data["x"],
        prior=data["task"].prior,
        estimator=maf(**ARCH),
        ensemble=1,
        batch_size=batch_size,
        max_epochs=epochs,
        patience=None,
        validation_fraction=0.1,
        progress=False,
    )
    wall = time.perf_counter() - t0
    n_epochs = int(np.asarray(info.epochs).reshape(-1)[0])
    return post, {
        "wall_s": wall,
        "compile_s": float(info.compile_time),
        "train_s": float(info.train_time),
        "other_s": wall - float(info.compile_time) - float(info.train_time),
        "epochs": n_epochs,
        "time_per_epoch_s": float(info.train_time) / max(1, n_epochs),
        "best_validation_loss": float(np.asarray(info.best_validation_loss).reshape(-1)[0]),
    }


def ilijax_sample(post, x_obs: np.ndarray, num_samples: int, *, chains: int, warmup: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """First call (compile + run) and a second, timed call; returns (draws, chains, report)."""
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(x_obs)
    opts = {"method": "nuts", "num_chains": chains, "num_warmup": warmup, "thin": 1,
            "return_info": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # R-hat warnings: reported below
        t0 = time.perf_counter()
        draws, info = post.sample(jax.random.key(seed), x, num_samples, **opts)
        draws = jax.block_until_ready(draws)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        draws, info = post.sample(jax.random.key(seed + 1), x, num_samples, **opts)
        draws = jax.block_until_ready(draws)
        second = time.perf_counter() - t0
    draws = np.asarray(draws)
    # (chain, draw, obs, parameter) -> (obs, chain, draw, parameter)
    ch = np.asarray(info.idata["posterior"]["theta"]).transpose(2, 0, 1, 3)
    stats = {}
    for k in ("acceptance", "divergences", "step_size", "num_steps", "num_integration_steps"):
        if k in info.stats:
            v = np.asarray(info.stats[k], np.float64)
            stats[f"{k}_mean"] = float(np.nanmean(v))
    return draws, ch, {
        "method": f"posterior.sample(key, x_obs, n, method='nuts', num_chains={chains}, "
        f"num_warmup={warmup}, thin=1, return_info=True): one call",
        "wall_s": second,
        "first_call_s": first,
        "compile_s": max(0.0, first - second),
        "observations": len(x_obs),
        "num_chains_per_obs": chains,
        "warmup_steps": warmup,
        "draws_per_chain": int(ch.shape[2]),
        "rhat_reported_max": float(np.nanmax(info.rhat)),
        "stats": stats,
        "finite": bool(np.isfinite(draws).all()),
    }


# ----------------------------------------------------------------------------------------------
# diagnostics: R-hat (same arviz call for both libraries), reference draws, C2ST


def rhat_summary(chains: np.ndarray) -> dict[str, Any]:
    """arviz rank-normalised split R-hat and bulk ESS of chains ``(obs, chain, draw, d)``.

    Computed as ``ilijax.Posterior.sample`` computes them (``az.rhat`` / ``az.ess`` on a
    DataTree), for the raw draws and with theta3, theta4 folded to ``|.|``.
    """
    import arviz as az

    def one(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "more chains than draws" (--quick)
            idata = az.from_dict({"posterior": {"theta": c.transpose(1, 2, 0, 3)}},
                                 dims={"theta": ["obs", "parameter"]})
        r = np.asarray(az.rhat(idata, var_names=["theta"])["theta"])
        e = np.asarray(az.ess(idata, var_names=["theta"], method="bulk")["theta"])
        return r, e

    folded = chains.copy()
    folded[..., 2:4] = np.abs(folded[..., 2:4])
    out: dict[str, Any] = {"chains_per_obs": int(chains.shape[1]),
                           "draws_per_chain": int(chains.shape[2])}
    for name, c in (("raw", chains), ("folded", folded)):
        r, e = one(c)
        worst = np.nanmax(r, axis=1)
        out[name] = {
            "rhat_max": float(np.nanmax(r)),
            "rhat_median": float(np.nanmedian(r)),
            "share_obs_below_target": float(np.mean(worst < TARGET_RHAT)),
            "ess_bulk_median": float(np.nanmedian(e)),
            "ess_bulk_min": float(np.nanmin(e)),
            "rhat_per_obs_max": worst.tolist(),
        }
    return out


def reference_draws(task, x_obs: np.ndarray, num: int, *, warmup: int, seed: int,
                    chains: int = 16) -> tuple[np.ndarray, np.ndarray, dict]:
    """Two independent sets of ``num`` draws per observation from SLCP's exact posterior.

    numpyro NUTS on ``task.log_likelihood`` + ``task.prior`` (``chains`` vectorized chains, the
    halves of the chains give the two sets), then independent random sign flips of theta3 and
    theta4 on every draw: the posterior is invariant under them, so this gives each of the four
    modes its exact weight whatever modes the chains settled in. ``num`` draws are picked at
    random from each half's ``chains / 2 x num`` draws.
    """
    import jax
    import numpyro
    from numpyro.infer import MCMC, NUTS

    def model(x):
        theta = numpyro.sample("theta", task.prior)
        numpyro.factor("log_lik", task.log_likelihood(theta, x))

    mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=num, num_chains=chains,
                chain_method="vectorized", progress_bar=False, jit_model_args=True)
    rng = np.random.default_rng(seed)
    a_all, b_all, folded = [], [], []
    t0 = time.perf_counter()
    for i, x in enumerate(x_obs):
        mcmc.run(jax.random.key(seed + i), jax.numpy.asarray(x))
        th = np.asarray(mcmc.get_samples(group_by_chain=True)["theta"], np.float64)
        folded.append(th.copy())
        th[..., 2:4] *= rng.choice([-1.0, 1.0], size=th.shape[:-1] + (2,))
        half = chains // 2
        for dst, part in ((a_all, th[:half]), (b_all, th[half:])):
            flat = part.reshape(-1, th.shape[-1])
            dst.append(flat[rng.choice(len(flat), num, replace=False)])
    secs = time.perf_counter() - t0
    ch = np.stack(folded)
    return np.stack(a_all), np.stack(b_all), {
        "method": f"numpyro NUTS on the exact likelihood, {chains} chains x {num} draws after "
        f"{warmup} warm-up; random sign flips of theta3, theta4",
        "seconds": secs,
        "rhat_folded": rhat_summary(ch)["folded"]["rhat_max"],
    }


def c2st_scores(ref: np.ndarray, others: dict[str, np.ndarray], n: int, seed: int
                ) -> dict[str, list[float]]:
    """C2ST of ``ref`` (obs, >= n, d) against each of ``others`` (same), ``n`` draws each, in
    one ``c2st`` call (batched over sets and observations: one compilation)."""
    import jax

    from ilijax.diagnostics import c2st

    names = list(others)
    p = np.stack([ref[:, :n]] * len(names))
    q = np.stack([others[k][:, :n] for k in names])
    acc = np.asarray(c2st(jax.random.key(seed), p, q).accuracy)
    return {k: acc[i].reshape(-1).tolist() for i, k in enumerate(names)}


# ----------------------------------------------------------------------------------------------
# reporting


def _fmt(v: float | None, unit: str = "s") -> str:
    if v is None:
        return "-"
    if unit != "s":
        return f"{v:.3g}"
    return f"{v:8.2f}s" if v >= 0.1 else f"{v * 1e3:7.1f}ms"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def print_table(res: dict) -> None:
    tr, sm = res.get("training", {}), res.get("sampling", {})
    il_t, sb_t = tr.get("ilijax"), tr.get("sbi")
    il_s, sb_s = sm.get("ilijax"), sm.get("sbi")
    n_obs, n = res["config"]["num_obs"], res["config"]["samples"]
    sb_label = ""
    if sb_s and sb_s["observations"] < n_obs:
        sb_label = f" [sbi EXTRAPOLATED from {sb_s['observations']} obs]"
    rows: list[tuple[str, Any, Any, str]] = []
    if il_t or sb_t:
        rows += [
            ("train: wall (ilijax incl. compile)", il_t and il_t["wall_s"],
             sb_t and sb_t["wall_s"], "s"),
            ("train: wall excl. compile", il_t and il_t["train_s"], sb_t and sb_t["wall_s"], "s"),
            ("train: per epoch", il_t and il_t["time_per_epoch_s"],
             sb_t and sb_t["time_per_epoch_s"], "s"),
            ("train: ilijax compile", il_t and il_t["compile_s"], None, "s"),
        ]
    if il_s or sb_s:
        sb_wall = sb_s and sb_s["wall_extrapolated_s"]
        rows += [
            (f"sample {n_obs} x {n} (ilijax: 2nd call){sb_label}", il_s and il_s["wall_s"],
             sb_wall, "s"),
            ("sample: ilijax first call (compile+run)", il_s and il_s["first_call_s"], sb_wall,
             "s"),
            ("sample: per observation", il_s and il_s["wall_s"] / n_obs,
             sb_s and sb_s["per_obs_s"], "s"),
            ("samples/s (ilijax: 2nd call)", il_s and n_obs * n / il_s["wall_s"],
             sb_s and sb_s["samples_per_s"], "n"),
        ]
    rh = res.get("rhat", {})
    for kind in ("raw", "folded"):
        a, b = rh.get("ilijax", {}).get(kind), rh.get("sbi", {}).get(kind)
        if a or b:
            tag = "" if kind == "raw" else " (|theta3|,|theta4|)"
            rows.append((f"R-hat max{tag}", a and a["rhat_max"], b and b["rhat_max"], "n"))
            rows.append((f"R-hat median{tag}", a and a["rhat_median"], b and b["rhat_median"], "n"))
            rows.append((f"share of obs with R-hat < {TARGET_RHAT}{tag}",
                         a and a["share_obs_below_target"], b and b["share_obs_below_target"],
                         "n"))
            a2 = rh.get("ilijax_peer_obs", {}).get(kind)
            if a2 and b:
                n_p = res["sampling"]["sbi"]["observations"]
                rows.append((f"R-hat max, first {n_p} obs (both){tag}", a2["rhat_max"],
                             b["rhat_max"], "n"))
    c2 = res.get("c2st", {})
    if c2.get("ilijax") or c2.get("sbi"):
        rows.append((f"C2ST vs reference, mean of {len(c2.get('obs', []))} obs "
                     f"(floor {np.mean(c2['reference_vs_reference']):.3f})",
                     c2.get("ilijax") and float(np.mean(c2["ilijax"])),
                     c2.get("sbi") and float(np.mean(c2["sbi"])), "n"))
    w = max(len(r[0]) for r in rows) + 2
    head = f"{'':{w}}{'ilijax':>11}{'sbi':>11}{'sbi/ilijax':>12}"
    print(head)
    print("-" * len(head))
    for name, a, b, unit in rows:
        r = _ratio(b, a) if unit == "s" else None
        print(f"{name:{w}}{_fmt(a, unit):>11}{_fmt(b, unit):>11}"
              f"{(f'{r:10.1f}x' if r else '-'):>12}")
    if sb_s:
        print(f"(sbi: {sb_s['method']}; {sb_s['settings']})")
    la = res["env"].get("loadavg_start")
    if la and la[0] > (res["env"].get("cpu_count") or 1) + 0.5:
        print(f"WARNING: load average {la[0]:.1f} at start: other processes share the CPU, "
              "timings are noisy")


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    d = FULL
    p.add_argument("--num-sims", type=int, help=f"training simulations (default {d['num_sims']})")
    p.add_argument("--epochs", type=int, help=f"training epochs, no early stopping "
                   f"(default {d['epochs']})")
    p.add_argument("--batch-size", type=int, default=200,
                   help="training batch size for both (default 200, sbi's default)")
    p.add_argument("--num-obs", type=int, help=f"observations (default {d['num_obs']})")
    p.add_argument("--samples", type=int, help=f"draws per observation (default {d['samples']})")
    p.add_argument("--ilijax-chains", type=int, default=4, help="NUTS chains per observation")
    p.add_argument("--ilijax-warmup", type=int,
                   help=f"NUTS warm-up steps (default {d['ilijax_warmup']}, ilijax's default)")
    p.add_argument("--sbi-chains", type=int, default=20,
                   help="slice-sampler chains per observation (default 20, sbi's default)")
    p.add_argument("--sbi-warmup", type=int,
                   help=f"slice-sampler warm-up steps (default {d['sbi_warmup']}, sbi's default)")
    p.add_argument("--sbi-init", default="resample", choices=["resample", "sir", "proposal"],
                   help="sbi's init_strategy (default resample, sbi's default)")
    p.add_argument("--sbi-sampling", choices=["auto", "loop", "batched"], default="batched",
                   help="sbi: sample_batched (default), per-observation loop, or auto (probe "
                   "both on 2 observations, run the faster)")
    p.add_argument("--sbi-chunk-obs", type=int, default=100,
                   help="observations per sbi sample_batched call (default 100)")
    p.add_argument("--peer-observations", type=int,
                   help="sample sbi on the first N observations only and extrapolate its rate "
                   f"(default {d['peer_observations']})")
    p.add_argument("--c2st-obs", type=int,
                   help=f"observations with a C2ST against reference draws (default "
                   f"{d['c2st_obs']}; 0 skips)")
    p.add_argument("--reference-warmup", type=int, help="reference NUTS warm-up steps")
    p.add_argument("--reference-draws", type=int, help="reference draws per chain and per set")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-sbi", action="store_true", help="run the ilijax side only")
    p.add_argument("--skip-ilijax", action="store_true", help="run the sbi side only")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1,000 sims, 2 epochs, 2 obs x 100 draws, short warm-ups")
    p.add_argument("--out", type=Path, help="JSON path (default results/speed_mcmc.json)")
    a = p.parse_args(argv)
    base = QUICK if a.quick else FULL
    for k, v in base.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.out is None:
        a.out = HERE / "results" / ("speed_mcmc_quick.json" if a.quick else "speed_mcmc.json")
    if a.epochs < 2:
        p.error(f"--epochs must be >= 2 (sbi's loop cannot run exactly one); got {a.epochs}")
    for k in ("num_sims", "num_obs", "samples", "ilijax_chains", "sbi_chains",
              "peer_observations", "sbi_chunk_obs"):
        if getattr(a, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1; got {getattr(a, k)}")
    if a.samples % a.sbi_chains or a.samples % a.ilijax_chains:
        p.error(f"--samples ({a.samples}) must be a multiple of --sbi-chains ({a.sbi_chains}) "
                f"and --ilijax-chains ({a.ilijax_chains}), so draws split into whole chains")
    a.peer_observations = min(a.peer_observations, a.num_obs)
    a.c2st_obs = min(max(a.c2st_obs, 0), a.num_obs, a.peer_observations)
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    t_start = time.perf_counter()
    import _sbi_mcmc_peer as peer
    import jax

    run_sbi, run_il = not a.skip_sbi, not a.skip_ilijax
    if run_sbi:
        ok, msg = peer.available()
        if not ok:
            print(f"[speed_mcmc] {msg}\n[speed_mcmc] continuing without sbi (as --skip-sbi).")
            run_sbi = False
    if run_il:
        ok, msg = ilijax_available()
        if not ok:
            print(f"[speed_mcmc] {msg}; running without the ilijax side.")
            run_il = False
    if not (run_sbi or run_il):
        print("[speed_mcmc] nothing to run.")
        return 1

    data = make_data(a.num_sims, a.num_obs, a.seed)
    print(f"[speed_mcmc] slcp: theta {data['theta'].shape}, x {data['x'].shape}, "
          f"observations {data['x_obs'].shape}; epochs={a.epochs} batch={a.batch_size} "
          f"samples={a.samples}", flush=True)
    n_chk = min(len(data["log_lik"]), 5000)
    th_all = np.concatenate([data["theta"], data["theta_obs"]])[:n_chk]
    x_all = np.concatenate([data["x"], data["x_obs"]])[:n_chk]
    check = peer.check_slcp(th_all, x_all, data["log_lik"][:n_chk])
    print(f"[speed_mcmc] numpy SLCP vs ilijax's: {check}", flush=True)

    import ilijax

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "ilijax": getattr(ilijax, "__version__", "?"),
        "loadavg_start": list(os.getloadavg()),
    }
    if run_sbi:
        env.update(peer.versions())
        env["torch_threads"] = peer.setup_threads(a.torch_threads)
    sbi_settings = {**peer.MCMC_DEFAULTS, "num_chains": a.sbi_chains,
                    "warmup_steps": a.sbi_warmup, "init_strategy": a.sbi_init}
    res: dict[str, Any] = {
        "benchmark": "speed_mcmc",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "quick": a.quick,
        "config": {
            "task": "slcp",
            "num_sims": a.num_sims,
            "epochs": a.epochs,
            "batch_size": a.batch_size,
            "num_obs": a.num_obs,
            "samples": a.samples,
            "architecture": {"model": "maf", **ARCH},
            "optimizer": "adam lr 5e-4, clip norm 5",
            "validation_fraction": 0.1,
            "early_stopping": False,
            "ilijax_sampler": {"method": "nuts", "num_chains": a.ilijax_chains,
                               "num_warmup": a.ilijax_warmup, "thin": 1, "init": "sir"},
            "sbi_sampler": {**sbi_settings, "sampling": a.sbi_sampling,
                            "chunk_obs": a.sbi_chunk_obs},
            "peer_observations": a.peer_observations,
            "c2st_obs": a.c2st_obs,
            "torch_threads": a.torch_threads,
            "seed": a.seed,
        },
        "env": env,
        "slcp_check": check,
        "targets": {"speedup": TARGET_SPEEDUP, "rhat": TARGET_RHAT},
        "training": {},
        "sampling": {},
        "rhat": {},
    }
    write_json(a.out, res)

    # (a) training
    post_il = post_sbi = None
    if run_il:
        print(f"[speed_mcmc] ilijax: training NLE ({a.epochs} epochs) ...", flush=True)
        post_il, res["training"]["ilijax"] = ilijax_train(
            data, batch_size=a.batch_size, epochs=a.epochs, seed=a.seed)
        print(f"[speed_mcmc]   {res['training']['ilijax']}", flush=True)
    if run_sbi:
        print(f"[speed_mcmc] sbi: training NLE ({a.epochs} epochs) ...", flush=True)
        inference, res["training"]["sbi"] = peer.train_nle(
            data["theta"], data["x"], data["low"], data["high"], batch_size=a.batch_size,
            epochs=a.epochs, seed=a.seed, **ARCH)
        print(f"[speed_mcmc]   {res['training']['sbi']}", flush=True)
        post_sbi = peer.build_posterior(inference, **sbi_settings)
    if run_il and run_sbi:
        il, sb = res["training"]["ilijax"], res["training"]["sbi"]
        res["training"]["speedup"] = {
            "wall_incl_compile": _ratio(sb["wall_s"], il["wall_s"]),
            "wall_excl_compile": _ratio(sb["wall_s"], il["train_s"]),
            "per_epoch": _ratio(sb["time_per_epoch_s"], il["time_per_epoch_s"]),
        }
    write_json(a.out, res)

    # (b) sampling
    draws: dict[str, np.ndarray] = {}
    if post_il is not None:
        print(f"[speed_mcmc] ilijax: NUTS {a.num_obs} obs x {a.samples} draws "
              f"({a.ilijax_chains} chains, {a.ilijax_warmup} warm-up) ...", flush=True)
        draws["ilijax"], ch_il, res["sampling"]["ilijax"] = ilijax_sample(
            post_il, data["x_obs"], a.samples, chains=a.ilijax_chains, warmup=a.ilijax_warmup,
            seed=a.seed + 10)
        print(f"[speed_mcmc]   {res['sampling']['ilijax']}", flush=True)
        res["rhat"]["ilijax"] = rhat_summary(ch_il)
        write_json(a.out, res)
    if post_sbi is not None:
        n_peer = a.peer_observations
        print(f"[speed_mcmc] sbi: slice sampling {n_peer} obs x {a.samples} draws "
              f"({a.sbi_chains} chains, {a.sbi_warmup} warm-up, {a.sbi_sampling}) ...",
              flush=True)
        ch, rep = peer.time_sampling(
            post_sbi, data["x_obs"][:n_peer], a.samples, mode=a.sbi_sampling,
            num_chains=a.sbi_chains, chunk_obs=a.sbi_chunk_obs, seed=a.seed + 20)
        rep["settings"] = (f"slice_np_vectorized, {a.sbi_chains} chains/obs, "
                           f"{a.sbi_warmup} warm-up, thin 1, init {a.sbi_init}")
        rep["wall_extrapolated_s"] = rep["per_obs_s"] * a.num_obs
        rep["extrapolated"] = n_peer < a.num_obs
        rep["samples_per_s"] = n_peer * a.samples / rep["wall_s"]
        rep["finite"] = bool(np.isfinite(ch).all())
        res["sampling"]["sbi"] = rep
        print(f"[speed_mcmc]   {rep}", flush=True)
        draws["sbi"] = ch.reshape(len(ch), -1, ch.shape[-1])
        res["rhat"]["sbi"] = rhat_summary(ch)
        if "ilijax" in res["rhat"] and n_peer < a.num_obs:
            # like for like: ilijax's R-hat on the observations sbi sampled
            res["rhat"]["ilijax_peer_obs"] = rhat_summary(ch_il[:n_peer])
        write_json(a.out, res)
    if "ilijax" in draws and "sbi" in draws:
        il, sb = res["sampling"]["ilijax"], res["sampling"]["sbi"]
        res["sampling"]["speedup"] = _ratio(sb["wall_extrapolated_s"], il["wall_s"])
        res["sampling"]["speedup_incl_compile"] = _ratio(sb["wall_extrapolated_s"],
                                                         il["first_call_s"])
        res["sampling"]["speedup_extrapolated"] = sb["extrapolated"]

    # (c) accuracy: C2ST against reference draws of the exact posterior
    if a.c2st_obs and draws:
        k = a.c2st_obs
        print(f"[speed_mcmc] reference posterior draws (exact likelihood) for {k} obs ...",
              flush=True)
        ref_a, ref_b, ref_info = reference_draws(
            data["task"], data["x_obs"][:k], a.reference_draws, warmup=a.reference_warmup,
            seed=a.seed + 30)
        c2: dict[str, Any] = {"obs": list(range(k)), "reference": ref_info,
                              "draws_per_set": int(min(ref_a.shape[1], a.samples))}
        t0 = time.perf_counter()
        # the floor (a second, independent reference set) uses as many draws as the libraries
        c2.update(c2st_scores(ref_a, {"reference_vs_reference": ref_b,
                                      **{name: dr[:k] for name, dr in draws.items()}},
                              c2["draws_per_set"], a.seed + 40))
        c2["seconds"] = time.perf_counter() - t0
        res["c2st"] = c2
        print(f"[speed_mcmc]   C2ST: { {n: c2[n] for n in ('reference_vs_reference', *draws)} }",
              flush=True)

    if run_il and run_sbi and "speedup" in res["sampling"]:
        rh = res["rhat"]
        res["targets_met"] = {
            "speedup": bool(res["sampling"]["speedup"] >= TARGET_SPEEDUP),
            "ilijax_rhat_max": bool(rh["ilijax"]["raw"]["rhat_max"] < TARGET_RHAT),
            "ilijax_rhat_max_folded": bool(rh["ilijax"]["folded"]["rhat_max"] < TARGET_RHAT),
        }
    env["loadavg_end"] = list(os.getloadavg())
    res["total_s"] = time.perf_counter() - t_start
    write_json(a.out, res)
    print()
    print_table(res)
    if "targets_met" in res:
        tm = res["targets_met"]
        ext = " (sbi extrapolated)" if res["sampling"]["speedup_extrapolated"] else ""
        print(f"target: ilijax >= {TARGET_SPEEDUP:g}x faster sampling{ext}: "
              f"{res['sampling']['speedup']:.1f}x -> {'MET' if tm['speedup'] else 'NOT met'}; "
              f"ilijax R-hat max < {TARGET_RHAT}: raw "
              f"{res['rhat']['ilijax']['raw']['rhat_max']:.3f} -> "
              f"{'MET' if tm['ilijax_rhat_max'] else 'NOT met'}, folded "
              f"{res['rhat']['ilijax']['folded']['rhat_max']:.3f} -> "
              f"{'MET' if tm['ilijax_rhat_max_folded'] else 'NOT met'}")
    print(f"[speed_mcmc] total {res['total_s']:.0f} s; wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
