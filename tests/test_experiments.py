import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest

from lora_lab.analysis import (
    best_over_lr,
    curve_seed_spread,
    departure_step,
    load_curves,
    load_runs,
    lr_ratio,
    optimal_lr,
    optimum_from_curve,
    pointwise_min_curves,
    provenance_summary,
    steps_to_match,
)
from lora_lab.findings import get_experiment
from lora_lab.sweeps import (
    PROVENANCE_FIELDS,
    ResultStore,
    RunSpec,
    grid,
    lr_grid,
    results_dir,
    run_sweep,
    spec_hash,
)
from tests.harness import ROOT, run_notebook

DEMO = get_experiment("demo")


def test_spec_hash_is_stable_across_processes_and_key_order():
    spec = {"lr": 1e-3, "method": "lora", "r": 4, "task_kwargs": {"n": 1, "a": [1, 2]}}
    reordered = {"task_kwargs": {"a": [1, 2], "n": 1}, "r": 4, "method": "lora", "lr": 1e-3}
    assert spec_hash(spec) == spec_hash(reordered)
    assert spec_hash(spec) != spec_hash({**spec, "lr": 2e-3})
    code = (
        "from lora_lab.sweeps.spec import spec_hash;"
        "print(spec_hash({'lr': 1e-3, 'method': 'lora', 'r': 4,"
        " 'task_kwargs': {'n': 1, 'a': [1, 2]}}))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert other.stdout.strip() == spec_hash(spec)


def test_grid_helpers():
    assert len(grid(method="full", lr=[1, 2], seed=[0, 1, 2])) == 6
    assert lr_grid(1e-4, 1e-2, 2) == [1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2]
    exp = get_experiment("demo")
    specs = exp.specs("full")
    assert len({s.key for s in specs}) == len(specs)
    assert all(not s.is_lora for s in specs if s.label == "FullFT")
    with pytest.raises(ValueError, match="unknown experiment"):
        get_experiment("nope")
    with pytest.raises(ValueError, match="grids"):
        exp.specs("huge")


@pytest.mark.slow
def test_resume_after_sigkill_loses_nothing_and_repeats_nothing(tmp_path):
    exp = get_experiment("demo")
    total = len(exp.specs("full"))
    folder = results_dir("demo", "full", tmp_path)
    code = (
        f"from lora_lab.findings import get_experiment;"
        f"from lora_lab.sweeps import run_sweep;"
        f"run_sweep(get_experiment('demo'), 'full', jobs=2, root={str(tmp_path)!r}, progress=False)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    records = "[!.]*.json"  # a record; ".tmp-*.json" are writes in flight (pathlib globs dotfiles)
    while time.time() < deadline and len(list(folder.glob(records))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # parent and workers, mid-sweep
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in folder.glob(records)}
    assert 2 <= len(finished) < total, "kill came too late to test resumption"
    summary = run_sweep(DEMO, "full", jobs=1, root=tmp_path, progress=False)
    assert summary.skipped == len(finished)
    assert summary.ran == total - len(finished) and not summary.failed
    for name, mtime in finished.items():  # finished records untouched
        assert (folder / name).stat().st_mtime_ns == mtime
    assert len(list(folder.glob(records))) == total
    again = run_sweep(DEMO, "full", jobs=1, root=tmp_path, progress=False)
    assert again.ran == 0 and again.skipped == total


def test_truncated_record_is_reported_and_redone(tmp_path):
    first = run_sweep(DEMO, "ci", jobs=1, root=tmp_path, progress=False)
    assert first.ran == 2
    victim = sorted(first.folder.glob("*.json"))[0]
    victim.write_text(victim.read_text()[:100])
    with pytest.warns(UserWarning, match="unreadable"):
        second = run_sweep(DEMO, "ci", jobs=1, root=tmp_path, progress=False)
    assert second.redone_unreadable == [victim.stem]
    assert second.ran == 1 and second.skipped == 1
    json.loads(victim.read_text())  # whole again


def test_records_have_provenance_and_reload(tmp_path):
    summary = run_sweep(DEMO, "ci", jobs=1, root=tmp_path, progress=False)
    records, bad = ResultStore(summary.folder).scan()
    assert not bad and len(records) == 2
    for key, rec in records.items():
        assert key == RunSpec.from_dict(rec["spec"]).key
        prov = rec["provenance"]
        for field in (*PROVENANCE_FIELDS, "wall_time_s"):
            assert field in prov
        assert rec["result"]["final"]["eval_loss"] > 0
    runs = load_runs(summary.folder)
    assert set(runs.label) == {"FullFT", "r=4"}
    prov = provenance_summary(summary.folder)
    assert prov["runs"] == 2 and prov["torch_version"]
    curves = load_curves(summary.folder)
    assert {"step", "eval_loss", "label", "lr"} <= set(curves.columns)


def _synthetic_runs(opt_full=1e-3, opt_lora=1e-2, seeds=(0, 1, 2), noise=0.01):
    rng = np.random.default_rng(0)
    rows = []
    for label, opt in (("FullFT", opt_full), ("r=4", opt_lora)):
        for lr in lr_grid(1e-5, 1e-1, 4):
            for s in seeds:
                loss = 1.0 + 0.3 * (np.log10(lr) - np.log10(opt)) ** 2 + rng.normal(0, noise)
                rows.append(
                    {
                        "label": label,
                        "method": "full" if label == "FullFT" else "lora",
                        "lr": lr,
                        "seed": s,
                        "final_loss": loss,
                    }
                )
    return pd.DataFrame(rows)


def test_optimal_lr_recovers_known_optimum():
    runs = _synthetic_runs(opt_full=2e-4, opt_lora=3e-3)
    opt = optimal_lr(runs, ["label"]).set_index("label")
    assert opt.loc["FullFT", "opt_lr"] == pytest.approx(2e-4, rel=0.2)
    assert opt.loc["r=4", "opt_lr"] == pytest.approx(3e-3, rel=0.2)
    assert not opt.at_edge.any()
    ratio = lr_ratio(runs, {"label": "r=4"}, {"label": "FullFT"})
    assert ratio["lo"] <= ratio["ratio"] <= ratio["hi"]
    assert ratio["ratio"] == pytest.approx(15, rel=0.3)
    assert ratio["lo"] < 5 and ratio["hi"] > 40  # 3 seeds: every near LR could be the best
    more = _synthetic_runs(opt_full=2e-4, opt_lora=3e-3, seeds=range(8), noise=0.003)
    ratio = lr_ratio(more, {"label": "r=4"}, {"label": "FullFT"})
    assert ratio["lo"] < 15 < ratio["hi"] and ratio["lo"] > 5 and ratio["hi"] < 60  # +-1 step each


def test_optimum_at_grid_edge_is_flagged_and_divergence_is_bad():
    lr, loss, edge = optimum_from_curve(np.array([1e-4, 1e-3, 1e-2]), np.array([1.0, 2.0, 3.0]))
    assert edge and lr == 1e-4 and loss == 1.0
    lr, _, edge = optimum_from_curve(np.array([1e-4, 1e-3, 1e-2]), np.array([2.0, 1.0, np.nan]))
    assert lr == 1e-3 and not edge  # a diverged neighbour: keep the grid point


def test_pointwise_min_and_best_over_lr():
    curves = pd.DataFrame(
        {
            "label": ["a"] * 4,
            "lr": [1, 1, 2, 2],
            "step": [1, 2, 1, 2],
            "seed": 0,
            "eval_loss": [3.0, 1.0, 2.0, 1.5],
        }
    )
    best = pointwise_min_curves(curves, ["label"])
    assert best.eval_loss.tolist() == [2.0, 1.0]
    runs = _synthetic_runs()
    b = best_over_lr(runs, ["label"]).set_index("label")
    assert b.loc["FullFT", "lr"] == pytest.approx(1e-3)


@pytest.mark.notebooks
def test_records_round_trip_through_executed_notebook(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = run_notebook(
            ROOT / "tests" / "notebooks" / "records_demo.ipynb", tmp_path, {"preset": "ci", "n": 4}
        )
    assert records == {"preset": "ci", "square": 16, "mean": 1.5, "table": {"a": [1, 2], "b": None}}


def test_contrast_at_each_side_s_best_lr():
    from lora_lab.findings.common import contrast, gap

    runs = _synthetic_runs(opt_full=1e-3, opt_lora=1e-2, noise=0.0)
    runs["diverged"] = False
    runs.loc[runs.label == "r=4", "final_loss"] += 0.2  # LoRA 0.2 nats worse at its best LR
    rng = np.random.default_rng(0)
    runs["final_loss"] += rng.normal(0, 1e-3, len(runs))  # a little seed noise
    e = gap(runs, {"label": "r=4"}, {"label": "FullFT"})
    assert e.value == pytest.approx(0.2, abs=3e-3) and e.lo > 0.15 and e.hi < 0.25
    assert e.n == 3
    v = contrast(runs, {"label": "r=4"}, {"label": "FullFT"}, margin=0.02, subject="LoRA")
    assert v.word == "LoRA worse" and "[" in v.text


def _curves(values: dict[str, list[float]], steps=(1, 10, 30, 100, 300)) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"label": k, "step": s, "eval_loss": v}
            for k, vs in values.items()
            for s, v in zip(steps, vs)
        ]
    )


