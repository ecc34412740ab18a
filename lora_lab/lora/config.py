"""``LoraConfig``: what to adapt and how, with PEFT's field names and checks on every field."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
TARGET_PRESETS: dict[str, tuple[str, ...]] = {
    "attn": ATTN_MODULES,
    "mlp": MLP_MODULES,
    # Every projection inside the blocks. The MoE router (d x n_experts) is left out: it
    # decides routing rather than transforming features; name "router" to include it.
    "all": ATTN_MODULES + MLP_MODULES,
}


def lora_scaling(lora_alpha: float, r: int, use_rslora: bool = False) -> float:
    """alpha / r, or alpha / sqrt(r) with rank-stabilised LoRA (rsLoRA). The one place the
    scale of ``B @ A`` is defined: the layer and the config both call it."""
    return lora_alpha / (math.sqrt(r) if use_rslora else r)


def _positive_int(name: str, value: Any) -> None:
    # bool is an int subclass: r=True would silently mean rank 1
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_targets(target_modules: Any) -> str | list[str]:
    if isinstance(target_modules, str):
        if not target_modules.strip():
            raise ValueError("target_modules is empty")
        if target_modules not in TARGET_PRESETS:
            try:
                re.compile(target_modules)
            except re.error as e:
                raise ValueError(
                    f"target_modules {target_modules!r} is neither a preset "
                    f"{sorted(TARGET_PRESETS)} nor a valid regex ({e})"
                ) from None
        return target_modules
    if not isinstance(target_modules, Sequence) or not all(
        isinstance(t, str) and t for t in target_modules
    ):
        raise ValueError(
            "target_modules must be a preset name, a regex or a list of module names, "
            f"got {target_modules!r}"
        )
    if not target_modules:
        raise ValueError("target_modules is empty")
    return list(target_modules)


@dataclass
class LoraConfig:
    """What to adapt and how. Mirrors ``peft.LoraConfig``'s fields of the same names.

    ``target_modules``: ``"attn"``, ``"mlp"``, ``"all"``, a list of module names (suffix
    match, as PEFT) or any other string as a regex that must match a full module path.
    ``expert_r``: rank of each MoE expert's adapter; ``None`` means ``max(1, r // top_k)``, the
    post's rule that keeps the LoRA/FullFT parameter ratio of MoE layers equal to dense ones.
    """

    r: int = 8
    lora_alpha: float = 32.0
    target_modules: str | Sequence[str] = "all"
    lora_dropout: float = 0.0
    use_rslora: bool = False
    expert_r: int | None = None

    def __post_init__(self) -> None:
        _positive_int("r", self.r)
        alpha = self.lora_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise ValueError(f"lora_alpha must be a number, got {alpha!r}")
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"lora_alpha must be positive and finite, got {alpha!r}")
        drop = self.lora_dropout
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0.0 <= drop < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {drop!r}")
        if not isinstance(self.use_rslora, bool):
            raise ValueError(f"use_rslora must be True or False, got {self.use_rslora!r}")
        if self.expert_r is not None:
            _positive_int("expert_r", self.expert_r)
        self.target_modules = _check_targets(self.target_modules)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scaling(self, r: int | None = None) -> float:
        """alpha / r (or alpha / sqrt(r) with rsLoRA) for an adapter of rank ``r``."""
        return lora_scaling(self.lora_alpha, self.r if r is None else r, self.use_rslora)

    def rank_for(self, module_name: str, top_k: int = 1) -> int:
        """Rank of the adapter on ``module_name`` (experts get their per-expert rank)."""
        if ".experts." in module_name:
            return self.expert_r if self.expert_r is not None else max(1, self.r // top_k)
        return self.r
