"""Pretrained base models: where they live, how they are made, how to load them.

Fine-tuning in lora_lab is *post-training*, as in the post: every task starts from a base
that already knows the formats and the language of the synthetic world. Bases are trained
by :func:`pretrain` (``lora-lab pretrain --preset P``) and shipped in ``data/base/``.
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lora_lab.model import CompactLM, build_model, get_preset, load_model, save_model
from lora_lab.tasks.corpus import corpus_tokens

# Steps sized so each base trains in under ~15 minutes on 2 CPU cores (README, "Bases").
PRETRAIN_STEPS = {"nano": 600, "tiny": 1500, "small": 1000, "small-moe": 1000}
CORPUS_SEED, EVAL_SEED = 0, 1


def data_dir() -> Path:
    """The repository's ``data/`` folder (override with ``LORA_LAB_DATA``)."""
    env = os.environ.get("LORA_LAB_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "data"


def base_path(preset: str) -> Path:
    return data_dir() / "base" / f"{preset}.safetensors"


def available_bases() -> list[str]:
    folder = data_dir() / "base"
    return sorted(p.stem for p in folder.glob("*.safetensors")) if folder.exists() else []


def load_base(preset: str, device: str | torch.device = "cpu") -> CompactLM:
    """The shipped pretrained base for ``preset``; a clear error says how to make one."""
    path = base_path(preset)
    if not path.exists():
        get_preset(preset)  # unknown preset names get the list of presets
        raise FileNotFoundError(
            f"no pretrained base for {preset!r} at {path}; "
            f"run `lora-lab pretrain --preset {preset}`"
        )
    return load_model(path, device)


def _windows(stream: torch.Tensor, n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(stream) - length - 1, (n,), generator=gen)
    return torch.stack([stream[s : s + length + 1] for s in starts])  # (n, length + 1)


@torch.no_grad()
def corpus_eval_loss(
    model: CompactLM, stream: torch.Tensor, n_windows: int = 64, seq_len: int = 128
) -> float:
    """Mean next-token NLL (nats/char) on fixed windows of a held-out corpus stream."""
    gen = torch.Generator().manual_seed(1234)
    w = _windows(stream, n_windows, seq_len, gen).to(next(model.parameters()).device)
    was = model.training
    model.eval()
    logits = model(w[:, :-1])
    model.train(was)
    return float(F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten()))


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
    """Train a base for ``preset`` on the corpus and save it (default ``data/base/P``).

    AdamW (0.9, 0.95), weight decay 0.1, linear warmup then cosine decay to 10 % of ``lr``.
    Returns the metadata written next to the weights.
    """
    from tqdm.auto import tqdm

    from lora_lab import __version__
    from lora_lab.training import resolve_device

    steps = steps or PRETRAIN_STEPS.get(preset, 1000)
    if steps <= 0 or batch_size <= 0 or lr <= 0:
        raise ValueError("steps, batch_size and lr must be positive")
    dev = resolve_device(device)
    model = build_model(preset, seed=seed).to(dev)
    if seq_len > model.config.max_seq_len:
        raise ValueError(f"seq_len {seq_len} > max_seq_len {model.config.max_seq_len}")
    train_stream = corpus_tokens(seed=CORPUS_SEED)
    eval_stream = corpus_tokens(n_docs=4000, seed=EVAL_SEED)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=f"pretrain {preset}", disable=not progress)
    history = []
    for step in bar:
        if step < warmup:
            factor = (step + 1) / warmup
        else:
            factor = 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = lr * factor
        batch = _windows(train_stream, batch_size, seq_len, gen).to(dev)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        total = loss + 0.01 * model.aux_loss() if model.config.is_moe else loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % max(1, steps // 10) == 0:
            history.append(
                (step + 1, round(corpus_eval_loss(model, eval_stream, seq_len=seq_len), 4))
            )
    wall = time.perf_counter() - t0
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
        "eval_history": history,
        "wall_time_s": round(wall, 1),
        "lora_lab_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
    save_model(model.cpu(), out or base_path(preset), metadata=meta)
    return meta
