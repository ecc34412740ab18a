"""Capacity in bits: how much of a dataset's information a model has stored, and which LoRA
rank should have room for it.

On ``facts`` every answer is a uniformly random code, so before training it costs
``log2(V)`` bits to transmit and a model that knows it transmits it for free. The bits a
model has *stored* are therefore the information content minus the code length the model
still needs for the answers (clamped per fact at 0: a confidently wrong model stores
nothing, it does not store negative bits).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lora_lab.lora import LoraConfig, count_lora_params
from lora_lab.model import ModelConfig
from lora_lab.tasks.base import SFTDataset
from lora_lab.tokenizer import TOKENIZER


@torch.no_grad()
def answer_code_length_bits(
    model: torch.nn.Module, data: SFTDataset, batch_size: int = 256
) -> np.ndarray:
    """Per example, -log2 p(answer characters | prompt) under ``model``.

    Only the characters of ``example.answer`` count (not the separating space or the EOS),
    so the result is comparable with the information content of the answers.
    """
    inputs, targets, _ = data.tensors()
    device = next(model.parameters()).device
    mask = torch.zeros_like(targets, dtype=torch.bool)
    for i, ex in enumerate(data.examples):
        if ex.answer is None:
            raise ValueError(f"{data.name} example {i} has no answer to measure")
        start = len(TOKENIZER.encode(ex.prompt, bos=True)) - 1  # target index of 1st completion
        offset = ex.completion.index(ex.answer)
        mask[i, start + offset : start + offset + len(ex.answer)] = True
    was = model.training
    model.eval()
    out = np.empty(len(data))
    for lo in range(0, len(data), batch_size):
        sl = slice(lo, lo + batch_size)
        length = int(mask[sl].any(0).nonzero().max()) + 1
        logits = model(inputs[sl, :length].to(device)).float()
        nll = F.cross_entropy(
            logits.flatten(0, 1), targets[sl, :length].flatten().to(device), reduction="none"
        ).view(-1, length)
        out[sl] = (nll * mask[sl, :length].to(device)).sum(1).cpu().numpy() / math.log(2)
    model.train(was)
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


# Bits per trainable parameter that capacity-bound adapters held in the shipped `capacity`
# sweep (median 0.64 over r=1 and r=4 runs, tiny base, 400 steps; notebook 01 recomputes
# it and tests/test_finding_capacity.py keeps this default within 25 % of the records).
# Allen-Zhu & Li report ~2 for training long enough to see each fact ~1,000 times; short
# runs store far less.
SHORT_RUN_BITS_PER_PARAM = 0.6


def suggest_rank(
    model: torch.nn.Module | ModelConfig,
    data: SFTDataset | None = None,
    *,
    bits: float | None = None,
    completion_tokens: int | None = None,
    bits_per_param: float = SHORT_RUN_BITS_PER_PARAM,
    target_modules: Any = "all",
    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    verbose: bool = True,
) -> int:
    """Smallest rank whose adapter should not be capacity-bound, with the reasoning printed.

    ``model`` is the base (or its config); ``data`` supplies ``bits`` (its information
    content, where known, as on ``facts``) and ``completion_tokens`` unless they are given.
    With bits known, the adapter must hold them at ``bits_per_param`` (default: what
    capacity-bound adapters held in the shipped short-run sweep, 0.6). Otherwise it falls back to
    Tinker's rule of thumb, LoRA parameters >= completion tokens trained on. If even the
    largest rank is too small it returns that rank and says to use full fine-tuning.
    """
    config = model.config if isinstance(model, torch.nn.Module) else model
    if data is not None:
        bits = bits if bits is not None else data.info_bits
        completion_tokens = completion_tokens or data.completion_tokens
    if bits is None and completion_tokens is None:
        raise ValueError("give data, bits (information content) or completion_tokens")
    if bits_per_param <= 0:
        raise ValueError("bits_per_param must be positive")

    def params(r: int) -> int:
        return count_lora_params(config, LoraConfig(r=r, target_modules=target_modules))

    if bits is not None:
        need = bits / bits_per_param
        why = f"{bits:,.0f} bits at {bits_per_param:g} bits/param"
    else:
        need = float(completion_tokens)
        why = f"{completion_tokens:,} completion tokens (Tinker: params >= tokens)"
    chosen = next((r for r in ranks if params(r) >= need), None)
    if verbose:
        if chosen is None:
            print(
                f"need >= {need:,.0f} LoRA parameters for {why}; even r={ranks[-1]} gives only "
                f"{params(ranks[-1]):,}: use full fine-tuning"
            )
        else:
            print(
                f"need >= {need:,.0f} LoRA parameters for {why}; "
                f"r={chosen} on {target_modules!r} gives {params(chosen):,} -> suggest r={chosen}"
            )
        if bits is not None and completion_tokens:
            tinker = next((r for r in ranks if params(r) >= completion_tokens), ranks[-1])
            print(
                f"  (Tinker's params >= tokens rule would say r={tinker} for "
                f"{completion_tokens:,} completion tokens, i.e. it assumes "
                f"{bits / completion_tokens:.2f} bits/param here)"
            )
    return ranks[-1] if chosen is None else chosen


# ----------------------------------------------------------------------------- sweep analysis


def capacity_table(runs: pd.DataFrame, n_col: str = "task_n_entities") -> pd.DataFrame:
    """One row per (N, method) at its best LR (lowest seed-mean final recall loss): loss,
    bits stored (seed mean and std), fraction of the information stored, bits per
    trainable parameter. ``runs`` is :func:`lora_lab.analysis.load_runs` of a capacity sweep."""
    from lora_lab.analysis import best_over_lr

    need = {n_col, "label", "lr", "seed", "final_loss", "bits_stored", "info_bits"}
    missing = need - set(runs.columns)
    if missing:
        raise ValueError(f"runs lack {sorted(missing)}: is this a sweep with measure_bits?")
    best = best_over_lr(runs, [n_col, "label"])
    rows = []
    for _, b in best.iterrows():
        tried = runs[(runs[n_col] == b[n_col]) & (runs.label == b.label)].lr
        at = runs[(runs[n_col] == b[n_col]) & (runs.label == b.label) & (runs.lr == b.lr)]
        params = int(at.trainable_params.iloc[0])
        bits = at.bits_stored.mean()
        rows.append(
            {
                "n_facts": int(b[n_col]),
                "label": b.label,
                "r": at.r.iloc[0],
                "lr": b.lr,
                "lr_at_grid_edge": bool(b.lr in (tried.min(), tried.max())),
                "loss": b.best_loss,
                "loss_std": b["std"],
                "info_bits": float(at.info_bits.iloc[0]),
                "bits_stored": bits,
                "bits_std": at.bits_stored.std(),
                "fraction_stored": bits / float(at.info_bits.iloc[0]),
                "trainable_params": params,
                "bits_per_param": bits / params,
                "seeds": len(at),
            }
        )
    return (
        pd.DataFrame(rows).sort_values(["n_facts", "r"], na_position="first").reset_index(drop=True)
    )


def capacity_bound(table: pd.DataFrame, relative_to_full: float = 0.75) -> pd.Series:
    """Rows whose adapter, not the training budget, limits what was stored: it stores less
    than ``relative_to_full`` of what FullFT stored on the same N with the same budget.
    (FullFT itself may not store everything at large N in a short run; comparing with it
    separates "out of room" from "out of steps".)"""
    full = table[table.label == "FullFT"].set_index("n_facts").bits_stored
    ref = table.n_facts.map(full)
    return (table.label != "FullFT") & (table.bits_stored < relative_to_full * ref)


def measured_bits_per_param(
    table: pd.DataFrame, n_values: list[int] | None = None, relative_to_full: float = 0.75
) -> float:
    """Bits per trainable parameter an adapter holds when it is full: the median over
    capacity-bound LoRA rows (restricted to ``n_values`` if given, e.g. to keep an N value
    out for a held-out check). NaN if no row is capacity-bound."""
    rows = table[capacity_bound(table, relative_to_full)]
    if n_values is not None:
        rows = rows[rows.n_facts.isin(n_values)]
    return float(rows.bits_per_param.median()) if len(rows) else float("nan")
