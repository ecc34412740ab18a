"""The policy-gradient objective (issue 14, part 1): advantages, the direction of one step,
the gradient against finite differences, seeded sampling, and a few steps in the loop."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lora_lab import LoraConfig
from lora_lab.tasks import make_task
from lora_lab.tokenizer import TOKENIZER
from lora_lab.training.loop import run_loop
from lora_lab.training.methods import apply_method, as_method
from lora_lab.training.policy_gradient import (
    Episodes,
    PolicyGradientObjective,
    group_advantages,
    policy_gradient_loss,
    sample_episodes,
    token_logprobs,
)
from lora_lab.training.pretrain import load_base
from lora_lab.training.settings import OptimSettings


@pytest.fixture(scope="module")
def nano():
    return load_base("nano")


@pytest.fixture(scope="module")
def arith():
    return make_task("arith", n_train=64, n_test=16, digits=(1, 2), seed=0)


def _episodes(model, texts, rewards, prompt="Problem: 2+3?\nSolution:"):
    """Hand-made episodes of one prompt: completions ``texts`` with ``rewards``."""
    p = TOKENIZER.encode(prompt, bos=True)
    rows = [p + TOKENIZER.encode(t, eos=True) for t in texts]
    length = max(map(len, rows))
    seq = torch.full((len(rows), length), TOKENIZER.pad_id)
    mask = torch.zeros(len(rows), length - 1)
    for i, r in enumerate(rows):
        seq[i, : len(r)] = torch.tensor(r)
        mask[i, len(p) - 1 : len(r) - 1] = 1
    r = torch.tensor([rewards], dtype=torch.float32)
    with torch.no_grad():
        sampler = token_logprobs(model, seq)
    return Episodes(seq, mask, r.flatten(), group_advantages(r).flatten(), sampler, texts)


def test_advantages_are_zero_mean_per_group():
    rewards = torch.tensor([[1.0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    adv = group_advantages(rewards)
    assert torch.allclose(adv.mean(1), torch.zeros(3))
    assert torch.equal(adv[1], torch.zeros(4))  # all right: nothing to learn
    assert adv[2, 3] == 0.75 and adv[2, 0] == -0.25
    with pytest.raises(ValueError, match="prompts, group_size"):
        group_advantages(torch.ones(4))


@pytest.mark.parametrize("method", ["full", LoraConfig(r=2)])
def test_one_step_raises_the_rewarded_completion(nano, method):
    model = apply_method(nano, as_method(method))
    if isinstance(method, LoraConfig):  # B = 0 makes the first step move B only; give it one
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.01)
    ep = _episodes(model, [" 5. #### 5", " 6. #### 6"], [1.0, 0.0])
    before = (token_logprobs(model, ep.sequences) * ep.mask).sum(1).detach()
    policy_gradient_loss(model, ep).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 1e-3 * p.grad
    after = (token_logprobs(model, ep.sequences) * ep.mask).sum(1).detach()
    assert after[0] > before[0]  # the rewarded completion became more likely
    assert after[1] < before[1]  # the other one less


def test_gradient_matches_finite_differences(nano):
    model = copy.deepcopy(nano).double()
    ep = _episodes(model, [" 5. #### 5", " 7. #### 7", " 5. #### 5"], [1.0, 0.0, 1.0])
    ep.sampler_logprobs = ep.sampler_logprobs.double()
    ep.advantages = ep.advantages.double()
    loss = policy_gradient_loss(model, ep)
    loss.backward()
    gen = torch.Generator().manual_seed(0)
    params = [p for p in model.parameters()]
    direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    analytic = sum(float((p.grad * d).sum()) for p, d in zip(params, direction, strict=True))
    eps = 1e-6

    def shifted(sign):
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p += sign * eps * d
            value = float(policy_gradient_loss(model, ep))
            for p, d in zip(params, direction, strict=True):
                p -= sign * eps * d
        return value

    numeric = (shifted(1) - shifted(-1)) / (2 * eps)
    assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-9)


def test_sampling_is_seeded_and_deterministic(nano, arith):
    examples = arith.train.examples[:2]

    def draw(seed):
        gen = torch.Generator().manual_seed(seed)
        return sample_episodes(nano, examples, arith.train.verifier, group_size=4,
                               max_new_tokens=24, generator=gen)  # fmt: skip

    a, b, c = draw(0), draw(0), draw(1)
    assert torch.equal(a.sequences, b.sequences) and a.texts == b.texts
    assert not torch.equal(a.sequences, c.sequences)
    assert a.sequences.shape[0] == 8 and a.mask.shape == (8, a.sequences.shape[1] - 1)
    assert torch.allclose(a.advantages.view(2, 4).mean(1), torch.zeros(2))
    # the mask covers the sampled completion through its first EOS, never the prompt
    p_len = len(TOKENIZER.encode(examples[0].prompt, bos=True))
    assert a.mask[:4, : p_len - 2].sum() == 0 and (a.mask[:4].sum(1) > 0).all()


def test_the_objective_runs_in_the_one_training_loop(nano, arith):
    obj = PolicyGradientObjective(arith.train, arith.test, prompts_per_step=2, group_size=2,
                                  max_new_tokens=16, eval_limit=4, seed=0)  # fmt: skip
    out = run_loop(nano, obj, OptimSettings(lr=1e-3, steps=2), eval_steps=[0, 2], progress=False,
                   prepare=lambda m: apply_method(m, LoraConfig(r=1)))  # fmt: skip
    assert not out.diverged and out.steps_done == 2
    last = out.rows[-1]
    assert 0 <= last["accuracy"] <= 1 and last["eval_loss"] == 1 - last["accuracy"]
    assert last["episodes"] == 8 and last["sampled_tokens_per_s"] > 0
    with pytest.raises(ValueError, match="no verifier"):
        PolicyGradientObjective(make_task("facts", n_entities=8).train, arith.test)
    with pytest.raises(ValueError, match="group_size must be an integer >= 2"):
        PolicyGradientObjective(arith.train, arith.test, group_size=1)


def test_train_rl_returns_a_run_result_like_sft(nano, arith):
    from lora_lab.training.rl import train_rl

    r = train_rl(nano, arith.train, LoraConfig(r=1), lr=1e-3, steps=2, eval_data=arith.test,
                 prompts_per_step=2, group_size=2, max_new_tokens=16, eval_limit=4,
                 progress=False, seed=0)  # fmt: skip
    assert r.label == "r=1" and r.config["objective"] == "rl" and not r.diverged
    assert {"mean_reward", "accuracy", "sampled_accuracy", "eval_loss"} <= set(r.curves)
    assert r.final["episodes"] == 8 and r.final["episodes_per_s"] > 0
    again = train_rl(nano, arith.train, LoraConfig(r=1), lr=1e-3, steps=2, eval_data=arith.test,
                     prompts_per_step=2, group_size=2, max_new_tokens=16, eval_limit=4,
                     progress=False, seed=0)  # fmt: skip
    assert again.curves.mean_reward.equals(r.curves.mean_reward)  # seeded end to end


def test_advantage_bits_is_the_entropy_of_each_group():
    from lora_lab.training.policy_gradient import advantage_bits

    rewards = torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    h = lambda p: -(p * math.log2(p) + (1 - p) * math.log2(1 - p))  # noqa: E731
    want = [4 * h(0.25), 4.0, 0.0, 0.0]  # a 50/50 group: one bit per episode, the most
    assert advantage_bits(rewards).tolist() == pytest.approx(want)


def test_a_lora_learner_samples_through_a_merged_copy(nano, arith):
    """Same distribution as the learner (to float rounding), plain Linears, learner untouched."""
    from lora_lab.lora import lora_layers
    from lora_lab.training.policy_gradient import sampling_copy

    full = copy.deepcopy(nano)
    assert sampling_copy(full) is full  # FullFT samples with itself
    learner = apply_method(copy.deepcopy(nano), as_method(LoraConfig(r=2)))
    torch.manual_seed(0)
    for layer in lora_layers(learner).values():  # a trained-looking adapter, not B = 0
        torch.nn.init.normal_(layer.lora_B.weight, std=0.05)
    before = {n: p.clone() for n, p in learner.named_parameters()}
    sampler = sampling_copy(learner)
    assert not lora_layers(sampler) and lora_layers(learner)
    ids = torch.tensor([TOKENIZER.encode(arith.test.examples[0].prompt, bos=True)])
    with torch.no_grad():
        assert torch.allclose(sampler(ids), learner(ids), atol=1e-5)
    assert all(torch.equal(p, before[n]) for n, p in learner.named_parameters())


def test_held_out_kl_is_zero_at_the_start_and_positive_after_a_change(nano, arith):
    from lora_lab.training.policy_gradient import sampled_reward_and_kl

    kw = dict(limit=8, max_new_tokens=16, seed=0)
    same = sampled_reward_and_kl(nano, nano, arith.test, **kw)
    assert same["kl_bits"] == 0.0 and 0 <= same["sampled_accuracy"] <= 1
    moved = copy.deepcopy(nano)
    with torch.no_grad():
        moved.lm_head.weight.mul_(1.5)  # a sharper policy: a real KL from the start
    # an unbiased estimate of KL(moved || nano) on 8 samples; 200 samples keep its sign stable
    assert sampled_reward_and_kl(moved, nano, arith.test, **{**kw, "limit": 16})["kl_bits"] > 0


def test_a_step_with_a_non_finite_loss_stops_the_run(nano, arith):
    obj = PolicyGradientObjective(arith.train, arith.test, prompts_per_step=2, group_size=2,
                                  max_new_tokens=8, eval_limit=2, seed=0)  # fmt: skip
    model = copy.deepcopy(nano)
    out = run_loop(model, obj, OptimSettings(lr=1e-3, steps=3), progress=False,
                   prepare=lambda m: _poison(m))  # fmt: skip
    assert out.diverged and out.steps_done == 1 and out.rows[-1]["train_loss"] != 0


def _poison(model):
    """LoRA whose adapter turns non-finite: the policy cannot even sample."""
    model = apply_method(model, as_method(LoraConfig(r=1)))
    from lora_lab.lora import lora_layers

    layer = next(iter(lora_layers(model).values()))
    with torch.no_grad():
        layer.lora_B.weight.fill_(float("nan"))
    return model
