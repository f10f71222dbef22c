"""The notebooks in ``notebooks/`` run top to bottom, at CI sizes, without an error.

Each notebook is executed by nbclient in a fresh ipykernel started from this interpreter (so the
kernel sees the same environment and the editable ilijax), in a temporary working directory,
with ``ILIJAX_NOTEBOOK_SMALL=1``: the notebooks' first code cell then shrinks simulations,
epochs, draws and chains so that the whole notebook takes seconds of compute. ``XLA_FLAGS``
(conftest's virtual devices) and the persistent JAX compilation cache are passed through.
Warnings raised inside the cells are printed in the notebook, not turned into errors.

One test per notebook, so that pytest-xdist spreads them over workers. A second, instant check
keeps the stored notebooks free of outputs and keeps their Colab set-up in place.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
COLAB = "https://colab.research.google.com/github/ilijax/ilijax/blob/main/notebooks/"

# Seconds any one cell may run (SMALL cells take seconds; the slack is for a cold compilation
# cache on a loaded 2-core runner).
CELL_TIMEOUT = 300
KERNEL = "ilijax-test-python3"


def _ids(paths):
    return [p.stem for p in paths]


def _kernel_manager(tmp: Path) -> AsyncKernelManager:
    """A kernel manager whose only kernel is ipykernel on this interpreter (never a user-level
    ``python3`` spec that might point at another Python)."""
    spec_dir = tmp / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ilijax tests)",
        "language": "python",
    }))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp / "kernels")], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=ksm)


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    env["ILIJAX_NOTEBOOK_SMALL"] = "1"
    # ipykernel selects matplotlib's inline backend itself (headless: it renders with Agg) when
    # MPLBACKEND is unset; a non-interactive MPLBACKEND from the CI would hide the figures.
    env.pop("MPLBACKEND", None)
    # The same persistent compilation cache as the test process (see conftest.py); jax reads
    # these variables at import. Every program is cached, however quick to compile: at SMALL
    # sizes a notebook is mostly hundreds of tiny compilations (eager ops on each parameter
    # array, e.g. the optimiser state), which the cache turns from ~20 s into ~1 s on a rerun.
    # XLA_FLAGS (conftest's virtual devices and LLVM's cheap passes, see conftest.py) is
    # inherited; the optimisation level is added if a user's own XLA_FLAGS lack it: at SMALL
    # sizes a notebook is almost all compilation, which this makes markedly cheaper.
    flags = env.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        env["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()
    env.setdefault("JAX_COMPILATION_CACHE_DIR",
                   os.path.join(os.path.expanduser("~"), ".cache", "ilijax-jax"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    # debugpy's warning about frozen modules, printed on every kernel start.
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def _first_code_cell(nb) -> str:
    return next(c.source for c in nb.cells if c.cell_type == "code")


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_clean_and_colab_ready(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: code cell {i} has stored outputs; clear them before committing"
            )
    first = nb.cells[0]
    assert first.cell_type == "markdown" and COLAB + path.name in first.source, (
        f"{path.name}: the first cell must carry the Open in Colab badge linking {COLAB}"
        f"{path.name}"
    )
    setup = _first_code_cell(nb)
    assert 'os.environ.get("ILIJAX_NOTEBOOK_SMALL") == "1"' in setup, setup
    assert '"google.colab" in sys.modules' in setup, setup
    for cell in nb.cells:  # Colab has no local checkout: no absolute paths of this machine
        for prefix in ("/work/", "/home/", "/Users/", "/tmp/", "C:\\"):
            assert prefix not in cell.source, f"{path.name}: a local path ({prefix}...)"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path: Path, tmp_path: Path):
    nb = nbformat.read(path, as_version=4)
    work = tmp_path / "work"
    work.mkdir()
    client = NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=CELL_TIMEOUT,
        allow_errors=False,
        resources={"metadata": {"path": str(work)}},  # the kernel's working directory
    )
    t0 = time.perf_counter()
    # Raises CellExecutionError at the first failing cell; cleanup_kc: shut the kernel down and
    # close its channels even though the kernel manager is ours.
    client.execute(env=_kernel_env(), cleanup_kc=True)
    seconds = time.perf_counter() - t0
    print(f"{path.name}: executed in {seconds:.1f} s")

    figures = sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert figures > 0, f"{path.name}: no figure was shown inline"
