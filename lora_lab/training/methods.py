"""What a fine-tuning run trains: full fine-tuning (of everything, or of chosen matrices) or
LoRA, as one value with a human label that names what differs from the default."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch.nn as nn

from lora_lab.lora.config import TARGET_PRESETS, LoraConfig, _check_targets
from lora_lab.lora.inject import inject_lora, match_targets

FULLFT_LABEL = "FullFT"


@dataclass(frozen=True)
class FullFT:
    """Full fine-tuning. ``target_modules=None`` trains every parameter (embeddings,
    ``lm_head`` and norms included); otherwise only the matrices LoRA with the same
    ``target_modules`` would adapt, so ``FullFT("all")`` ("full (blocks only)") is the
    control for a full-rank adapter: same matrices, no low-rank product."""

    target_modules: str | tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.target_modules is not None:
            checked = _check_targets(self.target_modules)
            object.__setattr__(
                self, "target_modules", checked if isinstance(checked, str) else tuple(checked)
            )


Method = Union[FullFT, LoraConfig]  # noqa: UP007  (a runtime alias; isinstance needs Union)


def as_method(method: Any) -> FullFT | LoraConfig:
    """``"full"`` -> ``FullFT()``; a ``FullFT`` or ``LoraConfig`` passes through."""
    if isinstance(method, str) and method == "full":
        return FullFT()
    if isinstance(method, (FullFT, LoraConfig)):
        return method
    raise ValueError(
        f"method must be 'full', a FullFT or a LoraConfig, got {method!r}"
        + ("; for LoRA pass LoraConfig(r=...)" if method == "lora" else "")
    )


def apply_method(model: nn.Module, method: FullFT | LoraConfig, layer_kind: str | None = None
                 ) -> nn.Module:  # fmt: skip
    """A copy of ``model`` with exactly the method's parameters trainable (LoRA injected,
    as layers of ``layer_kind``: see :func:`~lora_lab.lora.inject_lora`)."""
    model = copy.deepcopy(model)
    if isinstance(method, LoraConfig):
        return inject_lora(model, method, layer_kind)
    if method.target_modules is None:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    targets = method.target_modules
    names = [n for n, _ in model.named_modules() if n]
    chosen = set(match_targets(names, targets if isinstance(targets, str) else list(targets)))
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in model.named_modules():
        if name in chosen:
            if not isinstance(module, nn.Linear):
                raise ValueError(f"FullFT targets must be nn.Linear, {name} is {type(module)}")
            module.weight.requires_grad_(True)
    return model


def _targets_text(targets: str | Sequence[str]) -> str:
    if isinstance(targets, str):
        return targets if targets in TARGET_PRESETS else f"/{targets}/"
    return ",".join(targets)


def method_label(method: Any) -> str:
    """Short stable name: "FullFT", "full (blocks only)", "full mlp", "r=4", "r=4 attn",
    "r=16 mlp rsLoRA", "r=8 alpha=16", "r=4 dropout=0.1", "r=8 expert_r=2"."""
    method = as_method(method)
    if isinstance(method, FullFT):
        if method.target_modules is None:
            return FULLFT_LABEL
        if method.target_modules == "all":
            return "full (blocks only)"
        return f"full {_targets_text(method.target_modules)}"
    default = LoraConfig()
    parts = [f"r={method.r}"]
    if method.target_modules != "all":
        parts.append(_targets_text(method.target_modules))
    if method.lora_alpha != default.lora_alpha:
        parts.append(f"alpha={method.lora_alpha:g}")
    if method.use_rslora:
        parts.append("rsLoRA")
    if method.lora_dropout:
        parts.append(f"dropout={method.lora_dropout:g}")
    if method.expert_r is not None:
        parts.append(f"expert_r={method.expert_r}")
    return " ".join(parts)


_RANK = re.compile(r"^r=(\d+)(.*)$")


def label_sort_key(label: str) -> tuple:
    """Order for tables and legends: FullFT, other full fine-tuning, then LoRA by rank
    (numerically: r=4 before r=16), variants of one rank after its plain label."""
    label = str(label)
    if label == FULLFT_LABEL:
        return (0, 0, "")
    if label.startswith("full"):
        return (1, 0, label)
    m = _RANK.match(label)
    if m:
        return (2, int(m.group(1)), m.group(2).strip())
    return (3, 0, label)


def sort_labels(labels: Sequence[str]) -> list[str]:
    """Distinct labels in :func:`label_sort_key` order."""
    return sorted({str(lbl) for lbl in labels}, key=label_sort_key)
