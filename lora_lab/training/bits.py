"""Bits stored: how much of a dataset's information a model holds.

On ``facts`` every answer is a uniformly random code, so before training it costs
``log2(V)`` bits to transmit and a model that knows it transmits it for free. The bits a
model has *stored* are therefore the information content minus the code length the model
still needs for the answers (clamped per fact at 0: a confidently wrong model stores
nothing, it does not store negative bits). Sweeps record it with ``measure_bits=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from lora_lab.tasks.base import SFTDataset
from lora_lab.tokenizer import TOKENIZER
from lora_lab.training.evaluation import evaluating, token_nll


def answer_mask(data: SFTDataset) -> torch.Tensor:
    """(n, L-1) bool: True on the targets that are characters of ``example.answer``."""
    _, targets, _ = data.tensors()
    mask = torch.zeros_like(targets, dtype=torch.bool)
    for i, ex in enumerate(data.examples):
        if ex.answer is None:
            raise ValueError(f"{data.name} example {i} has no answer to measure")
        start = len(TOKENIZER.encode(ex.prompt, bos=True)) - 1  # target index of 1st completion
        offset = ex.completion.index(ex.answer)
        mask[i, start + offset : start + offset + len(ex.answer)] = True
    return mask


@torch.no_grad()
def answer_code_length_bits(
    model: torch.nn.Module, data: SFTDataset, batch_size: int = 256
) -> np.ndarray:
    """Per example, -log2 p(answer characters | prompt) under ``model``.

    Only the characters of ``example.answer`` count (not the separating space or the EOS),
    so the result is comparable with the information content of the answers.
    """
    inputs, targets, _ = data.tensors()
    mask = answer_mask(data)
    device = next(model.parameters()).device
    out = np.empty(len(data))
    with evaluating(model):
        for lo in range(0, len(data), batch_size):
            sl = slice(lo, lo + batch_size)
            length = int(mask[sl].any(0).nonzero().max()) + 1
            nll = token_nll(model, inputs[sl, :length].to(device), targets[sl, :length].to(device))
            bits = (nll * mask[sl, :length].to(device)).sum(1) / math.log(2)
            out[sl] = bits.cpu().numpy()
    return out


def bits_stored(model: torch.nn.Module, data: SFTDataset) -> dict[str, float]:
    """Bits of ``data``'s answers the model has stored (``data.info_bits`` minus code length,
    per fact clamped to [0, bits per fact]). Use the ``recall`` split of ``facts``."""
    if data.info_bits is None:
        raise ValueError(f"{data.name}/{data.split} has no known information content")
    per_fact = data.info_bits / len(data)
    code = answer_code_length_bits(model, data)
    stored = np.clip(per_fact - code, 0.0, per_fact)
    return {
        "info_bits": float(data.info_bits),
        "code_length_bits": float(code.sum()),
        "bits_stored": float(stored.sum()),
        "fraction_stored": float(stored.sum() / data.info_bits),
    }


def sample_bits_metric(
    data: SFTDataset, limit: int = 512
) -> Callable[[torch.nn.Module], dict[str, float]]:
    """An ``eval_metrics`` hook for :func:`lora_lab.training.train`: bits stored, estimated
    from the first ``limit`` facts (the fraction stored there times ``data.info_bits``), so
    a learning curve in bits costs one small forward pass per evaluation. The fact order is
    random, so the first ``limit`` are a fair sample."""
    if data.info_bits is None:
        raise ValueError(f"{data.name}/{data.split} has no known information content")
    if limit <= 0:
        raise ValueError("limit must be positive")
    n = min(limit, len(data))
    sample = SFTDataset(
        data.name, data.split, data.examples[:n], info_bits=data.info_bits * n / len(data)
    )

    def metric(model: torch.nn.Module) -> dict[str, float]:
        fraction = bits_stored(model, sample)["fraction_stored"]
        return {"bits_stored": fraction * float(data.info_bits), "fraction_stored": fraction}

    return metric
