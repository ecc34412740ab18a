"""Objectives for :func:`lora_lab.training.loop.run_loop`: supervised fine-tuning (masked NLL on
completions) and language modelling (NLL on every next character, for pretraining)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from lora_lab.tasks.base import SFTDataset
from lora_lab.training.evaluation import (
    evaluate_loss,
    evaluating,
    load_imbalance,
    masked_nll,
    routing_counts,
    token_nll,
)
from lora_lab.training.loop import MicroBatch, Objective
from lora_lab.training.optim import MOE_AUX_LOSS_COEF


def moe_aux_loss(model: nn.Module, coef: float) -> torch.Tensor | float:
    """The MoE load-balancing term of the last forward pass (0 for dense models)."""
    config = getattr(model, "config", None)
    return coef * model.aux_loss() if getattr(config, "is_moe", False) else 0.0


class EpochShuffle:
    """Indices 0..n-1 drawn ``k`` at a time without replacement from a seeded shuffle,
    reshuffled (same generator) when an epoch cannot fill the next draw: for a given seed
    every method sees exactly the same batches."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.gen = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(n, generator=self.gen)
        self.cursor = 0

    def draw(self, k: int) -> torch.Tensor:
        if self.cursor + k > len(self.order):  # new epoch, new shuffle
            self.order = torch.randperm(self.n, generator=self.gen)
            self.cursor = 0
        idx = self.order[self.cursor : self.cursor + k]
        self.cursor += k
        return idx


class SupervisedObjective(Objective):
    """Mean NLL per completion token (prompt tokens carry no loss), as SFT in the post.

    Batches are drawn without replacement from a seeded shuffle, reshuffled each epoch, so
    every method sees exactly the same batches for a given seed.
    """

    def __init__(
        self,
        data: SFTDataset,
        eval_data: SFTDataset,
        *,
        batch_size: int,
        seed: int = 0,
        eval_limit: int | None = 512,
        aux_loss_coef: float = MOE_AUX_LOSS_COEF,
        eval_metrics: Callable[[nn.Module], dict[str, float]] | None = None,
    ) -> None:
        self.data, self.eval_data = data, eval_data
        self.examples_per_micro_batch = batch_size
        self.eval_limit, self.aux_loss_coef, self.eval_metrics = (
            eval_limit,
            aux_loss_coef,
            eval_metrics,
        )
        self.inputs, self.targets, self.mask = data.tensors()
        self.batches = EpochShuffle(len(data), seed)
        self.device = torch.device("cpu")

    def setup(self, model: nn.Module, device: torch.device) -> None:
        self.device = device

    def micro_batch(self, model: nn.Module) -> MicroBatch:
        idx = self.batches.draw(self.examples_per_micro_batch)
        dev = self.device
        inputs = self.inputs[idx]
        loss, _ = masked_nll(
            model, inputs.to(dev), self.targets[idx].to(dev), self.mask[idx].to(dev)
        )
        return MicroBatch(
            loss=loss + moe_aux_loss(model, self.aux_loss_coef),
            value=loss.item(),
            tokens=int((inputs != 0).sum()),
        )

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        with routing_counts(model) as counts:
            loss = evaluate_loss(model, self.eval_data, self.device, limit=self.eval_limit)
        row = {"eval_loss": loss}
        if counts:  # MoE: how evenly the routers spread the held-out tokens (1 = balanced)
            row["router_imbalance"] = load_imbalance(counts)
        if self.eval_metrics is not None:
            row.update(self.eval_metrics(model))
        return row


def corpus_windows(stream: torch.Tensor, n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random windows of ``length + 1`` tokens from a token stream: (n, length + 1)."""
    if len(stream) <= length + 1:
        raise ValueError(f"stream of {len(stream)} tokens is too short for windows of {length}")
    starts = torch.randint(0, len(stream) - length - 1, (n,), generator=gen)
    return torch.stack([stream[s : s + length + 1] for s in starts])


@torch.no_grad()
def stream_eval_loss(
    model: nn.Module, stream: torch.Tensor, n_windows: int = 64, seq_len: int = 128
) -> float:
    """Mean next-token NLL (nats/char) on fixed windows (seed 1234) of a held-out stream."""
    gen = torch.Generator().manual_seed(1234)
    w = corpus_windows(stream, n_windows, seq_len, gen).to(next(model.parameters()).device)
    with evaluating(model):
        return float(token_nll(model, w[:, :-1], w[:, 1:]).mean())


class LanguageModelObjective(Objective):
    """Next-token NLL on random windows of a token stream (pretraining)."""

    def __init__(
        self,
        train_stream: torch.Tensor,
        eval_stream: torch.Tensor,
        *,
        batch_size: int,
        seq_len: int,
        seed: int = 0,
        aux_loss_coef: float = MOE_AUX_LOSS_COEF,
    ) -> None:
        self.train_stream, self.eval_stream = train_stream, eval_stream
        self.examples_per_micro_batch, self.seq_len = batch_size, seq_len
        self.aux_loss_coef = aux_loss_coef
        self.gen = torch.Generator().manual_seed(seed)
        self.device = torch.device("cpu")

    def setup(self, model: nn.Module, device: torch.device) -> None:
        max_len = getattr(getattr(model, "config", None), "max_seq_len", self.seq_len)
        if self.seq_len > max_len:
            raise ValueError(f"seq_len {self.seq_len} > the model's max_seq_len {max_len}")
        self.device = device

    def micro_batch(self, model: nn.Module) -> MicroBatch:
        w = corpus_windows(
            self.train_stream, self.examples_per_micro_batch, self.seq_len, self.gen
        ).to(self.device)
        loss = token_nll(model, w[:, :-1], w[:, 1:]).mean()
        return MicroBatch(
            loss=loss + moe_aux_loss(model, self.aux_loss_coef),
            value=loss.item(),
            tokens=w[:, :-1].numel(),
        )

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {"eval_loss": stream_eval_loss(model, self.eval_stream, seq_len=self.seq_len)}
