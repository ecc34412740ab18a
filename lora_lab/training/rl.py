"""``train_rl``: policy-gradient fine-tuning with a verifier, FullFT and LoRA alike — the RL
counterpart of :func:`lora_lab.training.sft.train` (same loop, same methods, same
:class:`RunResult`), with the objective of :mod:`lora_lab.training.policy_gradient`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from lora_lab.model import CompactLM
from lora_lab.tasks.base import SFTDataset
from lora_lab.training.loop import resolve_device, run_loop
from lora_lab.training.methods import apply_method, as_method
from lora_lab.training.optim import ADAM_BETAS, MOE_AUX_LOSS_COEF
from lora_lab.training.policy_gradient import PolicyGradientObjective
from lora_lab.training.settings import EvalSettings, OptimSettings, RLSettings
from lora_lab.training.sft import RunResult, method_config, prepared


def train_rl(
    model: CompactLM | str,
    data: SFTDataset,
    method: Any = "full",
    *,
    lr: float,
    steps: int,
    eval_data: SFTDataset | None = None,
    prompts_per_step: int = 8,
    grad_accum: int = 1,
    group_size: int = 8,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    kl_coef: float = 0.0,
    schedule: str = "constant",
    warmup_steps: int = 0,
    betas: tuple[float, float] = ADAM_BETAS,
    weight_decay: float = 0.0,
    aux_loss_coef: float = MOE_AUX_LOSS_COEF,
    evals_per_decade: int = 4,
    eval_limit: int = 100,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    keep_model: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    lora_layer: str | None = None,
) -> RunResult:
    """RL-fine-tune a copy of ``model`` on the prompts of ``data`` (a task with a verifier):
    ``steps`` optimizer steps of ``grad_accum`` x ``prompts_per_step`` x ``group_size``
    episodes each. The optimiser settings are :func:`~lora_lab.training.train`'s.

    ``curves`` hold ``train_loss`` = mean reward of the last steps' episodes, ``accuracy``
    (greedy) and ``sampled_accuracy`` on ``eval_data``, ``eval_loss`` = 1 - greedy accuracy,
    and episodes / sampled tokens per second; ``final`` the same at the end. The keywords
    build the settings objects once (:func:`train_rl_with` takes them directly).
    """
    optim = OptimSettings(lr=lr, steps=steps, batch_size=prompts_per_step,
                          grad_accum=grad_accum, schedule=schedule, warmup_steps=warmup_steps,
                          betas=tuple(betas), weight_decay=weight_decay,
                          aux_loss_coef=aux_loss_coef)  # fmt: skip
    rl = RLSettings(group_size, max_new_tokens, temperature, kl_coef)
    return train_rl_with(
        model, data, method, optim, EvalSettings(evals_per_decade, eval_limit), rl,
        eval_data=eval_data, seed=seed, device=device, progress=progress,
        keep_model=keep_model, callback=callback, lora_layer=lora_layer,
    )  # fmt: skip


def train_rl_with(
    model: CompactLM | str,
    data: SFTDataset,
    method: Any,
    optim: OptimSettings,
    evaluation: EvalSettings,
    rl: RLSettings,
    *,
    eval_data: SFTDataset | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    keep_model: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    lora_layer: str | None = None,
) -> RunResult:
    """:func:`train_rl` with its settings as objects (``optim.batch_size`` is the prompts
    per step; an RL run is counted in steps)."""
    if optim.steps is None:
        raise ValueError("an RL run is measured in steps: give steps, not epochs")
    method = as_method(method)
    model, eval_data = prepared(model, data, eval_data)
    dev = resolve_device(device)
    eval_limit = evaluation.eval_limit or len(eval_data)
    objective = PolicyGradientObjective(
        data, eval_data, prompts_per_step=optim.batch_size, group_size=rl.group_size,
        max_new_tokens=rl.max_new_tokens, temperature=rl.temperature, kl_coef=rl.kl_coef,
        eval_limit=eval_limit, aux_loss_coef=optim.aux_loss_coef, seed=seed,
    )  # fmt: skip
    out = run_loop(
        model, objective, optim, prepare=lambda m: apply_method(m, method, lora_layer),
        eval_steps=evaluation.steps(optim.steps), seed=seed, device=dev, progress=progress,
        desc="RL", callback=callback,
    )  # fmt: skip
    curves = pd.DataFrame(out.rows).rename(columns={"train_loss": "mean_reward"})
    curves["train_loss"] = curves["mean_reward"]
    last = curves.iloc[-1]
    # the last evaluation's numbers, the reward of the last steps' episodes, throughput
    final = {k: float(v) for k, v in last.drop(["step", "examples", "mean_reward"]).items()
             if pd.notna(v)}  # fmt: skip
    final.setdefault("eval_loss", float("nan"))  # a diverged run has no last evaluation
    final.update(steps_done=float(out.steps_done), episodes=float(objective.episodes_done),
                 episodes_per_s=objective.episodes_done / max(out.wall_time_s, 1e-9))  # fmt: skip
    config = {
        "objective": "rl",
        **method_config(method, model, out.model, data, eval_data),
        **optim.as_dict(),
        "prompts_per_step": optim.batch_size,
        **rl.as_dict(),
        **evaluation.as_dict(),
        "eval_limit": eval_limit,
        "seed": seed,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
    }
    return RunResult.from_loop(out, config, curves, final, keep_model)
