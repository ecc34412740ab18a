"""Warm starts: a shipped base after a short, fixed SFT phase — the usual starting point of RL.

Policy-gradient RL learns only from groups whose samples disagree, so it needs a policy that
already succeeds sometimes. Practice (and the post's Llama runs) starts RL from a model that
was supervised on the task's format first. Here the pretrained ``tiny`` base rarely solves a
held-out ``arith`` problem when sampling at temperature 1, so most groups of 8 would be all
wrong and teach nothing; 100 SFT steps on the train split fix that (notebook 05 measures
both).

A warm start is named like a base (``"tiny-arith"``) and built on first use, deterministically
(FullFT, fixed seed, one torch thread), then cached under the work folder with its recipe;
:func:`resolve_base` loads either kind, so a run spec's ``base`` may name one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lora_lab.model import PRESETS, CompactLM, load_model, save_model
from lora_lab.paths import work_dir
from lora_lab.tasks import make_task
from lora_lab.threads import set_threads
from lora_lab.training.pretrain import load_base
from lora_lab.training.sft import train


@dataclass(frozen=True)
class WarmStart:
    """``base`` fine-tuned (FullFT, constant LR) for ``steps`` steps of ``batch_size`` examples
    of ``task``'s train split."""

    base: str
    task: str
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


# The arith problems RL trains on: 1-2 digit operands, every example within the context.
ARITH_RL_KWARGS: dict[str, Any] = {"n_train": 2000, "n_test": 200, "digits": [1, 2], "max_len": 128}

WARM_STARTS: dict[str, WarmStart] = {
    "tiny-arith": WarmStart("tiny", "arith", ARITH_RL_KWARGS, steps=100, lr=1e-3),
}


def _cache_path(name: str, recipe: WarmStart) -> Path:
    blob = json.dumps(recipe.to_dict(), sort_keys=True).encode()
    return work_dir() / "bases" / f"{name}-{hashlib.sha256(blob).hexdigest()[:12]}"


def build_warm_start(name: str, progress: bool = False) -> CompactLM:
    """Run ``name``'s recipe (one thread, CPU, so every machine builds the same weights)."""
    recipe = WARM_STARTS[name]
    task = make_task(recipe.task, **recipe.task_kwargs)
    threads = torch.get_num_threads()
    set_threads(1)
    try:
        result = train(
            load_base(recipe.base), task.train, "full", lr=recipe.lr, steps=recipe.steps,
            batch_size=recipe.batch_size, eval_data=task.test, evals_per_decade=1,
            seed=recipe.seed, device="cpu", progress=progress,
        )  # fmt: skip
    finally:
        set_threads(threads)
    model = result.model
    return model


def warm_start_model(name: str, progress: bool = False) -> CompactLM:
    """The warm start ``name``, built on first use and cached (the cache key is the recipe)."""
    if name not in WARM_STARTS:
        raise ValueError(f"unknown warm start {name!r}; known: {sorted(WARM_STARTS)}")
    recipe = WARM_STARTS[name]
    path = _cache_path(name, recipe)
    weights = path.with_name(path.name + ".safetensors")
    if weights.exists():
        return load_model(path)
    model = build_warm_start(name, progress=progress)
    # written beside, then renamed (weights last): two workers building at once both leave
    # whole files, and a reader never sees weights without their config
    tmp = path.with_name(f".{path.name}-{os.getpid()}")
    save_model(model, tmp, metadata={"warm_start": name, "recipe": recipe.to_dict()})
    for ext in (".json", ".safetensors"):
        Path(str(tmp) + ext).replace(str(path) + ext)
    return model


def resolve_base(name: str) -> CompactLM:
    """A shipped base (``"tiny"``) or a warm start (``"tiny-arith"``) by name."""
    if name in WARM_STARTS:
        return warm_start_model(name)
    if name not in PRESETS:
        known = f"a preset {sorted(PRESETS)} or a warm start {sorted(WARM_STARTS)}"
        raise ValueError(f"unknown base {name!r}: {known}")
    return load_base(name)
