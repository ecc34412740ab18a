"""``train_rl``: policy-gradient fine-tuning with a verifier, FullFT and LoRA alike — the RL
counterpart of :func:`lora_lab.training.sft.train` (same loop, same methods, same
:class:`RunResult`), with the objective of :mod:`lora_lab.training.policy_gradient`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from lora_lab.model import CompactLM
from lora_lab.tasks.base import SFTDataset
from lora_lab.training.loop import resolve_device, run_loop
from lora_lab.training.methods import FullFT, apply_method, as_method, method_label
from lora_lab.training.optim import ADAM_BETAS, MOE_AUX_LOSS_COEF
from lora_lab.training.policy_gradient import PolicyGradientObjective, check_rl_args
from lora_lab.training.pretrain import load_base
from lora_lab.training.sft import RunResult, check_train_args, log_spaced_steps, lora_layer_names


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
    and episodes / sampled tokens per second; ``final`` the same at the end.
    """
    method = as_method(method)
    check_train_args(
        lr, steps, None, prompts_per_step, grad_accum, schedule, warmup_steps, betas,
        weight_decay, evals_per_decade, eval_limit, 0, aux_loss_coef,
    )  # fmt: skip
    check_rl_args(group_size, max_new_tokens, temperature, kl_coef, prompts_per_step)
    if isinstance(model, str):
        model = load_base(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a CompactLM or a preset name, got {type(model).__name__}")
    eval_data = eval_data if eval_data is not None else data
    dev = resolve_device(device)
    objective = PolicyGradientObjective(
        data, eval_data, prompts_per_step=prompts_per_step, group_size=group_size,
        max_new_tokens=max_new_tokens, temperature=temperature, kl_coef=kl_coef,
        eval_limit=eval_limit, aux_loss_coef=aux_loss_coef, seed=seed,
    )  # fmt: skip
    out = run_loop(
        model, objective, lr=lr, steps=steps, prepare=lambda m: apply_method(m, method, lora_layer),
        grad_accum=grad_accum, schedule=schedule, warmup_steps=warmup_steps, betas=tuple(betas),
        weight_decay=weight_decay, eval_steps=log_spaced_steps(steps, evals_per_decade),
        seed=seed, device=dev, progress=progress, desc="RL", callback=callback,
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
    is_full = isinstance(method, FullFT)
    config = {
        "objective": "rl", "method": "full" if is_full else "lora",
        "label": method_label(method), "lora": None if is_full else method.to_dict(),
        "lora_layer_class": None if is_full else lora_layer_names(out.model),
        "lora_layer_kind": None if is_full else out.model.lora_layer_kind,
        "model": getattr(getattr(model, "config", None), "name", None),
        "task": data.name, "data_fingerprint": data.fingerprint(),
        "eval_data": f"{eval_data.name}/{eval_data.split}", "lr": lr, "steps": steps,
        "batch_size": prompts_per_step, "prompts_per_step": prompts_per_step,
        "grad_accum": grad_accum, "group_size": group_size,
        "max_new_tokens": max_new_tokens, "temperature": temperature, "kl_coef": kl_coef,
        "schedule": schedule, "warmup_steps": warmup_steps, "betas": list(betas),
        "weight_decay": weight_decay, "aux_loss_coef": aux_loss_coef,
        "evals_per_decade": evals_per_decade, "eval_limit": eval_limit, "seed": seed,
        "device": str(dev), "torch_threads": torch.get_num_threads(),
    }  # fmt: skip
    return RunResult.from_loop(out, config, curves, final, keep_model)
