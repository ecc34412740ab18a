"""Warm starts: a shipped base after a short, fixed SFT phase — the usual starting point of RL.

Policy-gradient RL learns only from groups whose samples disagree, so it needs a policy that
already succeeds sometimes. Practice (and the post's Llama runs) starts RL from a model that
was supervised on the task's format first. Here the pretrained ``tiny`` base rarely solves a
held-out ``arith`` problem when sampling at temperature 1, so most groups of 8 would be all
wrong and teach nothing; 100 SFT steps on the train split fix that (notebook 05 measures
both).

A warm start is named like a base (``"tiny-arith"``) and built deterministically from its
recipe (FullFT, fixed seed, one torch thread, CPU). The package ships the build beside the
bases (``data/warm_starts``, with its recipe and held-out loss; ``lora-lab warm-start NAME
--replace-shipped`` remakes it), so notebook 05 and the RL sweeps start without the build
(~25 s on one core); a recipe the shipped file was not built from is built on first use and
cached under the work folder. :func:`resolve_base` loads either kind, so a run spec's
``base`` may name one.
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
from lora_lab.paths import warm_start_path, work_dir
from lora_lab.tasks import make_task
from lora_lab.threads import set_threads
from lora_lab.training.evaluation import evaluate_loss
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


def recipe_hash(recipe: WarmStart) -> str:
    blob = json.dumps(recipe.to_dict(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cache_path(name: str) -> Path:
    """Where the work folder keeps warm start ``name`` built from its current recipe (the
    file name carries the recipe's hash, so an edited recipe never reads an old build)."""
    return work_dir() / "bases" / f"{name}-{recipe_hash(WARM_STARTS[name])}"


def held_out_loss(model: CompactLM, recipe: WarmStart) -> float:
    """Mean NLL per completion token on the recipe task's test split: recorded beside a
    shipped warm start, so a test can check the weights without rebuilding them."""
    return evaluate_loss(model, make_task(recipe.task, **recipe.task_kwargs).test)


def write_warm_start(name: str, model: CompactLM, path: Path) -> dict[str, Any]:
    """Save ``model`` as warm start ``name`` at ``path`` (``.safetensors`` + ``.json`` with
    its recipe and held-out loss). Written beside, then renamed (weights last): two workers
    writing at once both leave whole files, and a reader never sees weights without their
    config."""
    recipe = WARM_STARTS[name]
    meta = {"warm_start": name, "recipe": recipe.to_dict(), "recipe_hash": recipe_hash(recipe),
            "held_out_loss": held_out_loss(model, recipe)}  # fmt: skip
    tmp = path.with_name(f".{path.name}-{os.getpid()}")
    save_model(model, tmp, metadata=meta)
    for ext in (".json", ".safetensors"):
        Path(str(tmp) + ext).replace(str(path) + ext)
    return meta


def shipped_matches(name: str) -> bool:
    """Whether the package ships warm start ``name`` built from its current recipe."""
    path = warm_start_path(name)
    meta_path = path.with_suffix(".json")
    if not (meta_path.exists() and path.with_suffix(".safetensors").exists()):
        return False
    return json.loads(meta_path.read_text()).get("recipe") == WARM_STARTS[name].to_dict()


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
    """The warm start ``name``: the shipped copy when it was built from the current recipe,
    else the work folder's (built on first use and cached; the cache key is the recipe)."""
    if name not in WARM_STARTS:
        raise ValueError(f"unknown warm start {name!r}; known: {sorted(WARM_STARTS)}")
    if shipped_matches(name):
        return load_model(warm_start_path(name))
    path = cache_path(name)
    if path.with_name(path.name + ".safetensors").exists():
        return load_model(path)
    model = build_warm_start(name, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_warm_start(name, model, path)
    return model


def resolve_base(name: str) -> CompactLM:
    """A shipped base (``"tiny"``) or a warm start (``"tiny-arith"``) by name."""
    if name in WARM_STARTS:
        return warm_start_model(name)
    if name not in PRESETS:
        known = f"a preset {sorted(PRESETS)} or a warm start {sorted(WARM_STARTS)}"
        raise ValueError(f"unknown base {name!r}: {known}")
    return load_base(name)
