"""Shared test configuration.

Several tests need more than one device (sharded ensembles); the CPU is split into 4 virtual
devices before jax initialises its backend. The persistent compilation cache makes reruns fast.
"""

import os

# The suite is bound by XLA compilation (a cold run on 2 cores spends most of its time
# compiling small programs), so tests compile with LLVM's cheap passes: measured on three test
# files from a cold cache, 196 s -> 103 s. Results are the same programs less optimised; every
# speed number comes from benchmarks/, which use XLA's defaults. Subprocesses (CLI, notebooks)
# inherit the flags. Set XLA_FLAGS yourself to override.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 "
                      "--xla_backend_optimization_level=0 "
                      "--xla_llvm_disable_expensive_passes=true")

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ.get("JAX_COMPILATION_CACHE_DIR",
                  os.path.join(os.path.expanduser("~"), ".cache", "ilijax-jax")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
