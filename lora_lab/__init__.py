"""lora_lab: see for yourself when LoRA matches full fine-tuning, on a laptop CPU.

Reproduces the findings of "LoRA Without Regret" (Schulman & Thinking Machines Lab, 2025)
on compact transformers that this package defines and pretrains.

Layout: :mod:`lora_lab.model` (the transformer), :mod:`lora_lab.lora` (LoRA as PEFT defines
it), :mod:`lora_lab.training` (one loop, pluggable objectives), :mod:`lora_lab.sweeps` (typed
specs, executors, store), :mod:`lora_lab.findings` (one module per notebook),
:mod:`lora_lab.analysis` and :mod:`lora_lab.plots` (shared by every finding),
:mod:`lora_lab.own_runs` (the same reading of *your* sweeps: ``lora_lab.analyze(path)``).
"""

from lora_lab._version import __version__
from lora_lab.lora import (
    LoraConfig,
    LoRALinear,
    count_lora_params,
    inject_lora,
    load_adapter,
    merge,
    parameter_report,
    save_adapter,
    unload,
    unmerge,
)
from lora_lab.model import (
    PRESETS,
    CompactLM,
    ModelConfig,
    build_model,
    get_preset,
    load_model,
    save_model,
)
from lora_lab.own_runs import analyze
from lora_lab.records import read_records, record
from lora_lab.threads import configure_threads
from lora_lab.training import FullFT, load_base, train

# torch's default (a thread per core) collapses 15-40x when anything else runs on a small
# machine; see lora_lab.threads for the rule and how to override it.
try:
    configure_threads()
except ValueError as _bad_setting:  # a malformed environment variable must not break import
    import warnings

    warnings.warn(f"{_bad_setting}; using 1 thread", stacklevel=2)
    configure_threads(1)

__all__ = [
    "PRESETS",
    "CompactLM",
    "FullFT",
    "LoRALinear",
    "LoraConfig",
    "ModelConfig",
    "__version__",
    "analyze",
    "build_model",
    "configure_threads",
    "count_lora_params",
    "get_preset",
    "inject_lora",
    "load_adapter",
    "load_base",
    "load_model",
    "merge",
    "parameter_report",
    "read_records",
    "record",
    "save_adapter",
    "save_model",
    "train",
    "unload",
    "unmerge",
]
