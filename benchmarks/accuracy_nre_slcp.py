"""Accuracy of NRE on SLCP: C2ST of NUTS draws against exact-likelihood reference draws.

Companion to ``speed_mcmc.py`` (which reports the same for NLE): the same simulations
(``make_data``), the same reference (numpyro NUTS on the exact likelihood with random sign flips
of theta3, theta4) and the same C2ST. NRE-B with ilijax's default classifier (MLP, hidden 50,
2 blocks), 10 atoms, ``--epochs`` epochs without early stopping; 1,000 NUTS draws per
observation (4 chains, 500 warm-up). Prints a table and writes
``results/accuracy_nre_slcp.json`` atomically.

Usage: ``python benchmarks/accuracy_nre_slcp.py [--obs 5] [--epochs 50]``
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count()}")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from speed_mcmc import c2st_scores, make_data, reference_draws, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-sims", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--obs", type=int, default=5)
    p.add_argument("--variant", default="b")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "accuracy_nre_slcp.json")
    a = p.parse_args()
    import jax

    import ilijax

    data = make_data(a.num_sims, a.obs, a.seed)
    t0 = time.perf_counter()
    post, info = ilijax.nre(jax.random.key(a.seed + 1), data["theta"], data["x"],
                            prior=data["task"].prior, variant=a.variant, num_atoms=10,
                            max_epochs=a.epochs, patience=None, batch_size=200,
                            progress=False)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    draws, si = post.sample(jax.random.key(a.seed + 2), data["x_obs"], 1000, method="nuts",
                            num_chains=4, num_warmup=500, return_info=True)
    sample_s = time.perf_counter() - t0
    ref_a, ref_b, ref_info = reference_draws(data["task"], data["x_obs"], 1000, warmup=1000,
                                             seed=a.seed)
    scores = c2st_scores(ref_a, {"floor": ref_b, "nre": np.asarray(draws)}, 1000, a.seed)
    res = {
        "benchmark": "accuracy_nre_slcp",
        "config": vars(a) | {"out": str(a.out)},
        "train_s": train_s,
        "sample_s_incl_compile": sample_s,
        "best_validation_loss": float(np.min(info.best_validation_loss)),
        "rhat_max": float(np.nanmax(si.rhat)),
        "c2st": scores,
        "c2st_mean": {k: float(np.mean(v)) for k, v in scores.items()},
        "reference": ref_info,
    }
    print(f"{'':28s}{'C2ST per observation':>40s}   mean")
    for k, v in scores.items():
        print(f"{k:28s}{' '.join(f'{s:.3f}' for s in v):>40s}   {np.mean(v):.3f}")
    print(f"train {train_s:.1f} s, sample (incl. compile) {sample_s:.1f} s, "
          f"R-hat max {res['rhat_max']:.3f}")
    write_json(a.out, res)


if __name__ == "__main__":
    main()
