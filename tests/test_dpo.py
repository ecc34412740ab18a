"""DPO (issue 29): the loss by hand, its gradient against finite differences, the direction
of one step, the adapter-disabled reference against a frozen copy, the preference tasks'
information, and the spec fields of objective="dpo"."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lora_lab import LoraConfig
from lora_lab.lora import LAYER_KINDS, disabled_adapters, lora_layers
from lora_lab.sweeps.spec import DPO_FIELDS, RunSpec
from lora_lab.sweeps.worker import run_spec
from lora_lab.tasks import make_task
from lora_lab.training.dpo import (
    PreferenceObjective,
    Reference,
    dpo_loss,
    pair_tensors,
    sequence_logprobs,
    train_dpo,
)
from lora_lab.training.methods import apply_method, as_method
from lora_lab.training.pretrain import load_base


@pytest.fixture(scope="module")
def nano():
    return load_base("nano")


@pytest.fixture(scope="module")
def prefs():
    return make_task("facts_prefs", n_entities=12, pairs_per_fact=2, seed=0)


def test_dpo_loss_by_hand():
    # chosen then rejected: policy and reference sequence log-probabilities
    policy = torch.tensor([-3.0, -5.0, -4.0, -2.0])
    reference = torch.tensor([-4.0, -5.0, -4.0, -1.0])
    loss, margin = dpo_loss(policy, reference, beta=0.5)
    # pair 0: h = (-3 + 4) - (-4 + 4) = 1; pair 1: h = (0) - (-2 + 1) = 1
    assert torch.allclose(margin, torch.tensor([0.5, 0.5]))
    assert math.isclose(float(loss), math.log1p(math.exp(-0.5)), rel_tol=1e-6)
    # at the start (policy = reference) every pair sits at log 2
    loss0, margin0 = dpo_loss(reference, reference, beta=0.1)
    assert math.isclose(float(loss0), math.log(2), rel_tol=1e-6) and not margin0.any()


def test_gradient_matches_finite_differences(nano, prefs):
    model = copy.deepcopy(nano).double()
    ref = copy.deepcopy(model)
    pairs = pair_tensors(prefs.train)
    batch = pairs.rows(torch.arange(4))
    with torch.no_grad():  # move the policy off the reference so the loss is not flat
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        reference = sequence_logprobs(ref, *batch)

    def loss_of() -> torch.Tensor:
        return dpo_loss(sequence_logprobs(model, *batch), reference, beta=0.3)[0]

    loss_of().backward()
    weight = model.layers[0].self_attn.q_proj.weight
    eps = 1e-6
    for i, j in [(0, 0), (3, 5), (7, 2)]:
        with torch.no_grad():
            weight[i, j] += eps
            up = float(loss_of())
            weight[i, j] -= 2 * eps
            down = float(loss_of())
            weight[i, j] += eps
        numeric = (up - down) / (2 * eps)
        assert math.isclose(float(weight.grad[i, j]), numeric, rel_tol=1e-5, abs_tol=1e-9)


@pytest.mark.parametrize("method", ["full", LoraConfig(r=2, target_modules="all")],
                         ids=["FullFT", "LoRA"])  # fmt: skip
def test_one_step_raises_the_chosen_log_ratio_over_the_rejected(nano, prefs, method):
    objective = PreferenceObjective(prefs.train, prefs.test, batch_size=8, seed=0)
    model = apply_method(nano, as_method(method))
    objective.setup(model, torch.device("cpu"))
    idx = torch.arange(8)
    batch = objective.pairs.rows(idx)

    def margin() -> float:
        with torch.no_grad():
            reference = objective._reference_logprobs(model, batch)
            return float(dpo_loss(sequence_logprobs(model, *batch), reference, 0.1)[1].mean())

    assert margin() == 0.0  # the policy starts at the reference
    objective.batches.order = idx  # the step's batch is the pairs measured
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5 if method == "full" else 5.0)
    objective.micro_batch(model).loss.backward()
    opt.step()
    assert margin() > 0


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_adapter_disabled_reference_equals_a_frozen_copy(nano, prefs, kind):
    frozen = copy.deepcopy(nano)
    model = apply_method(nano, LoraConfig(r=4, target_modules="all"), kind)
    with torch.no_grad():  # a trained adapter: B no longer zero
        for layer in lora_layers(model).values():
            layer.lora_B.weight.normal_(0, 0.05)
    batch = pair_tensors(prefs.train).rows(torch.arange(6))
    with torch.no_grad():
        expected = sequence_logprobs(frozen, *batch)
        adapted = sequence_logprobs(model, *batch)
        with disabled_adapters(model):
            disabled = sequence_logprobs(model, *batch)
        after = sequence_logprobs(model, *batch)
    assert (adapted - expected).abs().max() > 1e-3  # the adapters do change the model
    torch.testing.assert_close(disabled, expected, rtol=0, atol=1e-5)
    assert torch.equal(after, adapted)  # switched back on after the block
    reference = Reference(model)
    assert reference.shares_weights and reference.extra_bytes == 0


def test_fullft_reference_is_a_frozen_copy_of_the_start(nano):
    model = apply_method(nano, as_method("full"))
    reference = Reference(model)
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert reference.extra_bytes == n_bytes
    assert not any(p.requires_grad for p in reference.copy.parameters())
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert not torch.equal(next(model.parameters()), next(reference.copy.parameters()))


def test_merged_adapters_cannot_be_disabled(nano):
    model = apply_method(nano, LoraConfig(r=1))
    next(iter(lora_layers(model).values())).merge()
    with pytest.raises(ValueError, match="unmerge"), disabled_adapters(model):
        pass


def test_facts_prefs_information_and_held_out_pairs():
    task = make_task("facts_prefs", n_entities=20, pairs_per_fact=3, seed=1)
    train, test = task.train, task.test
    assert len(train) == 60 and len(test) == 20 and train.is_preference
    assert all(ex.rejected != ex.completion for ex in train.examples + test.examples)
    trained = {(ex.prompt, ex.rejected) for ex in train.examples}
    assert not any((ex.prompt, ex.rejected) in trained for ex in test.examples)
    codes = {ex.completion for ex in test.examples}
    assert all(ex.rejected in codes for ex in train.examples)  # another entity's own code
    notes = train.notes
    assert math.isclose(notes["ranking_bits"], math.log2(math.factorial(20)))
    assert notes["label_bits"] == 60 and math.isclose(notes["content_bits"], 20 * 4 * math.log2(26))
    assert task.extra["rephrased"][0].prompt != test[0].prompt
    assert train.verify(test[0], test[0].completion) and not train.verify(test[0], test[0].rejected)
    with pytest.raises(ValueError, match="pairs_per_fact"):
        make_task("facts_prefs", n_entities=3, pairs_per_fact=3)


def test_arith_prefs_differs_only_in_the_final_answer():
    task = make_task("arith_prefs", n_train=30, n_test=5, seed=0)
    for ex in task.train.examples:
        head, _, wrong = ex.rejected.rpartition("#### ")
        assert ex.completion.startswith(head) and 1 <= abs(int(wrong) - int(ex.answer)) <= 10
        assert task.train.verify(ex, ex.completion) and not task.train.verify(ex, ex.rejected)


def test_a_dpo_run_learns_its_pairs_and_reports_its_metrics(nano, prefs):
    result = train_dpo(
        nano, prefs.train, LoraConfig(r=4), lr=3e-3, steps=30, batch_size=8,
        eval_data=prefs.train, accuracy_limit=4, progress=False, device="cpu",
    )  # fmt: skip
    first, last = result.curves.iloc[0], result.curves.iloc[-1]
    assert first.eval_loss == pytest.approx(math.log(2)) and first.preference_accuracy == 0.5
    assert last.eval_loss < 0.6 and last.preference_accuracy > 0.6 and last.kl_bits > 0
    assert {"accuracy", "reward_margin"} <= set(result.final)
    assert result.final["reference_bytes"] == 0
    assert result.config["reference"] == "adapters disabled"
    with pytest.raises(ValueError, match="not a preference dataset"):
        train_dpo(nano, make_task("facts", n_entities=4).train, lr=1e-3, steps=1, progress=False)
    with pytest.raises(ValueError, match="dpo_beta must be a positive"):
        train_dpo(nano, prefs.train, lr=1e-3, steps=1, beta=0, progress=False)


EVERY_DPO_FIELD = {
    "base": "nano", "task": "facts_prefs", "task_kwargs": {"n_entities": 6},
    "eval_split": "rephrased", "method": "lora", "r": 2, "target_modules": "mlp",
    "lr": 2e-3, "steps": 2, "batch_size": 3, "grad_accum": 2, "warmup_steps": 1,
    "eval_limit": 4, "accuracy_limit": 2, "objective": "dpo", "dpo_beta": 0.25,
    "sft_coef": 0.5, "seed": 1,
}  # fmt: skip


def test_a_dpo_spec_reaches_the_trainer():
    spec = RunSpec.from_dict(EVERY_DPO_FIELD)
    rec = run_spec(spec)
    config = rec["result"]["config"]
    for name in ("lr", "steps", "batch_size", "grad_accum", "warmup_steps", "eval_limit",
                 "accuracy_limit", "dpo_beta", "sft_coef", "seed"):  # fmt: skip
        assert config[name] == EVERY_DPO_FIELD[name], name
    assert config["objective"] == "dpo" and config["eval_data"] == "facts_prefs/rephrased"
    assert config["lora"]["r"] == 2 and rec["key"] == spec.key
    assert set(DPO_FIELDS) <= set(rec["spec"])


@pytest.mark.parametrize(
    "change, match",
    [
        ({"task": "facts", "eval_split": "test"}, "needs a preference task"),
        ({"objective": "sft"}, "apply to objective='dpo' only"),
        ({"objective": "rl"}, "apply to objective='dpo' only"),
        ({"dpo_beta": 0.0}, "dpo_beta must be a positive"),
        ({"sft_coef": -1.0}, "sft_coef must be a non-negative"),
        ({"measure_bits": True}, "measure_bits"),
        ({"group_size": 4}, "apply to objective='rl' only"),
    ],
)
def test_dpo_spec_fields_are_checked(change, match):
    with pytest.raises(ValueError, match=match):
        RunSpec.from_dict({**EVERY_DPO_FIELD, **change})


def test_sft_and_rl_specs_do_not_store_dpo_fields():
    spec = RunSpec.from_dict({"base": "nano", "task": "facts", "lr": 1e-3, "steps": 5})
    assert not set(DPO_FIELDS) & set(spec.to_dict())
