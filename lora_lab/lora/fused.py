"""A faster LoRA layer: the frozen matmul and the low-rank path in one autograd node.

The reference :class:`~lora_lab.lora.layer.LoRALinear` builds five autograd nodes per call
(base linear, ``lora_A``, ``lora_B``, the scaling, the add), each with its own kernels and
saved tensors. Here one ``torch.autograd.Function`` computes

    forward:  h = x A^T (N x r);  y = x W^T + b + s * h B^T      (the last as one addmm)
    backward: g_h = s * g B;  g_A = g_h^T x;  g_B = s * g^T h;  g_x = g W + g_h A  (addmm)

and saves only ``x`` and the small ``h``: nothing for the frozen weight's gradient is formed.
Same FLOPs, fewer kernels and temporaries; numerically equal to the reference up to float
rounding (tests check 1e-5). Plugged in through the dispatch list, selected with
``set_layer_kind("fused")`` or ``LORA_LAB_LORA_LAYER=fused``; with dropout > 0, or a
trainable base weight, it falls back to the reference path.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from lora_lab.lora.config import LoraConfig
from lora_lab.lora.layer import LAYER_DISPATCH, LAYER_KINDS, LoRALinear, layer_kind


class _FusedLoRA(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, weight, bias, a, b, scaling: float):  # noqa: ANN001
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])  # (N, d_in)
        h = x2 @ a.t()  # (N, r)  a = lora_A (r, d_in), b = lora_B (d_out, r)
        y = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        y.addmm_(h, b.t(), alpha=scaling)  # (N, d_out)
        ctx.save_for_backward(x2, h, weight, a, b)
        ctx.scaling, ctx.shape = scaling, shape
        return y.view(*shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):  # noqa: ANN205
        x2, h, weight, lora_A, lora_B = ctx.saved_tensors
        s = ctx.scaling
        g = grad.reshape(-1, grad.shape[-1])  # (N, d_out)
        g_h = (g @ lora_B).mul_(s)  # (N, r)
        g_x = g_A = g_B = None
        if ctx.needs_input_grad[0]:
            g_x = (g @ weight).addmm_(g_h, lora_A).view(ctx.shape)
        if ctx.needs_input_grad[3]:
            g_A = g_h.t() @ x2  # (r, d_in)
        if ctx.needs_input_grad[4]:
            g_B = (g.t() @ h).mul_(s)  # (d_out, r)
        return g_x, None, None, g_A, g_B, None


class FusedLoRALinear(LoRALinear):
    """:class:`LoRALinear` with the fused forward/backward (same parameters, state dict,
    merge/unmerge and adapter files; only the arithmetic's schedule differs)."""

    def _fusable(self) -> bool:
        base = self.base_layer
        return (
            not self.merged
            and isinstance(self.lora_dropout, nn.Identity)
            and not base.weight.requires_grad
            and (base.bias is None or not base.bias.requires_grad)
            and not torch.is_autocast_enabled()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fusable():
            return super().forward(x)
        base = self.base_layer
        return _FusedLoRA.apply(
            x, base.weight, base.bias, self.lora_A.weight, self.lora_B.weight, self.scaling
        )


def fused_linear_factory(module: nn.Module, config: LoraConfig, r: int) -> nn.Module | None:
    """The fused layer for ``nn.Linear`` when the "fused" kind is selected and dropout is 0
    (dropout needs the reference path's separate input to ``lora_A``)."""
    if layer_kind() != "fused" or not isinstance(module, nn.Linear) or config.lora_dropout > 0:
        return None
    return FusedLoRALinear(
        module, r=r, lora_alpha=config.lora_alpha, lora_dropout=0.0, use_rslora=config.use_rslora
    )


if "fused" not in LAYER_KINDS:  # plug in once, ahead of the reference factory
    LAYER_KINDS.append("fused")
    LAYER_DISPATCH.insert(0, fused_linear_factory)
