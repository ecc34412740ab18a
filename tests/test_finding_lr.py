"""Finding 2 on the shipped results: LoRA's optimal LR, its ratio to FullFT's, rank invariance.

These read ``data/results/lr_rule`` (produced by ``lora-lab sweep lr_rule``) and check the
*direction* of the post's claims with the measured seed intervals. The thresholds come from
the claims (LoRA's LR above FullFT's; ranks 4-64 within 2x), not from the data.
"""

import numpy as np
import pytest

from lora_lab.analysis import load_runs, lr_ratio, optimal_lr
from lora_lab.findings import get_experiment
from lora_lab.sweeps import ResultStore, results_dir, run_spec

EXP = get_experiment("lr_rule")
FOLDER = results_dir("lr_rule")


@pytest.fixture(scope="module")
def runs():
    return load_runs(FOLDER)


def test_shipped_sweep_is_complete_with_provenance():
    records, bad = ResultStore(FOLDER).scan()
    assert not bad
    missing = [s for s in EXP.specs("full") if s.key not in records]
    assert not missing, f"{len(missing)} specs of the full grid have no shipped record"
    for rec in records.values():
        prov = rec["provenance"]
        assert prov["git_commit"] and prov["torch_version"] and prov["lora_lab_version"]
        assert rec["spec"]["seed"] in (0, 1, 2)


def test_every_optimum_is_inside_the_grid(runs):
    opt = optimal_lr(runs, ["label"])
    assert not opt.at_edge.any(), opt


@pytest.mark.parametrize("rank", [4, 16, 64])
def test_lora_optimal_lr_is_above_fullft(runs, rank):
    res = lr_ratio(runs, {"label": f"r={rank}"}, {"label": "FullFT"}, n_boot=300)
    assert res["lo"] > 1.0, res


def test_ranks_4_to_64_share_an_optimum_within_2x(runs):
    opt = optimal_lr(runs, ["label"]).set_index("label").opt_lr
    mid = opt[["r=4", "r=16", "r=64"]]
    assert mid.max() / mid.min() <= 2.0, mid.to_dict()


def test_rank1_optimum_not_above_higher_ranks(runs):
    """The post: rank 1 prefers a somewhat *lower* LR than higher ranks."""
    opt = optimal_lr(runs, ["label"]).set_index("label").opt_lr
    geo = float(np.exp(np.log(opt[["r=4", "r=16", "r=64"]]).mean()))
    assert opt["r=1"] <= 1.25 * geo, (opt["r=1"], geo)


def test_one_shipped_run_reproduces():
    """Re-run the cheapest shipped spec and compare its final loss with the record."""
    records = ResultStore(FOLDER).scan()[0]
    finished = {k: r for k, r in records.items() if not r["result"]["diverged"]}
    key, rec = min(finished.items(), key=lambda kv: kv[1]["result"]["wall_time_s"])
    spec = rec["spec"]
    again = run_spec(spec)
    assert again["key"] == key
    shipped = rec["result"]["final"]["eval_loss"]
    assert again["result"]["final"]["eval_loss"] == pytest.approx(shipped, abs=0.02)


def test_short_runs_want_a_larger_ratio_than_long_runs():
    """The post: runs under ~100 steps want ~15x rather than ~10x. Direction only."""
    from lora_lab.analysis import load_curves, ratio_by_budget

    curves = load_curves(FOLDER)
    final = int(curves.step.max())
    table = ratio_by_budget(
        curves,
        {r: {"label": f"r={r}"} for r in (4, 16, 64)},
        {"label": "FullFT"},
        [56, final],
        n_boot=200,
    )
    mean = table.groupby("steps").ratio.mean()
    assert mean[56] > mean[final], mean.to_dict()
