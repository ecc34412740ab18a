"""Losses and evaluations shared by every objective: one masked NLL, one eval-mode guard."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from lora_lab.model import MoE
from lora_lab.tasks.base import SFTDataset
from lora_lab.tokenizer import TOKENIZER


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` for the block, then the previous mode again, even if the block
    raises (a model left in eval mode would silently train without dropout)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def token_nll(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token NLL in nats for every position: (B, T) ids -> (B, T) float32."""
    logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view(
        targets.shape
    )


def masked_nll(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean NLL per masked token, and the summed NLL (for exact dataset averages).

    Columns after the last masked position carry no loss and are trimmed before the forward
    pass (right padding costs nothing). A model with ``pack_tokens`` set (compiled runs)
    also skips each row's positions after its own last masked one
    (:meth:`~lora_lab.model.CompactLM.packed_logits`): same loss up to float rounding.
    """
    length = int(mask.sum(0).nonzero().max()) + 1
    inputs, targets, mask = inputs[:, :length], targets[:, :length], mask[:, :length]
    if getattr(model, "pack_tokens", False):  # compiled runs: skip every row's tail too
        keep = (mask != 0).flip(1).cumsum(1).flip(1) > 0  # up to each row's last loss position
        logits = model.packed_logits(inputs, keep)  # (N, vocab)
        nll = F.cross_entropy(logits.float(), targets[keep], reduction="none")
        total = (nll * mask[keep]).sum()
    else:
        total = (token_nll(model, inputs, targets) * mask).sum()
    return total / mask.sum().clamp_min(1), total


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    data: SFTDataset,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    limit: int | None = None,
) -> float:
    """Mean NLL (nats) per completion token over the first ``limit`` examples."""
    if len(data) == 0:
        raise ValueError(f"cannot evaluate on an empty dataset ({data.name}/{data.split})")
    inputs, targets, mask = data.tensors()
    n = len(data) if limit is None else min(limit, len(data))
    total, count = 0.0, 0.0
    with evaluating(model):
        for i in range(0, n, batch_size):
            sl = slice(i, min(i + batch_size, n))
            m = mask[sl].to(device)
            _, s = masked_nll(model, inputs[sl].to(device), targets[sl].to(device), m)
            total += float(s)
            count += float(m.sum())
    return total / max(count, 1.0)


@torch.no_grad()
def prompt_batches(
    examples: list, device: torch.device | str = "cpu"
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """The examples' prompts (BOS + tokens) grouped by length, so each group generates as one
    batch without padding: ``(length, indices into examples, (n, length) ids)``, in order of
    first appearance."""
    encoded = [TOKENIZER.encode(ex.prompt, bos=True) for ex in examples]
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        groups.setdefault(len(ids), []).append(i)
    for length, idx in groups.items():
        yield length, idx, torch.tensor([encoded[i] for i in idx], device=device)


def sampled_accuracy(
    model: nn.Module,
    data: SFTDataset,
    limit: int = 200,
    temperature: float = 0.0,
    max_new_tokens: int = 96,
    seed: int = 0,
    device: torch.device | None = None,
) -> float:
    """Fraction of the first ``limit`` prompts whose sampled completion the verifier accepts
    (greedy by default). Prompts of equal length are generated as one batch."""
    device = device or next(model.parameters()).device
    examples = data.examples[:limit]
    gen = torch.Generator(device=device).manual_seed(seed)
    correct = 0
    with evaluating(model):
        for length, idx, prompts in prompt_batches(examples, device):
            out = model.generate(
                prompts,
                max_new_tokens,
                temperature=temperature,
                eos_id=TOKENIZER.eos_id,
                generator=gen,
            )
            for row, i in zip(out[:, length:].tolist(), idx):
                correct += data.verify(examples[i], TOKENIZER.decode(row))
    return correct / max(len(examples), 1)


@contextmanager
def routing_counts(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Routed slots per expert of every MoE layer, summed over the forward passes made inside
    the block (every position the forward sees): ``{layer name: (n_experts,) counts}``.

    A pre-forward hook re-runs the router's top-k on the layer's input, so the count is what
    the layer itself routes, and nothing in the model changes. Empty for dense models.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, MoE)]
    counts = {name: torch.zeros(m.n_experts) for name, m in layers}

    def hook(name: str, module: MoE):
        def count(_, args):
            with torch.no_grad():
                flat = args[0].reshape(-1, args[0].shape[-1])
                top = module.router(flat).topk(module.top_k, dim=-1).indices
                counts[name] += torch.bincount(
                    top.flatten().cpu(), minlength=module.n_experts
                ).float()

        return count

    handles = [m.register_forward_pre_hook(hook(name, m)) for name, m in layers]
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def load_imbalance(counts: dict[str, torch.Tensor]) -> float:
    """The busiest expert's share of routed slots over the balanced share 1 / n_experts,
    averaged over MoE layers: 1 is perfectly balanced, n_experts / top_k is the worst
    possible (every token on the same top-k experts)."""
    if not counts:
        raise ValueError("no routing counts: the model has no mixture-of-experts layers")
    ratios = [float(c.max() / c.sum() * len(c)) for c in counts.values() if c.sum() > 0]
    if not ratios:
        raise ValueError("no tokens were routed inside the block")
    return sum(ratios) / len(ratios)
