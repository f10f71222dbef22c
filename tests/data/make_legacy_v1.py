"""Writes the format-1 posterior files that ``tests/test_io_legacy.py`` loads.

Run once, at commit 20bda3f (before standardisation statistics were frozen), with
``python tests/data/make_legacy_v1.py``: it trains tiny posteriors of every method and bundle
kind for a few epochs at a large learning rate (so the optimizer has moved their z-score
statistics, as every file saved before the fix has them), saves them with that version's
``ilijax.save`` and records ``log_prob`` at fixed points with that version's code. The files are
the fixture; this script documents how they were made and is not run by the tests.
"""

import json
import os
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ilijax  # noqa: E402

OUT = Path(__file__).parent / "legacy_v1"


def main():
    OUT.mkdir(exist_ok=True)
    task = ilijax.tasks.two_moons()
    data = ilijax.simulate(jax.random.key(0), task.prior, task.simulator, 400)
    fit = dict(max_epochs=3, learning_rate=3e-2, batch_size=50, progress=False)
    est = ilijax.estimators
    cases = {
        "npe_nsf": lambda: ilijax.npe(jax.random.key(1), data.theta, data.x, prior=task.prior,
                                      estimator=est.nsf(hidden=8, transforms=2, bins=4),
                                      ensemble=2, **fit),
        "npe_mdn_maf": lambda: ilijax.npe(jax.random.key(2), data.theta, data.x,
                                          prior=task.prior,
                                          estimator=[est.mdn(hidden=8, components=2),
                                                     est.maf(hidden=8, transforms=2)],
                                          **fit),
        "nle_maf": lambda: ilijax.nle(jax.random.key(3), data.theta, data.x, prior=task.prior,
                                      estimator=est.maf(hidden=8, transforms=2), **fit),
        "nre_resnet": lambda: ilijax.nre(jax.random.key(4), data.theta, data.x,
                                         prior=task.prior,
                                         classifier=est.classifier(kind="resnet", hidden=8),
                                         **fit),
        "npe_embedded": lambda: ilijax.npe(
            jax.random.key(5), data.theta, data.x, prior=task.prior,
            estimator=est.embedded(est.mdn(hidden=8, components=2),
                                   ilijax.nn.FCN(n_hidden=(8, 3))), **fit),
    }
    theta = jnp.asarray([[0.1, -0.2], [0.4, 0.3], [-0.6, 0.05]], jnp.float32)
    x = data.x[:3]
    expected = {"theta": np.asarray(theta).tolist(), "x": np.asarray(x).tolist(), "cases": {}}
    for name, make in cases.items():
        post, _ = make()
        ilijax.save(post, OUT / f"{name}.npz")
        expected["cases"][name] = {
            "method": post.method,
            "log_prob": np.asarray(post.log_prob(theta, x)).tolist(),
            "weights": np.asarray(post.weights).tolist(),
        }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1))


if __name__ == "__main__":
    main()
