import math

import pytest
import torch

from lora_lab import LoraConfig, build_model
from lora_lab.model import PRESETS, load_model, read_model_metadata
from lora_lab.paths import base_path
from lora_lab.tasks import make_facts, make_instruct
from lora_lab.tasks.corpus import corpus_tokens
from lora_lab.training import RunResult, log_spaced_steps, train
from lora_lab.training.pretrain import (
    EVAL_SEED,
    PRETRAIN_STEPS,
    corpus_eval_loss,
    load_base,
    pretrain,
)


@pytest.fixture(scope="module")
def facts():
    return make_facts(n_entities=64, seed=0)


@pytest.fixture(scope="module")
def nano():
    return load_base("nano")


def _run(model, data, method, **kw):
    kw.setdefault("lr", 1e-3)
    kw.setdefault("steps", 40)
    return train(model, data, method, batch_size=16, progress=False, device="cpu", **kw)


@pytest.mark.parametrize("method", ["full", LoraConfig(r=4)])
def test_train_lowers_loss(nano, facts, method):
    lr = 1e-3 if method == "full" else 3e-3
    result = _run(nano, facts.train, method, lr=lr)
    start, end = result.curves.eval_loss.iloc[0], result.final_loss
    assert not result.diverged
    assert end < start - 0.3, (start, end)
    assert result.trainable_params > 0 and result.tokens_per_s > 0


def test_lora_starts_where_the_base_is_and_trains_fewer_params(nano, facts):
    full = _run(nano, facts.train, "full", steps=5)
    lora = _run(nano, facts.train, LoraConfig(r=2), steps=5)
    assert full.curves.eval_loss.iloc[0] == pytest.approx(lora.curves.eval_loss.iloc[0], abs=1e-6)
    assert lora.trainable_params < full.trainable_params / 5


def test_same_seed_same_numbers_other_seed_other_numbers(nano, facts):
    a = _run(nano, facts.train, LoraConfig(r=4), lr=3e-3, steps=20, seed=3)
    b = _run(nano, facts.train, LoraConfig(r=4), lr=3e-3, steps=20, seed=3)
    c = _run(nano, facts.train, LoraConfig(r=4), lr=3e-3, steps=20, seed=4)
    assert a.curves.equals(b.curves)
    assert not a.curves.eval_loss.equals(c.curves.eval_loss)


def test_caller_model_is_untouched(nano, facts):
    before = {k: v.clone() for k, v in nano.state_dict().items()}
    _run(nano, facts.train, "full", steps=3)
    assert all(torch.equal(before[k], v) for k, v in nano.state_dict().items())


def test_divergence_is_caught_and_marked(nano, facts):
    result = _run(nano, facts.train, "full", lr=3.0, steps=60)
    assert result.diverged
    assert int(result.final["steps_done"]) < 60
    assert math.isnan(result.final_loss)


def test_eval_steps_are_log_spaced_and_curves_complete(nano, facts):
    result = _run(nano, facts.train, "full", steps=100, evals_per_decade=4)
    steps = result.curves.step.tolist()
    assert steps[0] == 0 and steps[-1] == 100
    gaps = [b - a for a, b in zip(steps[1:], steps[2:])]
    assert gaps == sorted(gaps)  # spacing grows: evenly spaced in log(step)
    assert log_spaced_steps(1000, 1) == [0, 1, 10, 100, 1000]
    assert 100 in log_spaced_steps(600, 4) and 600 in log_spaced_steps(600, 4)


def test_epochs_grad_accum_schedules_and_accuracy(nano):
    task = make_instruct(n_train=64, n_test=8, ops=("reverse", "upper"))
    result = train(
        nano,
        task.train,
        "full",
        lr=1e-3,
        epochs=1,
        batch_size=8,
        grad_accum=2,
        schedule="cosine",
        warmup_steps=2,
        eval_data=task.test,
        accuracy_limit=8,
        progress=False,
    )
    assert result.config["steps"] == 4
    assert 0.0 <= result.final["accuracy"] <= 1.0


