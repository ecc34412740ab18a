"""Notebook 09's finding module (issue 29): the shipped dpo_capacity sweep (complete, every
optimum interior, verdicts that follow their intervals), the information counts, the memory
bookkeeping, the capacity test's logic and the panel."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lora_lab.findings import get_experiment
from lora_lab.findings import preferences as prefs
from lora_lab.sweeps.experiment import results_dir
from lora_lab.sweeps.store import ResultStore


@pytest.fixture(scope="module")
def runs():
    return prefs.load()


def test_the_shipped_sweep_is_complete_and_every_optimum_is_interior(runs):
    done = set(ResultStore(results_dir("dpo_capacity")).scan()[0])
    declared = {s.key for s in get_experiment("dpo_capacity").specs("full")}
    assert declared <= done, f"{len(declared - done)} declared runs have no record"
    best = prefs.optima(runs)
    assert len(best) == 2 * 4 and best.interior.all(), best[~best.interior]
    assert (best.seeds >= 3).all()
    assert not runs.diverged[runs.label == "FullFT"].all()


def test_gap_verdicts_follow_their_intervals(runs):
    gaps = prefs.gap_table(runs)
    assert len(gaps) == 2 * 3
    for g in gaps.itertuples():
        assert g.lo <= g.value <= g.hi and g.margin > 0
        if g.lo > 0:
            assert g.verdict == "LoRA worse"
        elif g.hi < 0:
            assert g.verdict == "LoRA better"
        else:
            assert g.verdict == "not resolved" or g.verdict.startswith("equivalent within")
        assert g.lr_ratio_lo <= g.lr_ratio <= g.lr_ratio_hi
    for facts in prefs.SIZES.values():  # the margin: a tenth of what FullFT learned
        full = runs[(runs.facts == facts) & (runs.label == "FullFT")]
        gain = math.log(2) - full.groupby("lr").final_loss.mean().min()
        assert prefs.margin_for(runs, facts) == pytest.approx(prefs.MARGIN_FRACTION * gain)


def test_the_confirmation_reruns_the_search_optima_on_fresh_seeds(runs):
    """dpo_capacity_confirm's LRs are the search's optima (a stale chosen LR fails here),
    its seeds are fresh, it is complete, and the verdicts read on it follow their intervals."""
    from lora_lab.findings.preferences import DPO_CONFIRM

    best = prefs.optima(runs)
    chosen = {cond: lr for cond, lrs in _confirmed_lrs().items() for lr in lrs}
    for b in best.itertuples():
        assert chosen[(int(b.facts), b.label)] == pytest.approx(b.best_lr, rel=1e-6), b
    specs = DPO_CONFIRM.specs("full")
    assert not {s.seed for s in specs} & set(runs.seed)
    done = set(ResultStore(results_dir(DPO_CONFIRM.name)).scan()[0])
    assert {s.key for s in specs} <= done, "the confirmation sweep is not complete"
    confirm = prefs.load_confirm()
    gaps = prefs.gap_table(runs, confirm)
    assert (gaps.seeds >= 7).all()
    for g in gaps.itertuples():
        assert g.lo <= g.value <= g.hi
        if g.lo > 0:
            assert g.verdict == "LoRA worse"
        elif g.hi < 0:
            assert g.verdict == "LoRA better"


def _confirmed_lrs() -> dict:
    """(facts, label) -> the LRs the confirmation runs, read back from its specs."""
    from lora_lab.findings.preferences import DPO_CONFIRM, condition

    out: dict = {}
    for spec in DPO_CONFIRM.specs("full"):
        out.setdefault(condition(spec), set()).add(spec.lr)
    return out


@pytest.mark.parametrize(
    "inside, beyond, outcome",
    [("equivalent within ±0.01", "LoRA worse", "holds"),
     ("LoRA better", "LoRA worse", "holds"),
     ("equivalent within ±0.01", "equivalent within ±0.02", "not observed"),
     ("LoRA worse", "LoRA worse", "not observed"),
     ("not resolved", "LoRA worse", "not resolved"),
     ("LoRA worse", "LoRA better", "reversed")],
)  # fmt: skip
def test_capacity_test_reads_rank_one_at_both_sizes(inside, beyond, outcome):
    gaps = pd.DataFrame({"facts": [64, 1000], "label": ["r=1", "r=1"],
                         "verdict": [inside, beyond]})  # fmt: skip
    assert prefs.capacity_test(gaps).split(":")[0] == outcome


def test_information_counts():
    info = prefs.information_table().set_index("facts")
    for n in prefs.SIZES.values():
        row = info.loc[n]
        assert row.ranking_bits == pytest.approx(math.log2(math.factorial(n)))
        assert row.label_bits == prefs.PAIRS_PER_FACT * n
        assert row.content_bits == pytest.approx(n * 4 * math.log2(26))
    assert info.loc[64].ranking_over_capacity < 1 < info.loc[1000].ranking_over_capacity


def test_memory_counts_the_reference_and_the_8b_formula():
    table = prefs.memory_table(ranks=(1,), batch_size=4).set_index("label")
    full, r1 = table.loc["FullFT"], table.loc["r=1"]
    assert full.reference == full.weights and r1.reference == 0
    assert full.gradients == full.weights and r1.gradients < full.gradients / 20
    assert full.activations > 0 and r1.activations > 0
    assert full.state_fullft_over == 1 and r1.state_fullft_over > 3
    total, per_rank = prefs.llama_params()
    # PEFT on Llama-3-8B, r = 16 on every linear layer: 41,943,040 of 8,072,204,288
    assert total == 8_030_261_248 and 16 * per_rank == 41_943_040
    formula = prefs.memory_formula().set_index("label")
    assert formula.gb["FullFT"] == pytest.approx(total * 18 / 1e9)
    assert 8 < formula.fullft_over["r=1"] < 10


def test_panel_trains_and_shows_held_out_pairs():
    panel = prefs.PreferencePanel("nano", None, rank=2, lr=3e-3, facts=16, steps=10)
    result = panel.click()
    assert result is not None and len(result.curves) > 1
    assert panel.values() == {"rank": 2, "lr": 3e-3, "facts": 16, "steps": 10}
