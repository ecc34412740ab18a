"""Analysing a user's own runs: every importer on a fixture written for it, the round trip
through lora_lab's own records (notebook 02's table, exactly), and every bad input refused
with a message that says what to do, before anything is written."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from lora_lab.cli import main
from lora_lab.own_runs import RunTableError, analyze, read_runs, tidy, write_report
from lora_lab.own_runs.examples import no_robots_path, planted_sweep
from lora_lab.sweeps.lr_search import LRSearch
from tests.harness import ROOT

FIX = ROOT / "tests" / "fixtures" / "own_runs"
PATTERN = r"(?P<method>full|lora)(_r\d+)?_lr(?P<lr>[^_]+)_s(?P<seed>\d+)"
MAP = {"method": "Method", "rank": "lora_r", "lr": "learning_rate", "seed": "run_seed"}


def _planted_checks(a):
    """The fixtures plant FullFT's optimum at 1e-3 and LoRA r=8's at 3.16e-3."""
    opt = a.optima.set_index("label")
    assert list(opt.index) == ["FullFT", "r=8"]
    assert opt.interior.all()
    assert opt.opt_lr["FullFT"] == pytest.approx(1e-3, rel=0.25)
    assert opt.opt_lr["r=8"] == pytest.approx(3.16e-3, rel=0.25)
    ratio = a.ratios.set_index("label").loc["r=8"]
    assert ratio.lo <= 3.16 <= ratio.hi


# ----------------------------------------------------------------------------- importers


def test_csv_with_mapped_column_names():
    t = read_runs(FIX / "sweep.csv", mapping=MAP, metric="eval_loss")
    assert len(t.runs) == 30 and t.runs.seed.nunique() == 3
    assert t.runs.method.isin(["full", "lora"]).all()
    _planted_checks(analyze(t))


def test_jsonl_reads_the_same_table_as_csv():
    a = read_runs(FIX / "sweep.csv", mapping=MAP).runs
    b = read_runs(FIX / "sweep.jsonl", mapping=MAP).runs
    pd.testing.assert_frame_equal(a, b)


def test_wandb_export_keeps_finished_runs_and_says_what_it_left_out():
    t = read_runs(FIX / "wandb_export.csv", fmt="wandb", metric="eval/loss",
                  mapping={"rank": "lora_r", "lr": "learning_rate"})  # fmt: skip
    assert len(t.runs) == 28
    assert any("1 crashed" in n and "1 running" in n for n in t.notes)


def test_wandb_api_export_with_dict_valued_config_and_summary(tmp_path):
    grid = [(m, lr, s) for m in ("full", "lora") for lr in (1e-4, 1e-3, 1e-2) for s in (0, 1, 2)]
    rows = [{"name": f"r{i}", "state": "finished",
             "config": json.dumps({"learning_rate": lr, "method": m, "seed": s}),
             "summary": json.dumps({"eval_loss": 1.0 + (np.log10(lr) + 3) ** 2 + 0.01 * s})}
            for i, (m, lr, s) in enumerate(grid)]  # fmt: skip
    path = tmp_path / "api.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    t = read_runs(path, fmt="wandb", mapping={"lr": "learning_rate"})
    assert len(t.runs) == 18 and t.metric == "eval_loss"


def test_trainer_folders_with_peft_adapter_configs_and_a_pattern():
    t = read_runs(FIX / "trainer", pattern=PATTERN)
    runs = t.runs
    assert len(runs) == 12 and runs.seed.nunique() == 2
    lora = runs[runs.method == "lora"]
    assert (lora["rank"] == 8).all() and (lora.alpha == 16).all()
    assert (lora.target_modules == "q_proj,v_proj").all()  # from adapter_config.json
    assert t.curves is not None and sorted(t.curves.step.unique()) == [10, 20, 30]
    # the final value is the last logged eval_loss (one run only kept its checkpoint)
    state = json.loads((FIX / "trainer" / "full_lr0.000681_s0" / "checkpoint-30" /
                        "trainer_state.json").read_text())  # fmt: skip
    last = [h["eval_loss"] for h in state["log_history"] if "eval_loss" in h][-1]
    row = runs[(runs.method == "full") & (runs.lr == 6.81e-4) & (runs.seed == 0)]
    assert row.value.iloc[0] == last
    a = analyze(t)
    assert a.curves is not None and set(a.curves.label) == {"FullFT", "r=8"}


def test_lora_lab_records_round_trip_reproduce_notebook_02s_tables(tmp_path):
    """Export lr_rule, read it back, analyse: the best-LR and ratio tables equal notebook
    02's, number for number."""
    from lora_lab.analysis import load_runs, optimal_lr
    from lora_lab.findings.common import best_lrs
    from lora_lab.findings.learning_rate import ratio_table
    from lora_lab.sweeps.experiment import results_dir

    folder = results_dir("lr_rule")
    read_runs(folder).to_csv(tmp_path / "lr_rule.csv")
    back = analyze(tmp_path / "lr_rule.csv", metric="eval_loss")
    runs = load_runs(folder)
    nb = best_lrs(runs, ["label"]).merge(
        optimal_lr(runs, ["label"])[["label", "at_edge", "best_loss", "resolution"]], on="label"
    ).set_index("label")
    mine = back.optima.set_index("label").rename(columns={"best_value": "best_loss"})
    cols = ["opt_lr", "lr_lo", "lr_hi", "location_steps", "best_lr", "best_loss", "interior",
            "at_edge", "resolution"]  # fmt: skip
    pd.testing.assert_frame_equal(mine.loc[nb.index, cols].astype(float),
                                  nb[cols].astype(float))  # fmt: skip
    ratios = ratio_table(runs).set_index("label")
    got = back.ratios.set_index("label").loc[ratios.index]
    pd.testing.assert_frame_equal(got[["ratio", "lo", "hi"]], ratios[["ratio", "lo", "hi"]])
    words = {"above": "above 1", "below": "below 1", "not resolved": "not resolved from 1"}
    assert [v.split(" (")[0] for v in got.verdict] == [words[v] for v in ratios.verdict]
    # and reading the records folder directly gives the same tables
    direct = analyze(folder)
    pd.testing.assert_frame_equal(direct.optima, back.optima)


