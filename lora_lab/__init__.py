"""lora_lab: see for yourself when LoRA matches full fine-tuning, on a laptop CPU.

Reproduces the findings of "LoRA Without Regret" (Schulman & Thinking Machines Lab, 2025)
on compact transformers that this package defines and pretrains.
"""

__version__ = "0.1.0"

from lora_lab.adapters import load_adapter, save_adapter
from lora_lab.lora import (
    LoraConfig,
    LoRALinear,
    count_lora_params,
    inject_lora,
    merge,
    parameter_report,
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

__all__ = [
    "PRESETS",
    "CompactLM",
    "LoRALinear",
    "LoraConfig",
    "ModelConfig",
    "__version__",
    "build_model",
    "count_lora_params",
    "get_preset",
    "inject_lora",
    "load_adapter",
    "load_model",
    "merge",
    "parameter_report",
    "read_records",
    "record",
    "save_adapter",
    "save_model",
    "unload",
    "unmerge",
]
