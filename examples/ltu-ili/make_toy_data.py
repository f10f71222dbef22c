"""Writes the toy data that ltu-ili's example configs expect, into ./toy (run from this folder).

The simulator is the one of ltu-ili's toy example: theta ~ U(0, 1)^3 and, on t = 0, 1, ..., 9,

    x(t) = 3 theta_0 sin(t) + theta_1 t^2 - 2 theta_2 t + eps,   eps ~ N(0, 1),

so ``x.npy`` is (N, 10) and ``theta.npy`` is (N, 3). ``xobs.npy`` / ``thetafid.npy`` hold one
observation and its true parameters (ltu-ili's optional ``xobs_file`` / ``thetafid_file``).

    python make_toy_data.py [--num 2000] [--seed 0] [--out toy]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def simulate(theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(10.0)
    x = (3.0 * theta[:, :1] * np.sin(t) + theta[:, 1:2] * t**2 - 2.0 * theta[:, 2:3] * t)
    return (x + rng.standard_normal(x.shape)).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=2000, help="number of simulations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="toy", help="output folder")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    theta = rng.uniform(0.0, 1.0, size=(args.num, 3)).astype(np.float32)
    np.save(out / "theta.npy", theta)
    np.save(out / "x.npy", simulate(theta, rng))
    theta_fid = np.array([0.5, 0.5, 0.5], np.float32)
    np.save(out / "thetafid.npy", theta_fid)
    np.save(out / "xobs.npy", simulate(theta_fid[None], rng)[0])
    print(f"wrote {out}/theta.npy {theta.shape}, x.npy ({args.num}, 10), xobs.npy, thetafid.npy")


if __name__ == "__main__":
    main()
