"""Policy-gradient RL with a verifier: the objective the post's finding 5 is about.

Each step draws ``prompts_per_step`` prompts, samples ``group_size`` completions of each with
the current model (KV-cached ``generate``), scores them 1/0 with the task's verifier, and
takes the GRPO-style group-mean advantage ``A = r - mean(r of the prompt's group)`` (no
division by the group's std: a group that is all right or all wrong teaches nothing). The
loss is token-level over the sampled completion tokens:

    loss = - sum_t  rho_t * A  / (number of sampled tokens),   rho_t = p_learner / p_sampler

Sampling here is on-policy: the sampler is the learner at the start of the step (for LoRA,
a merged copy of it), so ``rho = 1`` in value up to float rounding; its gradient is still
the policy gradient ``A * grad log p``, and a sampler that lags the learner
(``sampler_logprobs`` from an older model) plugs into the same formula. An optional KL
penalty to the starting model (``kl_coef``, the k3 estimator) keeps the policy close to it.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from lora_lab.lora import lora_layers, unload
from lora_lab.tasks.base import Example, SFTDataset
from lora_lab.tokenizer import TOKENIZER
from lora_lab.training.evaluation import evaluating, prompt_batches, sampled_accuracy
from lora_lab.training.loop import MicroBatch, Objective
from lora_lab.training.objectives import moe_aux_loss
from lora_lab.training.optim import MOE_AUX_LOSS_COEF
from lora_lab.training.settings import RLSettings


def check_rl_args(group_size: Any, max_new_tokens: Any, temperature: Any, kl_coef: Any,
                  prompts_per_step: Any = 1) -> RLSettings:  # fmt: skip
    """Policy gradient's settings through the one check every path shares
    (:class:`~lora_lab.training.settings.RLSettings`; a temperature of 0 samples greedily:
    every group all right or all wrong, no signal)."""
    if isinstance(prompts_per_step, bool) or not isinstance(prompts_per_step, int) or (
        prompts_per_step < 1
    ):  # fmt: skip
        raise ValueError(f"prompts_per_step must be an integer >= 1, got {prompts_per_step!r}")
    return RLSettings(group_size, max_new_tokens, temperature, kl_coef)


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(prompts, group) rewards -> advantages with zero mean in every group."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (prompts, group_size), got shape {tuple(rewards.shape)}")
    return rewards - rewards.mean(dim=1, keepdim=True)


@dataclass
class Episodes:
    """One step's sampled groups, flattened to rows: ``sequences`` (N, T) prompt + completion
    ids, ``mask`` (N, T-1) 1 on targets that are sampled completion tokens (through the first
    EOS), ``rewards`` and ``advantages`` (N,), ``sampler_logprobs`` (N, T-1) under the model
    that sampled, ``texts`` the decoded completions."""

    sequences: torch.Tensor
    mask: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor
    sampler_logprobs: torch.Tensor
    texts: list[str]

    @property
    def tokens(self) -> int:
        return int(self.mask.sum())


def token_logprobs(model: nn.Module, sequences: torch.Tensor) -> torch.Tensor:
    """log p(token_t+1 | tokens <= t) for every position: (N, T) ids -> (N, T-1)."""
    logits = model(sequences[:, :-1])
    if logits.dtype in (torch.float16, torch.bfloat16):  # reduced precision: sum in fp32
        logits = logits.float()
    return -F.cross_entropy(
        logits.flatten(0, 1), sequences[:, 1:].flatten(), reduction="none"
    ).view(sequences.shape[0], -1)


def _completion_mask(sequences: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """1 on the targets after the prompt, up to and including the first EOS."""
    targets = sequences[:, 1:]
    pos = torch.arange(targets.shape[1], device=sequences.device)
    after_prompt = pos[None, :] >= prompt_len - 1
    is_eos = (targets == TOKENIZER.eos_id) & after_prompt
    # positions after the first EOS: the cumulative count of EOS before them is > 0
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return (after_prompt & (eos_before == 0)).float()


@torch.no_grad()
def sampling_copy(model: nn.Module) -> nn.Module:
    """What samples the episodes: FullFT samples with the learner itself; a LoRA learner is
    copied with its adapters merged into plain Linears — what an inference server does —
    so decoding costs what FullFT's does, and the learner's frozen weights stay untouched.
    The copy's numerics differ from the learner's in the last bits, which the importance
    ratio p_learner / p_sampler accounts for."""
    if not lora_layers(model):
        return model
    with torch.no_grad():
        return unload(copy.deepcopy(model))


@torch.no_grad()
def sample_episodes(
    model: nn.Module,
    examples: list[Example],
    verifier: Callable[[Example, str], bool],
    *,
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Episodes:
    """Sample ``group_size`` completions of each example's prompt, score them, and compute
    the group advantages. Rows of different prompt lengths are right-padded with PAD."""
    device = next(model.parameters()).device
    seqs, masks, rewards, texts = [], [], [], []
    with evaluating(model):
        for ex in examples:
            prompt = torch.tensor([TOKENIZER.encode(ex.prompt, bos=True)], device=device)
            out = model.generate(prompt.expand(group_size, -1), max_new_tokens,
                                 temperature=temperature, eos_id=TOKENIZER.eos_id,
                                 generator=generator)  # fmt: skip
            mask = _completion_mask(out, prompt.shape[1])
            for row, m in zip(out, mask, strict=True):
                n = int(m.sum())
                text = TOKENIZER.decode(row[prompt.shape[1] : prompt.shape[1] + n].tolist())
                texts.append(text)
                rewards.append(float(verifier(ex, text)))
            seqs.append(out)
            masks.append(mask)
        length = max(s.shape[1] for s in seqs)
        sequences = torch.cat([F.pad(s, (0, length - s.shape[1]), value=TOKENIZER.pad_id)
                               for s in seqs])  # fmt: skip
        mask = torch.cat([F.pad(m, (0, length - 1 - m.shape[1])) for m in masks])
        r = torch.tensor(rewards, device=device).view(len(examples), group_size)
        sampler = token_logprobs(model, sequences)
    return Episodes(sequences, mask, r.flatten(), group_advantages(r).flatten(), sampler, texts)


def policy_gradient_loss(
    model: nn.Module, episodes: Episodes, kl_coef: float = 0.0,
    reference: nn.Module | None = None,
) -> torch.Tensor:  # fmt: skip
    """Token-level policy-gradient loss with the importance ratio to the sampler (and the k3
    KL estimate to ``reference`` when ``kl_coef`` > 0), averaged over sampled tokens."""
    logp = token_logprobs(model, episodes.sequences)
    ratio = torch.exp(logp - episodes.sampler_logprobs)
    per_token = -ratio * episodes.advantages[:, None]
    if kl_coef > 0:
        if reference is None:
            raise ValueError("kl_coef > 0 needs the reference model")
        with torch.no_grad():
            ref = token_logprobs(reference, episodes.sequences)
        log_ratio = ref - logp
        per_token = per_token + kl_coef * (torch.exp(log_ratio) - log_ratio - 1)
    return (per_token * episodes.mask).sum() / episodes.mask.sum().clamp_min(1)


@torch.no_grad()
def sampled_reward_and_kl(
    model: nn.Module, reference: nn.Module, data: SFTDataset, *, limit: int,
    max_new_tokens: int, temperature: float = 1.0, seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """One sampled completion per prompt of ``data`` (first ``limit``): the verifier's mean
    reward, and how far the policy has moved from ``reference`` in bits per completion —
    ``E_y~policy[log2 policy(y|x) - log2 reference(y|x)]``, the sequence-level KL estimated
    on those same samples (unbiased; ~0 at the start). Prompts of equal length are one batch.
    """
    device = next(model.parameters()).device
    examples = data.examples[:limit]
    gen = torch.Generator(device=device).manual_seed(seed)
    rewards, kls = [], []
    with evaluating(model), evaluating(reference):
        for length, idx, prompts in prompt_batches(examples, device):
            out = model.generate(prompts, max_new_tokens, temperature=temperature,
                                 eos_id=TOKENIZER.eos_id, generator=gen)  # fmt: skip
            mask = _completion_mask(out, length)
            log_ratio = token_logprobs(model, out) - token_logprobs(reference, out)
            kls += ((log_ratio * mask).sum(1) / math.log(2)).tolist()
            for row, n, i in zip(out, mask.sum(1).long().tolist(), idx, strict=True):
                text = TOKENIZER.decode(row[length : length + n].tolist())
                rewards.append(float(data.verify(examples[i], text)))
    n = max(len(examples), 1)
    return {"sampled_accuracy": sum(rewards) / n, "kl_bits": sum(kls) / n}


def advantage_bits(rewards: torch.Tensor) -> torch.Tensor:
    """(prompts, group) 1/0 rewards -> each group's total entropy of the advantage in bits:
    ``group_size * h(p)``, p the group's success rate, h the binary entropy. What the episodes
    of a group can tell the learner is at most this (0 when the group is all right or all
    wrong) — the post's "about one bit per episode"."""
    p = rewards.float().mean(dim=1)
    h = torch.zeros_like(p)
    mixed = (p > 0) & (p < 1)
    q = p[mixed]
    h[mixed] = -(q * torch.log2(q) + (1 - q) * torch.log2(1 - q))
    return h * rewards.shape[1]