# ----------------------------------------------------------------------------- analysis


def test_one_seed_one_lr_says_what_cannot_be_told():
    a = analyze(no_robots_path(), metric="nll")
    assert a.optima.status.str.startswith("cannot locate an optimum").all()
    assert a.optima.status.str.contains("run these LRs next: ").all()
    assert (a.gaps.verdict == "not resolved").all()
    assert any("one seed" in n for n in a.notes)
    fullft = a.next_runs[a.next_runs.label == "FullFT"]
    # the search's start: 2.15x either side of the one LR, at 3 seeds; 2 more seeds at it
    assert sorted(fullft.lr) == pytest.approx([1e-5, 2.5e-5, 4.64e-5])


def test_edge_optimum_is_a_bound_and_the_search_proposes_past_it():
    df, truth = planted_sweep()
    a = analyze(tidy(df, mapping={"rank": "lora_r", "lr": "learning_rate", "seed": "run_seed"}))
    r8 = a.optima.set_index("label").loc["r=8"]
    assert r8.edge == "high" and "a bound, not an optimum" in r8.status
    nxt = a.next_runs[a.next_runs.label == "r=8"]
    assert list(nxt.lr) == [4.64e-3]  # two lattice steps past the edge, as LRSearch extends
    assert "a bound" in a.ratios.set_index("label").verdict["r=8"]
    assert truth["r=8"] > r8.best_lr


def test_next_lrs_match_the_search_on_lattice_sweeps():
    s = LRSearch()
    assert s.next_lrs({1e-3: 1.0}) == [4.64e-4, 2.15e-3]
    assert s.next_lrs({1e-3: 1.0, 2.15e-3: 0.9, 4.64e-3: 1.2}) == [1.47e-3, 3.16e-3]
    assert s.next_lrs({1e-3: 1.0, 1.47e-3: 0.95, 2.15e-3: 0.9, 3.16e-3: 0.93}) == []


