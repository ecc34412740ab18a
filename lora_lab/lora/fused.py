"""A faster LoRA layer: the frozen matmul and the low-rank path in one autograd node.

The reference :class:`~lora_lab.lora.layer.LoRALinear` builds five autograd nodes per call
(base linear, ``lora_A``, ``lora_B``, the scaling, the add), each with its own kernels, and
two of its matmuls (``h B^T`` forward, ``g_h A`` backward) write a full (tokens x width)
output for a rank-r product. Here one ``torch.autograd.Function`` computes

    W' = W + s B A                       (d_out x d_in: O(d^2 r), independent of tokens)
    forward:  y = x W'^T + bias;  h = x A^T (N x r)
    backward: g_x = g W';  g_A = s (g B)^T x;  g_B = s g^T h

so each full-width product is one GEMM, as in the frozen model, and only the skinny products
that the adapter's own gradients need remain. It saves ``x`` and the small ``h``; nothing for
the frozen weight's gradient is formed. Numerically equal to the reference up to float
rounding (tests check 1e-5). Plugged in through the dispatch list
(:mod:`lora_lab.lora.dispatch`), chosen with ``inject_lora(..., layer_kind="fused")``, a run
spec's ``lora_layer="fused"`` or ``LORA_LAB_LORA_LAYER=fused``; with dropout > 0, or a
trainable base weight, it falls back to the reference path.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from lora_lab.lora.config import LoraConfig
from lora_lab.lora.layer import LoRALinear


def _merge(weight: torch.Tensor, b: torch.Tensor, a: torch.Tensor,
           scaling: float | torch.Tensor) -> torch.Tensor:
    """W + s B A. A float ``s`` goes into the GEMM's alpha; a 0-d tensor (compiled graphs,
    so the scale is an input rather than a constant baked into the graph) scales B first."""
    if isinstance(scaling, torch.Tensor):
        return torch.addmm(weight, b * scaling, a)
    return torch.addmm(weight, b, a, alpha=scaling)


class _FusedLoRA(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, weight, bias, a, b, scaling: float | torch.Tensor):  # noqa: ANN001
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])  # (N, d_in); a = lora_A (r, d_in), b = lora_B (d_out, r)
        merged = _merge(weight, b, a, scaling)  # W + s B A: (d_out, d_in), O(d^2 r)
        y = F.linear(x2, merged, bias)  # one GEMM instead of x W^T + (x A^T) B^T
        h = x2 @ a.t()  # (N, r): all B's gradient needs
        ctx.save_for_backward(x2, h, weight, a, b)
        ctx.scaling, ctx.shape = scaling, shape
        return y.view(*shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):  # noqa: ANN205
        x2, h, weight, a, b = ctx.saved_tensors
        s = ctx.scaling
        g = grad.reshape(-1, grad.shape[-1])  # (N, d_out)
        g_x = g_a = g_b = None
        if ctx.needs_input_grad[0]:  # g (W + s B A): the merged weight again, one GEMM
            g_x = (g @ _merge(weight, b, a, s)).view(ctx.shape)
        if ctx.needs_input_grad[3]:
            g_a = (g @ b).mul_(s).t() @ x2  # (r, d_in)
        if ctx.needs_input_grad[4]:
            g_b = (g.t() @ h).mul_(s)  # (d_out, r)
        return g_x, None, None, g_a, g_b, None


class FusedLoRALinear(LoRALinear):
    """:class:`LoRALinear` with the fused forward/backward (same parameters, state dict,
    merge/unmerge and adapter files; only the arithmetic's schedule differs)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the scale as a tensor for compiled graphs: a float attribute would be baked into the
        # graph (alpha / r differs per rank), a buffer is an input, so ranks can share a graph
        w = self.base_layer.weight
        self.register_buffer("_scale", torch.tensor(self.scaling, dtype=w.dtype, device=w.device),
                             persistent=False)  # fmt: skip

    def _fusable(self) -> bool:
        base = self.base_layer
        return (
            not self.merged
            and not self.disabled
            and isinstance(self.lora_dropout, nn.Identity)
            and not base.weight.requires_grad
            and (base.bias is None or not base.bias.requires_grad)
            and not torch.is_autocast_enabled()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fusable():
            return super().forward(x)
        base = self.base_layer
        scaling = self._scale if torch.compiler.is_compiling() else self.scaling
        if not torch.is_grad_enabled():  # evaluation: the same y, without h or saved tensors
            merged = _merge(base.weight, self.lora_B.weight, self.lora_A.weight, scaling)
            y = F.linear(x.reshape(-1, x.shape[-1]), merged, base.bias)
            return y.view(*x.shape[:-1], y.shape[-1])
        return _FusedLoRA.apply(
            x, base.weight, base.bias, self.lora_A.weight, self.lora_B.weight, scaling
        )


def fused_linear_factory(module: nn.Module, config: LoraConfig, r: int, kind: str
                         ) -> nn.Module | None:  # fmt: skip
    """The fused layer for ``nn.Linear`` when the "fused" kind is asked for and dropout is 0
    (dropout needs the reference path's separate input to ``lora_A``)."""
    if kind != "fused" or not isinstance(module, nn.Linear) or config.lora_dropout > 0:
        return None
    return FusedLoRALinear(
        module, r=r, lora_alpha=config.lora_alpha, lora_dropout=0.0, use_rslora=config.use_rslora
    )
