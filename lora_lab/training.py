"""One trainer for full fine-tuning and LoRA, so the two differ only in what is trainable.

Optimizer: AdamW with betas (0.9, 0.95), eps 1e-8 and weight decay 0 by default. The post
uses Adam with a constant learning rate and no weight decay worth mentioning; 0.95 for beta2
is the usual choice for short language-model runs and what the CPU prototype used. Both
methods see exactly the same batches for a given seed.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import torch
import torch.nn.functional as F

from lora_lab.lora import LoraConfig, inject_lora
from lora_lab.model import CompactLM
from lora_lab.tasks.base import SFTDataset
from lora_lab.tokenizer import TOKENIZER

Method = Literal["full"] | LoraConfig


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def log_spaced_steps(total: int, per_decade: int = 4) -> list[int]:
    """Steps 0, then round(10 ** (k / per_decade)) up to ``total``, then ``total``.

    The points sit on one lattice whatever ``total`` is, so runs of different lengths are
    evaluated at the same steps (with 4 per decade: 1, 2, 3, 6, 10, 18, 32, 56, 100, ...).
    """
    if per_decade < 1:
        raise ValueError("per_decade must be >= 1")
    k_max = int(math.floor(math.log10(max(total, 1)) * per_decade + 1e-9))
    steps = {round(10 ** (k / per_decade)) for k in range(k_max + 1)}
    return sorted({0, total, *(s for s in steps if s <= total)})


@dataclass
class RunResult:
    """Everything a sweep records about one fine-tuning run."""

    config: dict[str, Any]
    curves: pd.DataFrame
    final: dict[str, float]
    trainable_params: int
    wall_time_s: float
    tokens_per_s: float
    diverged: bool = False
    model: CompactLM | None = field(default=None, repr=False)

    @property
    def final_loss(self) -> float:
        return self.final["eval_loss"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (the model itself is not included)."""
        return dict(
            config=self.config,
            curves=self.curves.to_dict(orient="list"),
            final=self.final,
            trainable_params=self.trainable_params,
            wall_time_s=self.wall_time_s,
            tokens_per_s=self.tokens_per_s,
            diverged=self.diverged,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(
            config=d["config"],
            curves=pd.DataFrame(d["curves"]),
            final=d["final"],
            trainable_params=d["trainable_params"],
            wall_time_s=d["wall_time_s"],
            tokens_per_s=d["tokens_per_s"],
            diverged=d["diverged"],
        )


def batch_loss(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean NLL per completion token, and the summed NLL (for exact dataset averages)."""
    length = int(mask.sum(0).nonzero().max()) + 1  # trim padding that carries no loss
    logits = model(inputs[:, :length])
    nll = F.cross_entropy(
        logits.flatten(0, 1).float(), targets[:, :length].flatten(), reduction="none"
    ).view(targets.shape[0], length)
    total = (nll * mask[:, :length]).sum()
    return total / mask[:, :length].sum().clamp_min(1), total


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    data: SFTDataset,
    device: torch.device,
    batch_size: int = 256,
    limit: int | None = None,
) -> float:
    """Mean NLL (nats) per completion token over the first ``limit`` examples."""
    inputs, targets, mask = data.tensors()
    n = len(data) if limit is None else min(limit, len(data))
    total, count = 0.0, 0.0
    was_training = model.training
    model.eval()
    for i in range(0, n, batch_size):
        sl = slice(i, min(i + batch_size, n))
        m = mask[sl].to(device)
        _, s = batch_loss(model, inputs[sl].to(device), targets[sl].to(device), m)
        total += float(s)
        count += float(m.sum())
    model.train(was_training)
    return total / max(count, 1.0)


@torch.no_grad()
def sampled_accuracy(
    model: CompactLM,
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
    groups: dict[int, list[int]] = {}
    encoded = [TOKENIZER.encode(ex.prompt, bos=True) for ex in examples]
    for i, ids in enumerate(encoded):
        groups.setdefault(len(ids), []).append(i)
    gen = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    correct = 0
    for length, idx in groups.items():
        prompts = torch.tensor([encoded[i] for i in idx], device=device)
        out = model.generate(
            prompts,
            max_new_tokens,
            temperature=temperature,
            eos_id=TOKENIZER.eos_id,
            generator=gen,
        )
        for row, i in zip(out[:, length:].tolist(), idx):
            correct += data.verify(examples[i], TOKENIZER.decode(row))
    model.train(was_training)
    return correct / max(len(examples), 1)


def _lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine


def _validate(lr, batch_size, grad_accum, steps, epochs, data, schedule, warmup_steps):
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if grad_accum <= 0:
        raise ValueError(f"grad_accum must be positive, got {grad_accum}")
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps or epochs")
    if steps is not None and steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if epochs is not None and epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    if len(data) == 0:
        raise ValueError("the training dataset is empty")
    if schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"schedule must be constant, linear or cosine, got {schedule!r}")
    if warmup_steps < 0:
        raise ValueError("warmup_steps must be >= 0")


def train(
    model: CompactLM | str,
    data: SFTDataset,
    method: Method = "full",
    *,
    lr: float,
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int = 32,
    grad_accum: int = 1,
    eval_data: SFTDataset | None = None,
    schedule: str = "constant",
    warmup_steps: int = 0,
    betas: tuple[float, float] = (0.9, 0.95),
    weight_decay: float = 0.0,
    evals_per_decade: int = 4,
    eval_limit: int | None = 512,
    accuracy_limit: int = 0,
    aux_loss_coef: float = 0.01,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    keep_model: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    eval_metrics: Callable[[torch.nn.Module], dict[str, float]] | None = None,
) -> RunResult:
    """Fine-tune a copy of ``model`` (a :class:`CompactLM` or a shipped base's preset name).

    ``method="full"`` trains every weight; a :class:`LoraConfig` freezes the base and trains
    only the adapters. Evaluation (mean NLL per completion token on ``eval_data``, default
    ``data``'s own examples) happens at ``evals_per_decade`` log-spaced steps per decade and
    at the end;
    ``accuracy_limit > 0`` adds greedy sampled accuracy for tasks with a verifier at the
    end. A run whose loss turns non-finite or climbs far above its start stops early and is
    returned with ``diverged=True`` rather than raising, so sweeps keep going.
    ``callback(step, row)`` is called after each evaluation (live plots use it).
    ``eval_metrics(model)`` returns extra named numbers logged at every evaluation (e.g.
    bits stored on ``facts``); they become columns of ``curves``.
    """
    _validate(lr, batch_size, grad_accum, steps, epochs, data, schedule, warmup_steps)
    if not (method == "full" or isinstance(method, LoraConfig)):
        raise ValueError(f"method must be 'full' or a LoraConfig, got {method!r}")
    if isinstance(model, str):
        from lora_lab.bases import load_base

        model = load_base(model)
    dev = resolve_device(device)
    examples_per_step = batch_size * grad_accum
    if steps is None:
        steps = max(1, math.ceil(epochs * len(data) / examples_per_step))
    eval_data = eval_data if eval_data is not None else data
    eval_steps = set(log_spaced_steps(steps, evals_per_decade))

    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        model = copy.deepcopy(model).to(dev)
        if isinstance(method, LoraConfig):
            inject_lora(model, method)
        else:
            for p in model.parameters():
                p.requires_grad_(True)
        params = [p for p in model.parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in params)
        opt = torch.optim.AdamW(params, lr=lr, betas=betas, eps=1e-8, weight_decay=weight_decay)
        inputs, targets, mask = data.tensors()
        order_gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(data), generator=order_gen)
        cursor = 0

        rows: list[dict[str, float]] = []
        start_loss: float | None = None
        recent: list[float] = []
        diverged = False
        tokens = 0
        model.train()
        t0 = time.perf_counter()
        bar = _progress(steps, progress)

        def log_eval(step: int, train_loss: float) -> None:
            row = {
                "step": step,
                "examples": step * examples_per_step,
                "train_loss": train_loss,
                "eval_loss": evaluate_loss(model, eval_data, dev, limit=eval_limit),
            }
            if eval_metrics is not None:
                row.update(eval_metrics(model))
            rows.append(row)
            if callback is not None:
                callback(step, row)

        log_eval(0, float("nan"))
        step = 0
        for step in range(1, steps + 1):
            factor = _lr_factor(step - 1, steps, warmup_steps, schedule)
            for group in opt.param_groups:
                group["lr"] = lr * factor
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for _ in range(grad_accum):
                if cursor + batch_size > len(order):  # new epoch, new shuffle
                    order = torch.randperm(len(data), generator=order_gen)
                    cursor = 0
                idx = order[cursor : cursor + batch_size]
                cursor += batch_size
                m = mask[idx].to(dev)
                loss, _ = batch_loss(model, inputs[idx].to(dev), targets[idx].to(dev), m)
                total = loss + aux_loss_coef * model.aux_loss() if model.config.is_moe else loss
                (total / grad_accum).backward()
                step_loss += loss.item() / grad_accum
                tokens += int((inputs[idx] != 0).sum())
            recent = (recent + [step_loss])[-5:]
            if start_loss is None:
                start_loss = step_loss
            smoothed = sum(recent) / len(recent)
            if not math.isfinite(step_loss) or smoothed > max(1.5 * start_loss, start_loss + 1.0):
                diverged = True
                rows.append(
                    {
                        "step": step,
                        "examples": step * examples_per_step,
                        "train_loss": step_loss,
                        "eval_loss": float("nan"),
                    }
                )
                break
            opt.step()
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{smoothed:.3f}")
            if step in eval_steps:
                log_eval(step, smoothed)
        bar.close()
        wall = time.perf_counter() - t0

    curves = pd.DataFrame(rows)
    final: dict[str, float] = {
        "eval_loss": float("nan") if diverged else float(curves.eval_loss.iloc[-1]),
        "train_loss": float(curves.train_loss.iloc[-1]),
        "steps_done": float(step),
    }
    if accuracy_limit and not diverged and eval_data.verifier is not None:
        final["accuracy"] = sampled_accuracy(model, eval_data, limit=accuracy_limit, device=dev)
    run_config = {
        "method": "full" if method == "full" else "lora",
        "lora": None if method == "full" else method.to_dict(),
        "model": model.config.name,
        "task": data.name,
        "data_fingerprint": data.fingerprint(),
        "lr": lr,
        "steps": steps,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "schedule": schedule,
        "warmup_steps": warmup_steps,
        "betas": list(betas),
        "weight_decay": weight_decay,
        "seed": seed,
        "device": str(dev),
    }
    return RunResult(
        config=run_config,
        curves=curves,
        final=final,
        trainable_params=trainable,
        wall_time_s=wall,
        tokens_per_s=tokens / max(wall, 1e-9),
        diverged=diverged,
        model=model.cpu() if keep_model else None,
    )


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="train", leave=False)
