"""LoRA exactly as HF PEFT and "LoRA Without Regret" define it.

``W' = W + (lora_alpha / r) * B @ A``; names (``lora_A``, ``lora_B``, ``r``, ``lora_alpha``,
``target_modules``, ``use_rslora``) are PEFT's; tests/test_peft_crosscheck.py checks outputs
and gradients against PEFT itself.

- :mod:`~lora_lab.lora.config`: ``LoraConfig`` and the target presets
- :mod:`~lora_lab.lora.layer`: ``LoRALinear``
- :mod:`~lora_lab.lora.dispatch`: the layer dispatch list and the layer kinds
- :mod:`~lora_lab.lora.fused`: ``FusedLoRALinear``, the faster layer (one autograd node)
- :mod:`~lora_lab.lora.inject`: matching, ``inject_lora``, merge / unmerge / unload, counts
- :mod:`~lora_lab.lora.peft_io`: ``save_adapter`` / ``load_adapter`` in PEFT's format
"""

from lora_lab.lora.config import (
    ATTN_MODULES,
    MLP_MODULES,
    TARGET_PRESETS,
    LoraConfig,
    lora_scaling,
)
from lora_lab.lora.dispatch import (
    LAYER_DISPATCH,
    LAYER_KINDS,
    check_layer_kind,
    default_layer_kind,
    make_lora_layer,
)
from lora_lab.lora.fused import FusedLoRALinear
from lora_lab.lora.inject import (
    count_lora_params,
    disabled_adapters,
    inject_lora,
    lora_layers,
    match_targets,
    merge,
    module_group,
    parameter_report,
    unload,
    unmerge,
)
from lora_lab.lora.layer import LoRALinear, is_lora_layer
from lora_lab.lora.peft_io import base_fingerprint, load_adapter, save_adapter

__all__ = [
    "ATTN_MODULES",
    "LAYER_DISPATCH",
    "LAYER_KINDS",
    "FusedLoRALinear",
    "MLP_MODULES",
    "TARGET_PRESETS",
    "LoRALinear",
    "LoraConfig",
    "base_fingerprint",
    "count_lora_params",
    "disabled_adapters",
    "inject_lora",
    "is_lora_layer",
    "check_layer_kind",
    "default_layer_kind",
    "load_adapter",
    "lora_layers",
    "lora_scaling",
    "make_lora_layer",
    "match_targets",
    "merge",
    "module_group",
    "parameter_report",
    "save_adapter",
    "unload",
    "unmerge",
]
