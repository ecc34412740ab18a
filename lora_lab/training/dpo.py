"""Direct preference optimisation (DPO, Rafailov et al. 2023) as an objective of the one loop.

For a prompt x with a chosen completion c and a rejected one r, the policy pi is pulled away
from the reference pi_ref (the starting model) in the direction the pair asks for:

    h(x) = [log pi(c|x) - log pi_ref(c|x)] - [log pi(r|x) - log pi_ref(r|x)]
    loss = -log sigmoid(beta * h)

(log-probabilities summed over the completion's tokens and its EOS). ``beta * h`` is the
*implicit reward margin*: a held-out pair is ranked right when it is > 0. The gradient is
``-beta * sigmoid(-beta*h) * grad h``: pairs the policy already ranks right pull less.

The reference costs what PEFT's does: a LoRA learner's reference is the *same* model with its
adapters switched off (:func:`~lora_lab.lora.disabled_adapters`, no second copy), a FullFT
learner's a frozen copy of the starting weights (what TRL keeps as ``ref_model``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from lora_lab.lora import disabled_adapters, lora_layers
from lora_lab.model import CompactLM
from lora_lab.tasks.base import SFTDataset
from lora_lab.tokenizer import PAD, TOKENIZER
from lora_lab.training.evaluation import evaluating, sampled_accuracy
from lora_lab.training.loop import MicroBatch, Objective, resolve_device, run_loop
from lora_lab.training.methods import FullFT, apply_method, as_method
from lora_lab.training.objectives import EpochShuffle, moe_aux_loss
from lora_lab.training.optim import ADAM_BETAS, MOE_AUX_LOSS_COEF
from lora_lab.training.settings import DPOSettings, EvalSettings, OptimSettings
from lora_lab.training.sft import RunResult, method_config, prepared

DPO_BETA = DPOSettings().beta  # 0.1: TRL's default, and the DPO paper's usual value


@dataclass
class PairTensors:
    """A preference split as one padded batch: rows ``[:n]`` are the chosen sequences, rows
    ``[n:]`` the rejected ones; ``inputs``/``targets``/``mask`` are (2n, L-1) as in
    :meth:`SFTDataset.tensors` (mask 1 on the completion's tokens and its EOS)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor

    @property
    def n_pairs(self) -> int:
        return self.inputs.shape[0] // 2

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pairs ``idx`` as (2k, L') tensors, chosen then rejected, trimmed to the longest."""
        both = torch.cat([idx, idx + self.n_pairs])
        mask = self.mask[both]
        length = int(mask.sum(0).nonzero().max()) + 1
        return self.inputs[both, :length], self.targets[both, :length], mask[:, :length]


def pair_tensors(data: SFTDataset) -> PairTensors:
    """Tokenise a preference split (every example needs ``rejected``)."""
    if not data.is_preference:
        raise ValueError(
            f"{data.name}/{data.split} is not a preference dataset: every example needs a "
            "rejected completion (try the facts_prefs or arith_prefs task)"
        )
    seqs, masks = [], []
    for side in ("completion", "rejected"):
        for ex in data.examples:
            p = TOKENIZER.encode(ex.prompt, bos=True)
            c = TOKENIZER.encode(getattr(ex, side), eos=True)
            seqs.append(p + c)
            masks.append([0] * len(p) + [1] * len(c))
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.float32)
    for i, (s, m) in enumerate(zip(seqs, masks, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.float32)
    return PairTensors(ids[:, :-1].contiguous(), ids[:, 1:].contiguous(), mask[:, 1:])



def _at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    """Reduced-precision logits summed in fp32; fp32 and fp64 kept as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def sequence_logprobs(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """log p(completion | prompt), summed over the masked tokens: (B, T) -> (B,)."""
    logits = _at_least_fp32(model(inputs))
    token = -F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    return (token.view(targets.shape) * mask).sum(1)


def dpo_loss(
    policy: torch.Tensor, reference: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean DPO loss and each pair's implicit reward margin ``beta * h``, from (2k,) sequence
    log-probabilities laid out chosen-then-rejected (as :meth:`PairTensors.rows`)."""
    k = policy.shape[0] // 2
    log_ratio = policy - reference
    margin = beta * (log_ratio[:k] - log_ratio[k:])
    return -F.logsigmoid(margin).mean(), margin


class Reference:
    """What the policy is measured against: the starting model. For a LoRA learner it is the
    learner itself with adapters disabled (nothing copied); for FullFT a frozen copy, made
    before the first step. ``extra_bytes`` is what the reference adds to memory."""

    def __init__(self, model: nn.Module) -> None:
        self.shares_weights = bool(lora_layers(model))
        self.copy: nn.Module | None = None
        if not self.shares_weights:
            self.copy = copy.deepcopy(model).eval()
            for p in self.copy.parameters():
                p.requires_grad_(False)

    @property
    def extra_bytes(self) -> int:
        if self.copy is None:
            return 0
        return sum(p.numel() * p.element_size() for p in self.copy.parameters())

    @torch.no_grad()
    def logprobs(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
        return sequence_logprobs(self.model(model), inputs, targets, mask)

    def model(self, learner: nn.Module) -> nn.Module:
        return learner if self.copy is None else self.copy

    def context(self, learner: nn.Module) -> Any:
        """The block inside which :meth:`model` is the reference (adapters off for LoRA)."""
        return disabled_adapters(learner) if self.shares_weights else nullcontext()


class PreferenceObjective(Objective):
    """DPO on a preference split, for the one training loop.

    Batches are drawn without replacement from a seeded shuffle (as SFT's), so every method
    sees the same pairs for a seed. ``sft_coef`` adds that multiple of the chosen completions'
    mean NLL per token (the "RPO" variant). Evaluations on ``eval_data``: ``eval_loss`` (the
    DPO loss on held-out pairs), ``preference_accuracy`` (share with margin > 0, ties half),
    ``reward_margin`` (mean ``beta * h``), ``kl_bits`` (KL from the reference, token by token
    along the held-out chosen completions, summed per completion, in bits) and, with
    ``accuracy_limit``, ``accuracy``: greedy completions the task's verifier accepts.
    """

    def __init__(
        self,
        data: SFTDataset,
        eval_data: SFTDataset,
        *,
        batch_size: int,
        beta: float = DPO_BETA,
        sft_coef: float = 0.0,
        seed: int = 0,
        eval_limit: int | None = 512,
        accuracy_limit: int = 0,
        aux_loss_coef: float = MOE_AUX_LOSS_COEF,
    ) -> None:
        check_dpo_args(beta, sft_coef)
        self.data, self.eval_data = data, eval_data
        self.pairs, self.eval_pairs = pair_tensors(data), pair_tensors(eval_data)
        self.examples_per_micro_batch = batch_size  # pairs
        self.beta, self.sft_coef = beta, sft_coef
        self.eval_limit, self.accuracy_limit, self.aux_loss_coef = (
            eval_limit, accuracy_limit, aux_loss_coef,
        )  # fmt: skip
        self.batches = EpochShuffle(len(data), seed)
        self.device = torch.device("cpu")
        self.reference: Reference | None = None

    def setup(self, model: nn.Module, device: torch.device) -> None:
        self.device = device
        self.reference = Reference(model)  # before the first step: the starting model

    def _reference_logprobs(self, model: nn.Module, batch: tuple) -> torch.Tensor:
        with self.reference.context(model), evaluating(self.reference.model(model)):
            return self.reference.logprobs(model, *batch)

    def micro_batch(self, model: nn.Module) -> MicroBatch:
        bs = self.examples_per_micro_batch
        idx = self.batches.draw(bs)
        batch = tuple(t.to(self.device) for t in self.pairs.rows(idx))
        reference = self._reference_logprobs(model, batch)
        policy = sequence_logprobs(model, *batch)
        loss, _ = dpo_loss(policy, reference, self.beta)
        value = loss.item()
        if self.sft_coef > 0:
            chosen_mask = batch[2][:bs]
            loss = loss - self.sft_coef * policy[:bs].sum() / chosen_mask.sum().clamp_min(1)
        tokens = int((batch[0] != PAD).sum())
        return MicroBatch(loss=loss + moe_aux_loss(model, self.aux_loss_coef), value=value,
                          tokens=tokens)  # fmt: skip

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        n = self.eval_pairs.n_pairs if self.eval_limit is None else min(
            self.eval_limit, self.eval_pairs.n_pairs
        )  # fmt: skip
        margins, kls = [], []
        with evaluating(model):
            for start in range(0, n, 256):
                idx = torch.arange(start, min(start + 256, n))
                inputs, targets, mask = (t.to(self.device) for t in self.eval_pairs.rows(idx))
                logits = _at_least_fp32(model(inputs)).log_softmax(-1)
                with self.reference.context(model):
                    ref_model = self.reference.model(model)
                    ref_logits = _at_least_fp32(ref_model(inputs)).log_softmax(-1)
                policy = logits.gather(-1, targets[..., None])[..., 0].mul(mask).sum(1)
                reference = ref_logits.gather(-1, targets[..., None])[..., 0].mul(mask).sum(1)
                _, margin = dpo_loss(policy, reference, self.beta)
                margins.append(margin)
                k = len(idx)  # KL(policy || reference) along the chosen completions
                token_kl = (logits[:k].exp() * (logits[:k] - ref_logits[:k])).sum(-1)
                kls.append((token_kl * mask[:k]).sum(1) / math.log(2))
        margin = torch.cat(margins)
        row = {
            "eval_loss": float(-F.logsigmoid(margin).mean()),
            # a tie (margin exactly 0, as at the start) counts as half right
            "preference_accuracy": float(((margin > 0).float() + 0.5 * (margin == 0)).mean()),
            "reward_margin": float(margin.mean()),
            "kl_bits": float(torch.cat(kls).mean()),
        }
        if self.accuracy_limit and self.eval_data.verifier is not None:
            row["accuracy"] = sampled_accuracy(
                model, self.eval_data, limit=self.accuracy_limit, device=self.device,
                max_new_tokens=max(len(ex.completion) for ex in self.eval_data.examples) + 2,
            )  # fmt: skip
        return row


def check_dpo_args(beta: Any, sft_coef: Any) -> DPOSettings:
    """DPO's own settings through the one check every path shares (:class:`DPOSettings`)."""
    return DPOSettings(beta, sft_coef)


def train_dpo(
    model: CompactLM | str,
    data: SFTDataset,
    method: Any = "full",
    *,
    lr: float,
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int = 32,
    beta: float = DPO_BETA,
    sft_coef: float = 0.0,
    grad_accum: int = 1,
    eval_data: SFTDataset | None = None,
    schedule: str = "constant",
    warmup_steps: int = 0,
    betas: tuple[float, float] = ADAM_BETAS,
    weight_decay: float = 0.0,
    evals_per_decade: int = 4,
    eval_limit: int | None = 512,
    accuracy_limit: int = 0,
    aux_loss_coef: float = MOE_AUX_LOSS_COEF,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    keep_model: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    lora_layer: str | None = None,
) -> RunResult:
    """DPO-fine-tune a copy of ``model`` on the preference pairs of ``data`` (``batch_size``
    pairs per micro-batch), FullFT or LoRA as in :func:`~lora_lab.training.train`, whose
    optimiser and evaluation settings these are. ``curves`` and ``final`` hold the
    :class:`PreferenceObjective`'s evaluations; ``train_loss`` is the DPO loss. The keywords
    build the settings objects once (:func:`train_dpo_with` takes them directly)."""
    optim = OptimSettings(lr=lr, steps=steps, epochs=epochs, batch_size=batch_size,
                          grad_accum=grad_accum, schedule=schedule, warmup_steps=warmup_steps,
                          betas=tuple(betas), weight_decay=weight_decay,
                          aux_loss_coef=aux_loss_coef)  # fmt: skip
    return train_dpo_with(
        model, data, method, optim, EvalSettings(evals_per_decade, eval_limit, accuracy_limit),
        DPOSettings(beta, sft_coef), eval_data=eval_data, seed=seed, device=device,
        progress=progress, keep_model=keep_model, callback=callback, lora_layer=lora_layer,
    )  # fmt: skip


def train_dpo_with(
    model: CompactLM | str,
    data: SFTDataset,
    method: Any,
    optim: OptimSettings,
    evaluation: EvalSettings,
    dpo: DPOSettings,
    *,
    eval_data: SFTDataset | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    keep_model: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    lora_layer: str | None = None,
) -> RunResult:
    """:func:`train_dpo` with its settings as objects (what a run spec holds)."""
    method = as_method(method)
    model, eval_data = prepared(model, data, eval_data)
    dev = resolve_device(device)
    given, optim = optim, optim.for_data(len(data))
    objective = PreferenceObjective(
        data, eval_data, batch_size=optim.batch_size, beta=dpo.beta, sft_coef=dpo.sft_coef,
        seed=seed, eval_limit=evaluation.eval_limit, accuracy_limit=evaluation.accuracy_limit,
        aux_loss_coef=optim.aux_loss_coef,
    )  # fmt: skip
    out = run_loop(
        model, objective, optim, prepare=lambda m: apply_method(m, method, lora_layer),
        eval_steps=evaluation.steps(optim.steps), seed=seed, device=dev, progress=progress,
        desc="DPO", callback=callback,
    )  # fmt: skip
    curves = pd.DataFrame(out.rows)
    last = curves.iloc[-1]
    final = {k: float(v) for k, v in last.drop(["step", "examples"]).items() if pd.notna(v)}
    final.setdefault("eval_loss", float("nan"))  # a diverged run has no last evaluation
    final["steps_done"] = float(out.steps_done)
    final["reference_bytes"] = float(objective.reference.extra_bytes)
    is_full = isinstance(method, FullFT)
    config = {
        "objective": "dpo",
        **method_config(method, model, out.model, data, eval_data),
        "reference": "frozen copy" if is_full else "adapters disabled",
        **optim.as_dict(),
        "epochs": given.epochs,
        **dpo.as_dict(),
        **evaluation.as_dict(),
        "seed": seed,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
    }
    return RunResult.from_loop(out, config, curves, final, keep_model)
