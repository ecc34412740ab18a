"""Self-checking exercises for the notebooks: the answer lives here, not in the notebook."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lora_lab.lora import LoRALinear


def check_lora_forward(fn: Callable[..., torch.Tensor | None], seed: int = 0) -> bool:
    """Check a student's ``fn(x, W, A, B, alpha, r) -> y`` against :class:`LoRALinear`.

    Shapes: x (batch, d_in), W (d_out, d_in), A (r, d_in), B (d_out, r). Prints a verdict
    and returns whether it matches on several random layers (including a non-zero B).
    """
    gen = torch.Generator().manual_seed(seed)
    for d_in, d_out, r in [(8, 6, 2), (32, 16, 4), (17, 5, 1)]:
        layer = LoRALinear(torch.nn.Linear(d_in, d_out, bias=False), r=r)
        with torch.no_grad():
            layer.lora_B.weight.copy_(torch.randn(d_out, r, generator=gen))
        x = torch.randn(3, d_in, generator=gen)
        want = layer(x).detach()
        try:
            got = fn(
                x,
                layer.base_layer.weight.detach(),
                layer.lora_A.weight.detach(),
                layer.lora_B.weight.detach(),
                layer.lora_alpha,
                r,
            )
        except NotImplementedError:
            print("Not attempted yet: replace `raise NotImplementedError` with your code.")
            return False
        if got is None or not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = None if not isinstance(got, torch.Tensor) else tuple(got.shape)
            print(f"Not yet: expected a tensor of shape {tuple(want.shape)}, got {shape}.")
            return False
        err = float((got - want).abs().max())
        if err > 1e-5:
            W, A, B = layer.base_layer.weight, layer.lora_A.weight, layer.lora_B.weight
            with torch.no_grad():
                if torch.allclose(got, x @ W.T, atol=1e-5):
                    hint = "the low-rank term B @ A is missing."
                elif torch.allclose(got, x @ W.T + (x @ A.T) @ B.T, atol=1e-5):
                    hint = "did you forget the alpha / r scaling?"
                else:
                    hint = "check the shapes: x @ W.T, and x @ A.T @ B.T for the update."
            print(f"Not yet: max difference {err:.3g} (d_in={d_in}, d_out={d_out}, r={r}); {hint}")
            return False
    print("Correct: your forward pass matches lora_lab's LoRALinear (and PEFT's).")
    return True


def reference_lora_forward(x, W, A, B, alpha, r):
    """The answer, for the notebook's self-test of the checker."""
    return x @ W.T + (alpha / r) * (x @ A.T) @ B.T
