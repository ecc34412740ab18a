"""Pretrained base models: where they live, how they are made, how to load them.

Fine-tuning in lora_lab is *post-training*, as in the post: every task starts from a base
that already knows the formats and the language of the synthetic world. Bases are trained
by :func:`pretrain` (``lora-lab pretrain --preset P``) with the same loop as fine-tuning
and a language-modelling objective, and shipped in ``data/base/``.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lora_lab._version import __version__
from lora_lab.model import CompactLM, build_model, get_preset, load_model, save_model
from lora_lab.paths import base_path, data_dir
from lora_lab.tasks.corpus import corpus_tokens
from lora_lab.training.loop import resolve_device, run_loop
from lora_lab.training.objectives import LanguageModelObjective, stream_eval_loss
from lora_lab.training.settings import OptimSettings, check_positive_int

# Steps sized so each base trains in under ~15 minutes on 2 CPU cores (README, "Bases").
PRETRAIN_STEPS = {"nano": 600, "tiny": 1500, "small": 1000, "wide": 1000, "small-moe": 1000}
CORPUS_SEED, EVAL_SEED = 0, 1
PRETRAIN_WEIGHT_DECAY = 0.1  # on matrices only, as usual for language-model pretraining


def available_bases() -> list[str]:
    folder = data_dir() / "base"
    return sorted(p.stem for p in folder.glob("*.safetensors")) if folder.exists() else []


def load_base(preset: str, device: str | torch.device = "cpu") -> CompactLM:
    """The shipped pretrained base for ``preset``; a clear error says how to make one."""
    if not isinstance(preset, str):
        raise TypeError(f"preset must be a name such as 'tiny', got {type(preset).__name__}")
    path = base_path(preset)
    if not path.exists():
        get_preset(preset)  # unknown preset names get the list of presets
        raise FileNotFoundError(
            f"no pretrained base for {preset!r} at {path}; "
            f"run `lora-lab pretrain --preset {preset}`"
        )
    return load_model(path, device)


def corpus_eval_loss(
    model: CompactLM, stream: torch.Tensor, n_windows: int = 64, seq_len: int = 128
) -> float:
    """Mean next-token NLL (nats/char) on fixed windows of a held-out corpus stream."""
    return stream_eval_loss(model, stream, n_windows=n_windows, seq_len=seq_len)


def _decay_groups(model: nn.Module) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": PRETRAIN_WEIGHT_DECAY},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def pretrain(
    preset: str,
    steps: int | None = None,
    batch_size: int = 32,
    seq_len: int = 128,
    lr: float = 3e-3,
    warmup: int = 100,
    seed: int = 0,
    device: str | torch.device = "auto",
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a base for ``preset`` on the corpus and save it (default: the shipped path).

    AdamW (0.9, 0.95), weight decay 0.1 on matrices, linear warmup then cosine decay to
    10 % of ``lr``, gradients clipped at norm 1. Returns the metadata written next to the
    weights.
    """
    steps = PRETRAIN_STEPS.get(preset, 1000) if steps is None else steps
    check_positive_int("steps", steps)
    check_positive_int("seq_len", seq_len)
    check_positive_int("warmup", warmup, allow_zero=True)
    # a run shorter than the warmup (a smoke test) warms up over all of it
    optim = OptimSettings(lr=lr, steps=steps, batch_size=batch_size, schedule="cosine",
                          warmup_steps=min(warmup, steps), min_lr_ratio=0.1,
                          clip_grad_norm=1.0)  # fmt: skip
    dev = resolve_device(device)
    model = build_model(preset, seed=seed)
    eval_stream = corpus_tokens(n_docs=4000, seed=EVAL_SEED)
    objective = LanguageModelObjective(
        corpus_tokens(seed=CORPUS_SEED), eval_stream, batch_size=batch_size, seq_len=seq_len,
        seed=seed,
    )  # fmt: skip
    every = max(1, steps // 10)
    result = run_loop(
        model,
        objective,
        optim,
        param_groups=_decay_groups,
        eval_steps=range(every, steps + 1, every),
        seed=seed,
        device=dev,
        progress=progress,
        desc=f"pretrain {preset}",
    )
    model = result.model
    meta = {
        "preset": preset,
        "corpus_seed": CORPUS_SEED,
        "eval_seed": EVAL_SEED,
        "init_seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "lr": lr,
        "final_eval_loss": corpus_eval_loss(model, eval_stream, seq_len=seq_len),
        "eval_history": [(int(r["step"]), round(r["eval_loss"], 4)) for r in result.rows],
        "diverged": result.diverged,
        "wall_time_s": round(result.wall_time_s, 1),
        "lora_lab_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
    save_model(model.cpu(), out or base_path(preset), metadata=meta)
    return meta
