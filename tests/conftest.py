"""Shared test configuration.

Several tests need more than one device (sharded ensembles); the CPU is split into 4 virtual
devices before jax initialises its backend. The persistent compilation cache makes reruns fast.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ.get("JAX_COMPILATION_CACHE_DIR",
                  os.path.join(os.path.expanduser("~"), ".cache", "ilijax-jax")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
