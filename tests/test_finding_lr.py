"""Finding 2 on the shipped results: LoRA's optimal LR, its ratio to FullFT's, rank invariance.

These read ``data/results/lr_rule`` (``lora-lab sweep lr_rule``, LR searched to 1.47x)
and check what notebook 02 and README state, with the measured seed intervals. A ratio is
called above (or below) 1 only where its whole 95 % interval is; the thresholds come from the
claims (above 1, within 2x), not from the data.
"""

import numpy as np
import pytest

from lora_lab.analysis import load_curves, load_runs, optimal_lr, ratio_by_budget
from lora_lab.findings import get_experiment
from lora_lab.findings.learning_rate import rank_spread, ratio_table
from lora_lab.sweeps import ResultStore, results_dir, run_spec
from lora_lab.sweeps.runner import search_finished

EXP = get_experiment("lr_rule")
FOLDER = results_dir("lr_rule")


@pytest.fixture(scope="module")
def runs():
    return load_runs(FOLDER)


@pytest.fixture(scope="module")
def ratios(runs):
    return ratio_table(runs).set_index("label")


def test_shipped_sweep_is_complete_with_provenance():
    records, bad = ResultStore(FOLDER).scan()
    assert not bad
    missing = [s for s in EXP.specs("full") if s.key not in records]
    assert not missing, f"{len(missing)} specs of the full grid have no shipped record"
    assert search_finished(EXP, "full", records)
    for rec in records.values():
        prov = rec["provenance"]
        assert prov["git_commit"] and prov["torch_version"] and prov["lora_lab_version"]
        assert rec["spec"]["seed"] in (0, 1, 2)


@pytest.mark.parametrize("budget", [100, None])
def test_every_optimum_is_interior_at_both_budgets(runs, budget):
    """The notebook reads optima at 300 steps and at 100: both resolved to 1.47x."""
    if budget is None:
        table = runs
    else:
        curves = load_curves(FOLDER)
        table = curves[curves.step == budget].rename(columns={"eval_loss": "final_loss"})
    opt = optimal_lr(table, ["label"])
    assert opt.interior.all(), opt[~opt.interior]
    assert (opt.resolution <= 1.471).all()


def test_words_follow_the_intervals(ratios):
    """Every 'above' has its whole interval above 1; everything else is not called above."""
    for label, r in ratios.iterrows():
        assert r.lo <= r.ratio <= r.hi, label
        assert (r.verdict == "above") == (r.lo > 1), (label, r)
        assert (r.verdict == "below") == (r.hi < 1), (label, r)


def test_ratio_intervals_carry_both_locations(ratios):
    """What the notebook states: with 3 seeds no ratio is resolved from 1 once each optimum's
    location interval is carried (an earlier version, with percentile bootstraps, called
    r=16 and r=64 "above 1"); the point ratios stay well below the post's ~10x."""
    assert (ratios.verdict == "not resolved").all(), ratios
    assert (ratios.ratio < 4).all(), ratios
    for label, r in ratios.iterrows():  # an interval spans at least the grid step each side
        assert r.lo < r.ratio < r.hi, label


def test_the_confirmation_locates_the_optima_with_8_seeds(runs):
    from lora_lab.findings.learning_rate import LR_RULE_CONFIRM, confirm_locations, load_confirm

    confirm = load_confirm()
    assert confirm is not None and len(confirm) == len(LR_RULE_CONFIRM.specs("full"))
    loc = confirm_locations(runs, confirm).set_index("label")
    assert set(loc.index) == {"FullFT", "r=1", "r=4"} and (loc.seeds == 8).all()
    for label, r in loc.drop(index="FullFT").iterrows():
        assert r.ratio_lo <= r.ratio <= r.ratio_hi, label
        assert r.verdict == ("above" if r.ratio_lo > 1 else "below" if r.ratio_hi < 1
                             else "not resolved"), label  # fmt: skip


def test_rank_invariance_as_the_notebook_states_it(runs):
    """Post: ranks 4..512 within 2x, rank 1 lower. Here, at 1.47x: r=4..64 span a little
    more than 2x (the optimum rises with rank) and rank 1 sits below their geometric mean."""
    opt = optimal_lr(runs, ["label"])
    inv = rank_spread(opt)
    assert inv["spread"] > 2.0, inv
    assert inv["rank1_vs_geomean"] < 1.0, inv
    o = opt.set_index("label").opt_lr
    assert o["r=4"] < o["r=16"] < o["r=64"], o


@pytest.mark.slow
def test_one_shipped_run_reproduces():
    """Re-run the cheapest finished spec of the LR finding's sweeps (a width-scan run of
    about a second) and compare its final loss with the record."""
    records = ResultStore(results_dir("lr_width")).scan()[0]
    finished = {k: r for k, r in records.items() if not r["result"]["diverged"]}
    key, rec = min(finished.items(), key=lambda kv: kv[1]["result"]["wall_time_s"])
    again = run_spec(rec["spec"])
    assert again["key"] == key
    shipped = rec["result"]["final"]["eval_loss"]
    assert again["result"]["final"]["eval_loss"] == pytest.approx(shipped, abs=0.02)


def test_short_runs_want_a_larger_ratio_than_long_runs():
    """The post: runs under ~100 steps want ~15x rather than ~10x. Direction of the point
    ratios at the two budgets the search resolved, for every rank 4..64; with 3 seeds the
    intervals overlap, so the notebook states the direction, not a resolved difference."""
    curves = load_curves(FOLDER)
    final = int(curves.step.max())
    table = ratio_by_budget(
        curves, {r: {"label": f"r={r}"} for r in (4, 16, 64)}, {"label": "FullFT"},
        [100, final],
    )  # fmt: skip
    short = table[table.steps == 100].set_index("condition")
    long_ = table[table.steps == final].set_index("condition")
    assert np.all(short.ratio > long_.ratio), table
    assert np.all(short.lo <= short.ratio) and np.all(short.ratio <= short.hi), table


def test_width_sweep_is_complete_and_every_optimum_interior():
    exp = get_experiment("lr_width")
    records, bad = ResultStore(results_dir("lr_width")).scan()
    assert not bad and search_finished(exp, "full", records)
    opt = optimal_lr(load_runs(results_dir("lr_width")), ["base", "label"])
    assert opt.interior.all(), opt[~opt.interior]
    assert set(opt.base) == {"nano", "tiny", "small"}