def test_run_result_round_trip(nano, facts):
    result = _run(nano, facts.train, LoraConfig(r=1), steps=4)
    again = RunResult.from_dict(result.to_dict())
    assert again.curves.equals(result.curves) and again.final == result.final


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr": 0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"steps": 0}, "steps"),
        ({"steps": None}, "exactly one"),
        ({"schedule": "wavy"}, "schedule"),
    ],
)
def test_bad_arguments_raise_before_work(nano, facts, kwargs, match):
    args = {"lr": 1e-3, "steps": 5, "batch_size": 4}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train(nano, facts.train, "full", progress=False, **args)


def test_empty_dataset_and_bad_method(nano, facts):
    from lora_lab.tasks.base import SFTDataset

    with pytest.raises(ValueError, match="empty"):
        train(nano, SFTDataset("x", "train", []), "full", lr=1e-3, steps=2, progress=False)
    with pytest.raises(ValueError, match="method"):
        train(nano, facts.train, "lora", lr=1e-3, steps=2, progress=False)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_shipped_base_matches_its_recorded_eval_loss(preset):
    path = base_path(preset)
    assert path.exists(), f"shipped base missing: {path}"
    assert path.stat().st_size < 10 * 2**20
    meta = read_model_metadata(path)
    model = load_model(path)
    assert meta["steps"] == PRETRAIN_STEPS[preset]
    stream = corpus_tokens(n_docs=4000, seed=EVAL_SEED)
    loss = corpus_eval_loss(model, stream, seq_len=meta["seq_len"])
    assert loss == pytest.approx(meta["final_eval_loss"], abs=0.02)
    assert loss < 1.2  # far below a character unigram model (~3 nats): it learned the corpus


def test_pretrain_runs_a_few_steps(tmp_path):
    meta = pretrain("nano", steps=6, batch_size=4, warmup=2, out=tmp_path / "b", progress=False)
    model = load_model(tmp_path / "b")
    assert meta["steps"] == 6 and math.isfinite(meta["final_eval_loss"])
    assert meta["final_eval_loss"] < 4.7  # below uniform over 99 tokens
    assert not torch.equal(model.lm_head.weight, build_model("nano").lm_head.weight)


def test_missing_base_has_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_LAB_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="lora-lab pretrain --preset tiny"):
        load_base("tiny")
    with pytest.raises(ValueError, match="unknown preset"):
        load_base("giant")


def test_moe_runs_record_router_balance_dense_runs_do_not(nano, facts):
    from lora_lab.training.evaluation import load_imbalance, routing_counts

    moe = build_model("small-moe")
    data = make_instruct(n_train=16, n_test=16, seed=0)
    r = train(moe, data.train, LoraConfig(r=2), lr=1e-3, steps=2, batch_size=4, eval_data=data.test,
              eval_limit=8, seed=0)  # fmt: skip
    worst = moe.config.n_experts / moe.config.top_k
    assert r.curves.router_imbalance.between(1.0, worst).all()
    assert r.final["router_imbalance"] == r.curves.router_imbalance.iloc[-1]
    dense = train(nano, facts.train, LoraConfig(r=2), lr=1e-3, steps=2, batch_size=4,
                  eval_data=facts.test, eval_limit=8, seed=0)  # fmt: skip
    assert "router_imbalance" not in dense.curves and "router_imbalance" not in dense.final
    # every routed slot counted: top_k per position the forward sees
    x = data.test.tensors()[0][:4, :10]
    with routing_counts(moe) as counts:
        moe(x)
    assert all(int(c.sum()) == 4 * 10 * moe.config.top_k for c in counts.values())
    balanced = {"a": torch.full((8,), 5.0)}
    skewed = {"a": torch.tensor([10.0, 10.0] + [0.0] * 6)}
    assert load_imbalance(balanced) == pytest.approx(1.0)
    assert load_imbalance(skewed) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="no mixture-of-experts"):
        load_imbalance({})
