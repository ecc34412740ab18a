"""lora_lab: see for yourself when LoRA matches full fine-tuning, on a laptop CPU.

Reproduces the findings of "LoRA Without Regret" (Schulman & Thinking Machines Lab, 2025)
on compact transformers that this package defines and pretrains.

Layout: :mod:`lora_lab.model` (the transformer), :mod:`lora_lab.lora` (LoRA as PEFT defines
it), :mod:`lora_lab.training` (one loop, pluggable objectives), :mod:`lora_lab.sweeps` (typed
specs, executors, store), :mod:`lora_lab.findings` (one module per notebook),
:mod:`lora_lab.analysis` and :mod:`lora_lab.plots` (shared by every finding).
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
from lora_lab.records import read_records, record
from lora_lab.training import FullFT, load_base, train

__all__ = [
    "PRESETS",
    "CompactLM",
    "FullFT",
    "LoRALinear",
    "LoraConfig",
    "ModelConfig",
    "__version__",
    "build_model",
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