def test_higher_is_better_metrics_pick_the_highest(tmp_path):
    df, _ = planted_sweep()
    df["accuracy"] = 3 - df.eval_loss
    t = tidy(df.drop(columns="eval_loss"), "accuracy", higher_is_better=True,
             mapping={"rank": "lora_r", "lr": "learning_rate", "seed": "run_seed"})  # fmt: skip
    a = analyze(t)
    base = analyze(tidy(df, "eval_loss",
                        mapping={"rank": "lora_r", "lr": "learning_rate", "seed": "run_seed"}))
    assert list(a.optima.best_lr) == list(base.optima.best_lr)
    assert a.gaps.verdict.iloc[0] == "r=8 worse"  # lower accuracy is worse


def test_margin_gives_equivalence_and_seeds_needed():
    t = read_runs(FIX / "sweep.csv", mapping=MAP)
    wide = analyze(t, margin=1.0)
    assert wide.gaps.verdict.iloc[0].startswith(("equivalent", "r=8"))
    # the same U-curve for both methods under noise: the gap is not resolved within a margin
    # below the seed spread, and the next runs are fresh seeds at both best LRs
    rng = np.random.default_rng(0)
    lrs = [4.64e-4, 6.81e-4, 1e-3, 1.47e-3, 2.15e-3]
    same = pd.DataFrame([{"method": m, "rank": 8 if m == "lora" else None, "lr": lr, "seed": s,
                          "loss": 1 + 0.3 * np.log10(lr / 1e-3) ** 2 + rng.normal(0, 0.02)}
                         for m in ("full", "lora") for lr in lrs for s in (0, 1, 2)])  # fmt: skip
    tight = analyze(tidy(same), margin=0.005)
    assert tight.gaps.verdict.iloc[0] == "not resolved"
    seeds = tight.next_runs[tight.next_runs.why.str.contains("seeds would resolve")]
    assert set(seeds.label) == {"FullFT", "r=8"} and (seeds.runs > 0).all()
    with pytest.raises(RunTableError, match="margin"):
        analyze(t, margin=-1)
    with pytest.raises(RunTableError, match="reference 'nope'.*FullFT, r=8"):
        analyze(t, reference="nope")


def test_report_is_self_contained_and_markdown_names_every_method(tmp_path):
    a = analyze(FIX / "trainer", pattern=PATTERN)
    path = write_report(a, tmp_path / "out")
    page = path.read_text()
    assert page.count("data:image/png;base64,") == 3  # U-curves, ratio, curves
    assert "http://" not in page and "https://" not in page and "<script" not in page
    md = (tmp_path / "out" / "summary.md").read_text()
    for label in a.table.labels:
        assert label in md
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "curves.png", "lr_ratio.png", "next_runs.csv", "report.html", "runs.csv",
        "summary.md", "u_curves.png"]  # fmt: skip


# ----------------------------------------------------------------------------- bad input


def _csv(tmp_path, text: str):
    path = tmp_path / "runs.csv"
    path.write_text(text)
    return path


GOOD_HEAD = "method,rank,lr,seed,eval_loss\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("method,learning_rate,eval_loss\nfull,1e-3,1.0\n",
         r"missing columns: lr, seed\. Needed: method, lr, seed, eval_loss.*The file has: "
         r"method, learning_rate, eval_loss"),
        (GOOD_HEAD + "full,,abc,0,1.0\n", r"column 'lr' must hold numbers \(row 1: 'abc'\)"),
        (GOOD_HEAD + "full,,-1e-3,0,1.0\n", r"every lr must be a positive, finite number"),
        (GOOD_HEAD + "full,,0,0,1.0\n", r"every lr must be a positive, finite number"),
        (GOOD_HEAD + "full,,1e-3,0,1.0\nfull,,1e-3,0,1.2\n",
         r"appear twice with different values, e.g. full, lr 0.001, seed 0: 1, 1.2"),
        ("", r"empty: no runs"),
        (GOOD_HEAD, r"empty: no runs"),
        ("method,lr,seed,acc\nfull,1e-3,0,1\n",
         r"missing columns: a metric \(none of eval_loss, final_loss, loss, metric; name one "
         r"with --metric\)"),
    ],
    ids=["missing-columns", "text-lr", "negative-lr", "zero-lr", "duplicate-runs",
         "empty-file", "header-only", "no-metric"],
)  # fmt: skip
def test_bad_tables_are_refused_with_a_message_that_helps(tmp_path, text, message):
    with pytest.raises(RunTableError, match=message):
        read_runs(_csv(tmp_path, text))


