import math

import numpy as np
import pandas as pd
import pytest

from lora_lab.findings.capacity import (
    capacity_bound,
    capacity_table,
    measured_bits_per_param,
    suggest_rank,
)
from lora_lab.model import get_preset
from lora_lab.tasks import make_facts
from lora_lab.training import load_base, train
from lora_lab.training.bits import answer_code_length_bits, bits_stored, sample_bits_metric


@pytest.fixture(scope="module")
def setup():
    return load_base("nano"), make_facts(n_entities=40, seed=3)


def test_base_has_not_stored_new_facts(setup):
    base, task = setup
    recall = task.extra["recall"]
    code = answer_code_length_bits(base, recall)
    assert code.shape == (40,)
    assert code.mean() > 0.8 * 4 * math.log2(26)  # close to a uniform guess over letters
    assert bits_stored(base, recall)["fraction_stored"] < 0.2


def test_training_stores_bits(setup):
    base, task = setup
    recall = task.extra["recall"]
    tuned = train(base, task.train, "full", lr=1e-3, steps=150, batch_size=16, progress=False).model
    after = bits_stored(tuned, recall)
    assert after["fraction_stored"] > 0.5
    assert after["bits_stored"] <= after["info_bits"]


def test_suggest_rank_grows_with_information():
    cfg = get_preset("tiny")
    small = suggest_rank(cfg, bits=1e3, verbose=False)
    large = suggest_rank(cfg, bits=1e5, verbose=False)
    assert small < large
    assert suggest_rank(cfg, completion_tokens=1e4, verbose=False) >= 1
    with pytest.raises(ValueError):
        suggest_rank(cfg)


def test_sample_bits_metric_matches_exact_count_on_the_same_facts(setup):
    base, task = setup
    recall = task.extra["recall"]
    whole = sample_bits_metric(recall, limit=10_000)(base)
    exact = bits_stored(base, recall)
    assert whole["bits_stored"] == pytest.approx(exact["bits_stored"], rel=1e-6)
    part = sample_bits_metric(recall, limit=10)(base)
    assert 0 <= part["fraction_stored"] <= 1
    with pytest.raises(ValueError):
        sample_bits_metric(task.train.__class__("x", "y", recall.examples), 10)


def test_train_logs_eval_metrics_as_curve_columns(setup):
    base, task = setup
    recall = task.extra["recall"]
    res = train(
        base,
        task.train,
        "full",
        lr=1e-3,
        steps=40,
        batch_size=16,
        progress=False,
        eval_data=recall,
        eval_metrics=sample_bits_metric(recall, 40),
        evals_per_decade=2,
    )
    c = res.curves
    assert {"bits_stored", "fraction_stored"} <= set(c.columns)
    assert not res.diverged
    assert c.bits_stored.iloc[-1] > c.bits_stored.iloc[0]  # training stores facts


def _table_runs():
    """Synthetic capacity runs: r=1 holds 2 bits/param, the rest store everything."""
    rows = []
    for n in (40, 1000):
        info = n * 18.8
        for label, r, params in (("FullFT", np.nan, 10_000), ("r=1", 1, 500), ("r=4", 4, 2000)):
            for lr, penalty in ((1e-3, 0.0), (3e-3, 0.1)):
                for seed in (0, 1):
                    bits = min(info, 2.0 * params) if label == "r=1" else info
                    rows.append(
                        {
                            "task_n_entities": n,
                            "label": label,
                            "r": r,
                            "lr": lr,
                            "seed": seed,
                            "info_bits": info,
                            "trainable_params": params,
                            "bits_stored": bits - 100 * penalty,
                            "final_loss": 1 - bits / info + penalty,
                        }
                    )
    return pd.DataFrame(rows)


def test_capacity_table_picks_best_lr_and_flags_bound_adapters():
    table = capacity_table(_table_runs())
    assert set(table.lr) == {1e-3}
    assert table.lr_at_grid_edge.all()  # 1e-3 is the lowest LR tried
    assert table.set_index(["n_facts", "label"]).loc[(1000, "r=1"), "bits_per_param"] == 2.0
    bound = table[capacity_bound(table)]
    assert list(zip(bound.n_facts, bound.label)) == [(1000, "r=1")]
    assert measured_bits_per_param(table) == 2.0
    assert np.isnan(measured_bits_per_param(table, n_values=[40]))
    with pytest.raises(ValueError, match="measure_bits"):
        capacity_table(_table_runs().drop(columns="bits_stored"))


def test_suggest_rank_reads_a_dataset_and_a_model(capsys):
    base = load_base("nano")
    task = make_facts(n_entities=400, seed=1)
    from_data = suggest_rank(base, task.train, bits_per_param=0.5)
    by_hand = suggest_rank(base.config, bits=task.train.info_bits, bits_per_param=0.5)
    assert from_data == by_hand
    out = capsys.readouterr().out
    assert "suggest r=" in out and "Tinker" in out  # the reasoning, with the tokens rule beside
    assert suggest_rank(base, bits=1e9, ranks=(1, 2), verbose=False) == 2
    suggest_rank(base, bits=1e9, ranks=(1, 2))
    assert "use full fine-tuning" in capsys.readouterr().out
    with pytest.raises(ValueError, match="bits_per_param"):
        suggest_rank(base, task.train, bits_per_param=0)
