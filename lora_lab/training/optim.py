"""Optimizer settings shared by pretraining, fine-tuning and the first-update analysis.

AdamW with betas (0.9, 0.95), eps 1e-8 and weight decay 0 by default. The post uses Adam
with a constant learning rate and no weight decay worth mentioning; 0.95 for beta2 is the
usual choice for short language-model runs and what the CPU prototype used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

ADAM_BETAS: tuple[float, float] = (0.9, 0.95)
ADAM_EPS = 1e-8
MOE_AUX_LOSS_COEF = 0.01  # weight of the MoE load-balancing term in every objective
SCHEDULES = ("constant", "linear", "cosine")


def make_adamw(
    params: Iterable[torch.nn.Parameter] | list[dict[str, Any]],
    lr: float,
    betas: tuple[float, float] = ADAM_BETAS,
    weight_decay: float = 0.0,
    foreach: bool = True,
) -> torch.optim.AdamW:
    """AdamW updating all tensors of a group in one ``_foreach`` call per op. On the CPU
    torch's default is one Python loop iteration per tensor; ``foreach`` gives bit-identical
    parameters (``tests/test_training.py`` checks it) in fewer, larger kernel calls, which
    matters for the many small tensors of a compact model or a LoRA adapter."""
    return torch.optim.AdamW(
        params, lr=lr, betas=tuple(betas), eps=ADAM_EPS, weight_decay=weight_decay,
        foreach=foreach,
    )  # fmt: skip


def lr_factor(
    step: int, total: int, warmup: int = 0, schedule: str = "constant", min_ratio: float = 0.0
) -> float:
    """Multiplier of the peak LR at 0-based ``step``: linear warmup over ``warmup`` steps,
    then constant, linear decay to ``min_ratio`` or cosine decay to ``min_ratio``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(min_ratio, 1.0 - (1.0 - min_ratio) * progress)
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
