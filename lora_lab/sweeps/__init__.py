"""Sweeps: typed run specs, experiments (named grids), executors, the results store.

- :mod:`~lora_lab.sweeps.spec`: ``RunSpec`` (every field reaches the trainer) and its key
- :mod:`~lora_lab.sweeps.experiment`: ``Experiment`` and grid helpers, ``results_dir``
- :mod:`~lora_lab.sweeps.worker`: ``run_spec``, what a worker does with one spec
- :mod:`~lora_lab.sweeps.executors`: serial, local process pool, Ray
- :mod:`~lora_lab.sweeps.runner`: ``run_sweep`` (resumable; the driver writes the records)
- :mod:`~lora_lab.sweeps.store`: atomic, validated per-run JSON records with provenance
- :mod:`~lora_lab.sweeps.migrate`: re-keying records written before typed specs
"""

from lora_lab.sweeps.executors import (
    ProcessExecutor,
    RayExecutor,
    SerialExecutor,
    make_executor,
)
from lora_lab.sweeps.experiment import Experiment, grid, lr_grid, method_grid, results_dir
from lora_lab.sweeps.runner import SweepSummary, run_sweep
from lora_lab.sweeps.spec import RunSpec, spec_hash
from lora_lab.sweeps.store import PROVENANCE_FIELDS, ResultStore, provenance, validate_record
from lora_lab.sweeps.worker import run_spec

__all__ = [
    "PROVENANCE_FIELDS",
    "Experiment",
    "ProcessExecutor",
    "RayExecutor",
    "ResultStore",
    "RunSpec",
    "SerialExecutor",
    "SweepSummary",
    "grid",
    "lr_grid",
    "make_executor",
    "method_grid",
    "provenance",
    "results_dir",
    "run_spec",
    "run_sweep",
    "spec_hash",
    "validate_record",
]
