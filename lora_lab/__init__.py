"""lora_lab: see for yourself when LoRA matches full fine-tuning, on a laptop CPU.

Reproduces the findings of "LoRA Without Regret" (Schulman & Thinking Machines Lab, 2025)
on compact transformers that this package defines and pretrains.

Layout: :mod:`lora_lab.model` (the transformer), :mod:`lora_lab.lora` (LoRA as PEFT defines
it), :mod:`lora_lab.training` (one loop, pluggable objectives), :mod:`lora_lab.sweeps` (typed
specs, executors, store), :mod:`lora_lab.findings` (one module per notebook),
:mod:`lora_lab.analysis` and :mod:`lora_lab.plots` (shared by every finding),
:mod:`lora_lab.own_runs` (the same reading of *your* sweeps: ``lora_lab.analyze(path)``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lora_lab._version import __version__

# Public names, loaded on first use (PEP 562): ``import lora_lab`` and the command line's
# ``--help`` stay quick, and nothing heavy (torch, pandas, Jupyter) loads before it is used.
# Importing lora_lab changes no global state: the thread rule (lora_lab.threads) is applied
# where work starts (the CLI, a panel's Run, train, a sweep, building a model), once per process.
_PUBLIC = {
    "lora_lab.lora": ("LoraConfig", "LoRALinear", "count_lora_params", "inject_lora",
                      "load_adapter", "merge", "parameter_report", "save_adapter", "unload",
                      "unmerge"),
    "lora_lab.model": ("PRESETS", "CompactLM", "ModelConfig", "build_model", "get_preset",
                       "load_model", "save_model"),
    "lora_lab.own_runs": ("analyze",),
    "lora_lab.records": ("read_records", "record"),
    "lora_lab.threads": ("configure_threads",),
    "lora_lab.training": ("FullFT", "load_base", "train"),
}  # fmt: skip
_WHERE = {name: module for module, names in _PUBLIC.items() for name in names}

if TYPE_CHECKING:  # for type checkers and editors: the same names, eagerly
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


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'lora_lab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


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