def test_nan_and_inf_metrics_count_as_diverged_and_are_reported(tmp_path):
    rows = "".join(f"full,,{lr},{s},{v}\n" for lr, v in ((1e-4, 1.2), (1e-3, 1.0), (1e-2, "nan"))
                   for s in (0, 1, 2)) + "lora,4,1e-2,0,inf\n"  # fmt: skip
    t = read_runs(_csv(tmp_path, GOOD_HEAD + rows))
    assert int(t.runs.diverged.sum()) == 4
    assert any(n.startswith("4 run(s) have a NaN/infinite eval_loss") for n in t.notes)
    a = analyze(t)
    assert a.optima.set_index("label").best_lr["FullFT"] == 1e-3


def test_fewer_than_three_lrs_names_the_lrs_to_run(tmp_path):
    rows = "".join(f"full,,{lr},{s},{1 + lr}\n" for lr in (1e-3, 2.15e-3) for s in (0, 1, 2))
    a = analyze(_csv(tmp_path, GOOD_HEAD + rows))
    status = a.status("FullFT")
    assert status.startswith("cannot locate an optimum: 2 LR(s) measured")
    assert "run these LRs next: 0.000464" in status


def test_trainer_folder_problems(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunTableError, match=r"neither lora_lab run records \(\*.json\) nor"):
        read_runs(tmp_path / "empty")
    with pytest.raises(RunTableError, match="no trainer_state.json"):
        read_runs(tmp_path / "empty", fmt="trainer")
    with pytest.raises(RunTableError, match=r"--pattern matched none of the 12 run folders"):
        read_runs(FIX / "trainer", pattern=r"(?P<method>dora)_lr(?P<lr>.+)")
    with pytest.raises(RunTableError, match=r"logs no 'accuracy' \(it logs: epoch, eval_loss"):
        read_runs(FIX / "trainer", metric="accuracy")
    with pytest.raises(RunTableError, match="no such file or folder"):
        read_runs(tmp_path / "missing.csv")


def test_cli_writes_the_report_and_refuses_bad_input_without_writing(tmp_path, capsys):
    out = tmp_path / "report"
    args = ["analyze", str(FIX / "sweep.csv"), "--out", str(out), "--margin", "0.05"]
    for ours, theirs in MAP.items():
        args += ["--map", f"{ours}={theirs}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "r=8: optimum interior at 1.47x" in printed and (out / "report.html").exists()
    bad = tmp_path / "bad"
    assert main(["analyze", str(_csv(tmp_path, "method,lr\nfull,1e-3\n")), "--out",
                 str(bad)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") <= 2 and "lora-lab: error:" in err and "missing columns" in err
    assert not bad.exists()
    assert main(["analyze", str(FIX / "sweep.csv"), "--map", "lr", "--out", str(bad)]) == 2
    assert "--map takes OURS=THEIRS" in capsys.readouterr().err
    assert not bad.exists() and not list(tmp_path.glob(".analyze-*"))


def test_report_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    from lora_lab.own_runs import report

    a = analyze(FIX / "sweep.csv", mapping=MAP)

    def broken(_):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "html_report", broken)
    with pytest.raises(RuntimeError):
        write_report(a, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".analyze-*"))
    assert math.isfinite(a.optima.opt_lr.iloc[0])