def test_departure_step_is_where_a_curve_stays_above_the_reference():
    best = _curves(
        {
            "FullFT": [2.0, 1.8, 1.5, 1.2, 1.0],
            "r=1": [2.0, 1.9, 1.7, 1.5, 1.4],  # above from step 10 on
            "r=4": [2.0, 1.75, 1.52, 1.3, 1.2],  # dips under, then leaves at 100
            "r=64": [2.0, 1.8, 1.5, 1.2, 1.01],  # never leaves (within tol)
        }
    )
    assert departure_step(best, "r=1") == 10
    assert departure_step(best, "r=4") == 100
    assert np.isnan(departure_step(best, "r=64"))
    with pytest.raises(ValueError):
        departure_step(best, "r=8")


def test_steps_to_match_interpolates_in_log_step():
    best = _curves({"FullFT": [2.0, 1.8, 1.5, 1.2, 1.0], "r=1": [2.0, 1.9, 1.8, 1.5, 1.35]})
    out = steps_to_match(best, "r=1").set_index("reference_step")
    assert out.loc[10, "steps_needed"] == pytest.approx(30)  # r=1 hits 1.8 at step 30
    assert out.loc[30, "steps_needed"] == pytest.approx(100)
    assert out.loc[30, "step_ratio"] == pytest.approx(100 / 30)
    assert np.isnan(out.loc[100, "steps_needed"])  # 1.2 is never reached
    slow = _curves({"FullFT": [2, 1.8, 1.5, 1.2, 1.0], "r": [2, 2, 2, 1.6, 1.4]})
    mid = steps_to_match(slow, "r")
    # 1.8 is reached between step 30 (2.0) and 100 (1.6), halfway in loss -> geometric mean
    assert mid.set_index("reference_step").loc[10, "steps_needed"] == pytest.approx(math.sqrt(3000))


