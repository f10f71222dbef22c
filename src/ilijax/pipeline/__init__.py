"""The YAML-driven pipeline: data -> inference -> validation, each stage configurable.

>>> from ilijax import pipeline
>>> cfg = pipeline.load_config(["run.yaml"], overrides=["inference.train.learning_rate=1e-3"])
>>> result = pipeline.run(cfg)                     # doctest: +SKIP

A config is one YAML file with the sections ``data``, ``inference`` and ``validation`` (see
:mod:`ilijax.pipeline.config` for every key), or several files, including ltu-ili's own data /
inference / validation files, which are translated by :mod:`ilijax.pipeline.ltu_ili`. This
package and :mod:`ilijax.cli` are the only places that read configs, write files or print.
"""

from ilijax.pipeline.config import Config as Config
from ilijax.pipeline.config import ConfigError as ConfigError
from ilijax.pipeline.config import load_config as load_config
from ilijax.pipeline.config import parse_override as parse_override
from ilijax.pipeline.config import validate_config as validate_config
from ilijax.pipeline.runner import RunResult as RunResult
from ilijax.pipeline.runner import run as run
from ilijax.pipeline.sweep import sweep as sweep

__all__ = ["Config", "ConfigError", "RunResult", "load_config", "parse_override", "run", "sweep",
           "validate_config"]
