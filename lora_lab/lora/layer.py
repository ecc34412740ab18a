"""LoRA layers, and the dispatch list that decides which layer wraps which module.

As in PEFT, a new kind of layer (a fused or quantised one, say) is added as a factory in
:data:`lora_lab.lora.dispatch.LAYER_DISPATCH`, never by another ``if`` in the injection code.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from lora_lab.lora.config import LoraConfig, lora_scaling


class LoRALinear(nn.Module):
    """A frozen ``base_layer`` plus a trainable low-rank update ``scaling * B @ A``.

    ``W' = W + scaling * B @ A`` with ``A`` (r x d_in) drawn from ``kaiming_uniform(a=sqrt(5))``
    = U(+-1/sqrt(d_in)) and ``B`` (d_out x r) zero, so an adapted model starts out
    *identical* to its base (PEFT's ``init_lora_weights=True``).
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        r: int,
        lora_alpha: float = 32.0,
        lora_dropout: float = 0.0,
        use_rslora: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"LoRA wraps nn.Linear, got {type(base_layer).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ValueError(f"r must be a positive integer, got {r!r}")
        self.base_layer = base_layer
        self.r = r
        self.lora_alpha = lora_alpha
        self.scaling = lora_scaling(lora_alpha, r, use_rslora)
        w = base_layer.weight
        self.lora_A = nn.Linear(
            base_layer.in_features, r, bias=False, device=w.device, dtype=w.dtype
        )
        self.lora_B = nn.Linear(
            r, base_layer.out_features, bias=False, device=w.device, dtype=w.dtype
        )
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.merged = False
        self.disabled = False  # True: the base layer alone (PEFT's disable_adapter)
        self.reset_lora_parameters()
        for p in self.base_layer.parameters():
            p.requires_grad_(False)

    def reset_lora_parameters(self) -> None:
        # PEFT's default (init_lora_weights=True): A ~ kaiming_uniform(a=sqrt(5)), B = 0.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def delta_weight(self) -> torch.Tensor:
        """The update this adapter adds to W: scaling * B @ A, shape (out, in)."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged or self.disabled:
            return result
        return result + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base_layer.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base_layer.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, lora_alpha={self.lora_alpha}, scaling={self.scaling:g}"


# A factory takes (module to adapt, config, rank, layer kind) and returns the LoRA layer, or
# None when it does not handle that module or kind; lora_lab.lora.dispatch holds the list.
LayerFactory = Callable[[nn.Module, LoraConfig, int, str], "nn.Module | None"]


def linear_factory(module: nn.Module, config: LoraConfig, r: int, kind: str) -> nn.Module | None:
    """The reference layer for ``nn.Linear``, whatever kind was asked for (the fallback)."""
    if not isinstance(module, nn.Linear):
        return None
    return LoRALinear(
        module,
        r=r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        use_rslora=config.use_rslora,
    )


def is_lora_layer(module: nn.Module) -> bool:
    """Every LoRA layer kind exposes ``lora_A``/``lora_B``, ``merge``/``unmerge`` and
    ``base_layer``; the rest of the package relies only on that."""
    return isinstance(module, LoRALinear) or (
        hasattr(module, "lora_A") and hasattr(module, "base_layer") and hasattr(module, "merge")
    )