def test_curve_seed_spread_is_the_median_seed_std():
    rows = [
        {"label": "a", "lr": 1e-3, "step": s, "seed": seed, "eval_loss": 1.0 + seed * d}
        for s, d in ((0, 9.0), (1, 0.1), (2, 0.2), (3, 0.3))
        for seed in (0, 1)
    ]
    spread = curve_seed_spread(pd.DataFrame(rows))
    assert spread == pytest.approx(0.2 / math.sqrt(2))  # step 0 (identical start) left out


@pytest.mark.parametrize(
    "parent, metric",
    [("rl_rank", "error"), ("rl_sft", "error"), ("lr_rule", "final_loss"),
     ("small_data", "final_loss"), ("targeting_instruct", "final_loss")],
)  # fmt: skip
def test_confirmation_sweeps_rerun_the_searched_best_lrs_on_fresh_seeds(parent, metric):
    """Each *_confirm experiment reruns its parent's conditions at the LR the parent's search
    found best (and, for lr_rule, both lattice neighbours), on seeds the parent never used,
    with every other spec field unchanged."""
    from lora_lab.findings import get_experiment
    from lora_lab.sweeps import results_dir

    runs = load_runs(results_dir(parent))
    if metric == "error":
        runs["error"] = 1 - runs.accuracy
    confirm = get_experiment(f"{parent}_confirm")
    specs = confirm.specs("full")
    assert not {s.seed for s in specs} & set(runs.seed)
    means = runs.groupby(["label", "lr"])[metric].mean()
    for label in {s.label for s in specs}:
        lrs = sorted({s.lr for s in specs if s.label == label})
        curve = means[label].sort_index()
        best = float(curve.idxmin())
        assert best in lrs, (label, best, lrs)
        grid = list(curve.index)
        i = grid.index(best)
        assert set(lrs) <= set(grid[max(0, i - 1) : i + 2]), (label, lrs)
    parent_fields = {k for s in get_experiment(parent).specs("full") for k in s.to_dict()}
    for s in specs:
        assert set(s.to_dict()) <= parent_fields
