"""Which LoRA layer wraps which module, as PEFT's dispatch does: an ordered list of factories,
the first that answers wins. A new layer kind adds its factory here, never an ``if`` in the
injection code.

The kind is configuration handed down by the caller (``inject_lora(..., layer_kind=)``, a
run spec's ``lora_layer``), not a global that importing a module or a context manager
changes; without one, ``LORA_LAB_LORA_LAYER`` gives the default, checked when it is read.
"""

from __future__ import annotations

import os

import torch.nn as nn

from lora_lab.lora.config import LoraConfig
from lora_lab.lora.fused import fused_linear_factory
from lora_lab.lora.layer import LayerFactory, linear_factory

# "reference": the readable LoRALinear; "fused": FusedLoRALinear (one autograd node, same
# numbers within float rounding). Records say which kind ran.
LAYER_KINDS: tuple[str, ...] = ("reference", "fused")
LAYER_DISPATCH: tuple[LayerFactory, ...] = (fused_linear_factory, linear_factory)
LAYER_ENV = "LORA_LAB_LORA_LAYER"


def check_layer_kind(kind: str) -> str:
    if kind not in LAYER_KINDS:
        raise ValueError(f"unknown LoRA layer kind {kind!r}; known: {list(LAYER_KINDS)}")
    return kind


def default_layer_kind() -> str:
    """The kind adapters get when the caller names none: ``$LORA_LAB_LORA_LAYER``, else
    "reference". A value that names no kind is an error here, where it is read."""
    kind = os.environ.get(LAYER_ENV, "reference")
    if kind not in LAYER_KINDS:
        raise ValueError(
            f"{LAYER_ENV}={kind!r} names no LoRA layer kind; known: {list(LAYER_KINDS)}"
        )
    return kind


def make_lora_layer(module: nn.Module, config: LoraConfig, r: int, kind: str) -> nn.Module | None:
    """The first dispatch entry that handles ``module`` as ``kind``, or None if none does."""
    for factory in LAYER_DISPATCH:
        layer = factory(module, config, r, kind)
        if layer is not None:
            return layer
    return None