class PolicyGradientObjective(Objective):
    """RL on a task with a verifier (``data.verifier``), for the one training loop.

    ``train_loss`` logs the mean reward of the step's episodes (so higher is better and the
    loop's divergence check is replaced: a run diverges only when the loss is not finite).
    Episodes are sampled by :func:`sampling_copy` of the learner (LoRA merged). Evaluations
    report greedy and sampled accuracy on ``eval_data`` (``eval_loss`` holds one minus the
    greedy accuracy, so "lower is better" holds for every objective), ``kl_bits`` (how far the
    policy has moved from the start, bits per held-out completion), ``signal_bits`` (the
    entropy of every advantage trained on so far: what the signal could carry) and
    ``informative_groups`` (the share of groups not all right or all wrong), and the
    throughput so far in episodes and sampled tokens per second.
    """

    def __init__(
        self,
        data: SFTDataset,
        eval_data: SFTDataset,
        *,
        prompts_per_step: int = 8,
        group_size: int = 8,
        max_new_tokens: int = 48,
        temperature: float = 1.0,
        kl_coef: float = 0.0,
        eval_limit: int = 100,
        aux_loss_coef: float = MOE_AUX_LOSS_COEF,
        seed: int = 0,
    ) -> None:
        if data.verifier is None:
            raise ValueError(f"{data.name} has no verifier: RL needs a reward")
        check_rl_args(group_size, max_new_tokens, temperature, kl_coef, prompts_per_step)
        self.data, self.eval_data = data, eval_data
        self.prompts_per_step, self.group_size = prompts_per_step, group_size
        self.examples_per_micro_batch = prompts_per_step * group_size  # episodes
        self.max_new_tokens, self.temperature, self.kl_coef = max_new_tokens, temperature, kl_coef
        self.eval_limit, self.aux_loss_coef = eval_limit, aux_loss_coef
        self.seed = seed
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.reference: nn.Module | None = None
        self.episodes_done, self.tokens_sampled, self.sampling_s = 0, 0, 0.0
        self.signal_bits, self.informative_groups, self.groups_done = 0.0, 0, 0
        self.last: Episodes | None = None

    def setup(self, model: nn.Module, device: torch.device) -> None:
        self.device = device
        if device.type != "cpu":
            seed = self.generator.initial_seed()
            self.generator = torch.Generator(device=device).manual_seed(seed)
        # the starting policy: the KL penalty's anchor, and what evaluations measure drift from
        self.reference = sampling_copy(copy.deepcopy(model)).eval()
        for p in self.reference.parameters():
            p.requires_grad_(False)

    def micro_batch(self, model: nn.Module) -> MicroBatch:
        examples = self.rng.sample(self.data.examples, self.prompts_per_step)
        t0 = time.perf_counter()
        sampler = sampling_copy(model)
        if not all(bool(torch.isfinite(p).all()) for p in sampler.parameters()):
            # a policy with non-finite weights cannot sample: report a non-finite value so
            # the loop stops the run as diverged (a crash would stall an LR search)
            blank = torch.zeros((), device=self.device, requires_grad=True)
            return MicroBatch(loss=blank, value=math.nan, tokens=0)
        episodes = sample_episodes(
            sampler, examples, self.data.verifier, group_size=self.group_size,
            max_new_tokens=self.max_new_tokens, temperature=self.temperature,
            generator=self.generator,
        )  # fmt: skip
        self.sampling_s += time.perf_counter() - t0
        self.episodes_done += len(episodes.rewards)
        groups = episodes.rewards.view(-1, self.group_size)
        self.signal_bits += float(advantage_bits(groups).sum())
        self.informative_groups += int(((groups.min(1).values) != groups.max(1).values).sum())
        self.groups_done += groups.shape[0]
        self.tokens_sampled += episodes.tokens
        self.last = episodes
        loss = policy_gradient_loss(model, episodes, self.kl_coef, self.reference)
        loss = loss + moe_aux_loss(model, self.aux_loss_coef)  # the learner's forward pass
        # the logged value is the reward; a non-finite loss still stops the run
        value = float(episodes.rewards.mean()) if torch.isfinite(loss) else math.nan
        return MicroBatch(loss=loss, value=value, tokens=episodes.tokens)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        kw = {"limit": self.eval_limit, "max_new_tokens": self.max_new_tokens,
              "device": self.device}  # fmt: skip
        sampler = sampling_copy(model)
        greedy = sampled_accuracy(sampler, self.eval_data, **kw)
        sampled = sampled_reward_and_kl(
            sampler, self.reference, self.eval_data, limit=self.eval_limit,
            max_new_tokens=self.max_new_tokens, temperature=1.0, seed=self.seed + 1,
        )  # fmt: skip
        return {
            "eval_loss": 1.0 - greedy,
            "accuracy": greedy,
            **sampled,
            "episodes": float(self.episodes_done),
            # what the training signal could carry so far (entropy of the advantages), and
            # the share of groups that carried any (not all right or all wrong)
            "signal_bits": self.signal_bits,
            "informative_groups": self.informative_groups / self.groups_done
            if self.groups_done
            else float("nan"),
            "sampled_tokens_per_s": self.tokens_sampled / self.sampling_s
            if self.sampling_s
            else 0.0,
        }

    def diverged(self, start: float, recent: list[float]) -> bool:
        return False  # rewards are bounded; a non-finite loss is still caught by the loop
