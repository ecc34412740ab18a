import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from lora_lab.cli import main
from lora_lab.findings.capacity import CapacityPanel, run_capacity_from_controls
from lora_lab.plots import (
    line_styles,
    plot_bits_vs_params,
    plot_learning_curves,
    plot_loss_vs_batch,
    plot_loss_vs_n,
    plot_lr_curves,
)
from lora_lab.reproduce import reproduce
from lora_lab.tasks import make_facts
from lora_lab.training import load_base
from lora_lab.widgets import ControlPanel, run_from_controls
from tests.harness import ROOT


def test_plots_return_figures_and_fullft_is_black():
    curves = pd.DataFrame(
        {
            "label": ["FullFT", "FullFT", "r=4", "r=4", "r=1", "r=1"],
            "step": [1, 10] * 3,
            "eval_loss": [2, 1, 2, 1.2, 2, 1.5],
        }
    )
    assert isinstance(plot_learning_curves(curves, departures={"r=1": 5}), Figure)
    means = curves.rename(columns={"step": "lr", "eval_loss": "mean"}).assign(std=0.01)
    optima = pd.DataFrame({"label": ["FullFT"], "opt_lr": [3.0]})
    assert isinstance(plot_lr_curves(means, optima=optima), Figure)
    batch = pd.DataFrame(
        {
            "label": ["FullFT", "r=4"] * 2,
            "batch_size": [32, 32, 256, 256],
            "best_loss": [1, 1.1, 1.2, 1.5],
        }
    )
    assert isinstance(plot_loss_vs_batch(batch), Figure)
    table = pd.DataFrame(
        {
            "n_facts": [10, 10, 100, 100],
            "label": ["FullFT", "r=1"] * 2,
            "loss": [0.1, 0.2, 0.3, 1.5],
            "loss_std": [0.01] * 4,
            "bits_stored": [188, 180, 1800, 400],
            "info_bits": [188, 188, 1880, 1880],
            "trainable_params": [5000, 200] * 2,
        }
    )
    assert isinstance(plot_loss_vs_n(table), Figure)
    assert isinstance(plot_bits_vs_params(table, {"2 bits/param": 2.0}), Figure)
    styles = line_styles(["r=64", "FullFT", "r=1"])
    assert styles["FullFT"]["color"] == "black"
    assert len({styles[k]["marker"] for k in styles}) == 3  # distinguishable in grayscale


def test_widget_button_calls_the_plain_function():
    base = load_base("nano")
    task = make_facts(n_entities=32)
    direct = run_from_controls(
        base, task.train, rank=2, lr=3e-3, batch_size=8, targets="MLP only", steps=10
    )
    assert direct.config["lora"]["target_modules"] == "mlp"
    panel = ControlPanel(base, task.train, rank=2, lr=3e-3, batch_size=8, steps=20)
    assert panel.result is None  # building the panel trains nothing
    panel.steps.value = 10
    panel.targets.value = "MLP only"
    via_button = panel.run()
    assert via_button.curves.equals(direct.curves)
    full = run_from_controls(
        base, task.train, rank=0, lr=1e-3, batch_size=8, targets="all layers", steps=3
    )
    assert full.config["method"] == "full"


def test_capacity_panel_button_calls_the_plain_function():
    base = load_base("nano")
    direct = run_capacity_from_controls(base, n_entities=24, rank=2, lr=3e-3, steps=20)
    assert {"bits_stored", "fraction_stored"} <= set(direct.curves.columns)
    drawn = []
    panel = CapacityPanel(
        base,
        n_values=(24, 48),
        n=48,
        rank=4,
        lr=3e-3,
        steps=40,
        bits_per_param=0.5,
        overlay=lambda ax, n, r: drawn.append((n, r)),
    )
    assert panel.result is None  # building the panel trains nothing
    assert panel.adapter_limit(0) is None and panel.adapter_limit(2) > 0
    panel.n.value, panel.rank.value, panel.steps.value = 24, 2, 20
    via_button = panel.run()
    assert via_button.curves.equals(direct.curves)
    assert drawn and drawn[-1] == (24, 2)
    with pytest.raises(ValueError):
        run_capacity_from_controls(base, n_entities=0, rank=1, lr=1e-3, steps=2)


def test_cli_sweep_ci_and_errors(tmp_path, capsys):
    assert main(["sweep", "demo", "--grid", "ci", "--jobs", "1", "--out", str(tmp_path)]) == 0
    assert "2 ran" in capsys.readouterr().out
    assert main(["sweep", "demo", "--grid", "ci", "--jobs", "1", "--out", str(tmp_path)]) == 0
    assert "2 already done" in capsys.readouterr().out
    assert main(["sweep", "no-such-experiment"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


@pytest.mark.notebooks
def test_reproduce_writes_executed_notebooks_and_index(tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # as a user runs it: plots must be kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = reproduce(
            quick=True,
            out=tmp_path,
            notebooks=[ROOT / "tests" / "notebooks" / "records_demo.ipynb"],
        )
    assert index.exists() and "records_demo.html" in index.read_text()
    executed = (tmp_path / "records_demo.ipynb").read_text()
    assert '"image/png"' in executed  # the report shows the notebook's plot


def test_cli_info_json_is_json_only(capsys):
    import json

    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)  # nothing but JSON on stdout
    assert "nano" in data["bases"] and data["results"]["lr_rule"]["done"] > 0
    assert data["warm_starts"]["tiny-arith"]["base"] == "tiny"


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--threads", "0"],
        ["demo", "--steps", "-3"],
        ["reproduce", "--timeout", "0"],
        ["pretrain", "--preset", "nano", "--steps", "0"],
        ["pretrain", "--preset", "giant"],
        ["sweep", "demo", "--jobs", "0"],
    ],
)
def test_cli_refuses_silent_nonsense(argv, capsys):
    try:  # argparse exits with 2; a value only the command can judge returns 2
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and "error" in capsys.readouterr().err


def test_cli_pretrain_never_overwrites_the_shipped_base_by_default(tmp_path, monkeypatch):
    from lora_lab.paths import base_path

    monkeypatch.setenv("LORA_LAB_WORK", str(tmp_path))
    shipped = base_path("nano").stat().st_mtime_ns
    assert main(["pretrain", "--preset", "nano", "--steps", "2", "--batch-size", "2"]) == 0
    assert (tmp_path / "bases" / "nano.safetensors").exists()
    assert base_path("nano").stat().st_mtime_ns == shipped


def test_panel_controls_keep_exact_values_and_full_labels():
    from lora_lab.widgets import lr_options

    base = load_base("nano")
    task = make_facts(n_entities=16)
    panel = ControlPanel(base, task.train, rank=0, lr=5.6e-3, steps=10)
    assert panel.values()["lr"] == 5.6e-3  # the value the notebook names, not a snapped one
    assert panel.rank.options[panel.rank.index][0] == "FullFT"  # a label, not "0"
    assert 2.15e-3 in [v for _, v in lr_options(1e-3)]  # the sweeps' lattice is on offer


def test_run_button_is_disabled_while_training_and_ignores_a_second_click():
    base = load_base("nano")
    task = make_facts(n_entities=16)
    panel = ControlPanel(base, task.train, rank=2, lr=3e-3, steps=4)
    seen = []

    def run():
        seen.append((panel.button.disabled, panel.click()))  # a click during training
        return "done"

    panel.run = run
    assert panel.click() == "done"
    assert seen == [(True, None)]  # disabled while running; the second click did nothing
    assert not panel.button.disabled and panel.button.description == "Run"


def test_one_rule_decides_the_thread_count(monkeypatch, tmp_path):
    from lora_lab import threads as th

    for var in th.ENV_VARS + th.HUB_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(th, "usable_cpus", lambda: 2)
    assert th.choose_threads()[0] == 1  # a 2-CPU machine: 2 threads collapse when busy
    monkeypatch.setattr(th, "usable_cpus", lambda: 8)
    assert th.choose_threads()[0] == 4  # an idle 8-core laptop: half, not 1
    monkeypatch.setattr(th, "usable_cpus", lambda: 64)
    assert th.choose_threads()[0] == th.MAX_DEFAULT_THREADS
    monkeypatch.setenv("JUPYTERHUB_USER", "student")
    assert th.choose_threads()[0] == 1  # a shared hub: many kernels share the cores
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert th.choose_threads()[0] == 3
    monkeypatch.setenv("LORA_LAB_THREADS", "2")  # ours wins over the generic variable
    assert th.choose_threads() == (2, "LORA_LAB_THREADS")
    assert th.choose_threads(4) == (4, "explicit")  # an explicit count wins over both
    for bad in (0, -1, "two"):
        with pytest.raises(ValueError, match="positive whole number"):
            th.choose_threads(bad)
    monkeypatch.setenv("LORA_LAB_THREADS", "0")
    with pytest.raises(ValueError, match="LORA_LAB_THREADS"):
        th.choose_threads()
    before = torch.get_num_threads()
    try:
        assert th.configure_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cpu_quota_is_read_from_cgroups(tmp_path):
    from lora_lab.threads import cgroup_cpu_quota

    (tmp_path / "cpu.max").write_text("200000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 2.0
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    assert cgroup_cpu_quota(tmp_path / "missing") is None


def test_importing_lora_lab_changes_no_thread_setting():
    """The rule runs where work starts, never on import: a program that imports lora_lab
    keeps its own torch settings (here 3 threads, set before the import)."""
    code = ("import torch; torch.set_num_threads(3); import lora_lab; lora_lab.LoraConfig; "
            "from lora_lab import train; print(torch.get_num_threads())")  # fmt: skip
    env = {**os.environ, "LORA_LAB_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout  # fmt: skip
    assert out.strip() == "3"


@pytest.mark.slow
def test_building_loading_or_sweeping_applies_the_rule_and_a_serial_sweep_keeps_it(tmp_path):
    """A notebook's work often starts without ``train``: a model built or loaded to sample
    from, a serial sweep. Each applies the rule (here ``LORA_LAB_THREADS=1``, from 2 threads
    set as torch's default would be on a 2-core machine; 1, not more, so nothing trains
    oversubscribed beside the suite's other worker), and a serial sweep leaves it in place:
    it used to restore torch's one-thread-per-core default afterwards, and a notebook beside
    one busy process then ran 18x slower (05's ci preset: 392 s against 22 s)."""
    path = str(tmp_path / "model")
    program = f"""
import torch
from lora_lab import threads
from lora_lab.findings.demo import DEMO
from lora_lab.model import build_model, load_model, save_model
from lora_lab.sweeps.runner import run_sweep

def fresh():  # torch's default again, the rule not yet applied
    torch.set_num_threads(2)
    threads._state["applied"] = False

seen = {{}}
fresh()
build_model("nano"); seen["build"] = torch.get_num_threads()
save_model(build_model("nano"), {path!r}); fresh()
load_model({path!r}); seen["load"] = torch.get_num_threads(); fresh()
run_sweep(DEMO, "ci", root={str(tmp_path / "sweep")!r}, progress=False, executor="serial")
seen["serial sweep"] = torch.get_num_threads()
print(seen)
"""
    env = {**os.environ, "LORA_LAB_THREADS": "1"}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         env=env, check=True).stdout  # fmt: skip
    assert out.strip().splitlines()[-1] == str({"build": 1, "load": 1, "serial sweep": 1})


def test_work_applies_the_rule_once_and_never_overrides_an_explicit_choice(monkeypatch):
    from lora_lab import threads as th

    before = torch.get_num_threads()
    monkeypatch.setitem(th._state, "applied", False)
    monkeypatch.setenv("LORA_LAB_THREADS", "2")
    try:
        assert th.apply_default_threads() == 2 and torch.get_num_threads() == 2
        torch.set_num_threads(1)  # the caller's own choice afterwards
        assert th.apply_default_threads() == 1  # applied once: left alone
    finally:
        torch.set_num_threads(before)


def test_exercise_checkers_give_hints_never_tracebacks(capsys):
    from lora_lab import exercises as ex
    from lora_lab import solutions as sol

    def broken(*args):
        raise ZeroDivisionError("oops")

    def not_done(*args):
        raise NotImplementedError

    checks = [ex.check_bits_in_facts, ex.check_parabola_optimum, ex.check_is_interior,
              ex.check_lr_exponent, ex.check_paired_gap, ex.check_lora_forward]  # fmt: skip
    for check in checks:
        assert check(broken) is False
        assert "raised ZeroDivisionError: oops" in capsys.readouterr().out
        assert check(not_done) is False
        assert "Not attempted yet" in capsys.readouterr().out
    for check, answer in [
        (ex.check_bits_in_facts, sol.reference_bits_in_facts),
        (ex.check_parabola_optimum, sol.reference_parabola_optimum),
        (ex.check_is_interior, sol.reference_is_interior),
        (ex.check_lr_exponent, sol.reference_lr_exponent),
        (ex.check_paired_gap, sol.reference_paired_gap),
        (ex.check_lora_forward, sol.reference_lora_forward),
    ]:
        assert check(answer) is True
        assert capsys.readouterr().out.startswith("Correct")
        assert check(answer, quiet=True) is True and capsys.readouterr().out == ""


def test_readable_tables_keep_learning_rates_visible():
    from lora_lab.tables import is_lr_column, readable

    df = pd.DataFrame({"label": ["r=4"], "lr": [4.64e-4], "opt_lr": [1.47e-3],
                       "lo": [1e-3], "loss": [2.123456], "steps": [300]})  # fmt: skip
    out = readable(df, digits=2, lr_columns=["lo"])
    assert out.lr[0] == "4.64e-04" and out.opt_lr[0] == "1.47e-03" and out.lo[0] == "1.00e-03"
    assert out.loss[0] == 2.12 and out.steps[0] == 300
    assert df.lr[0] == 4.64e-4  # the input is untouched
    assert is_lr_column("lr_at_smallest") and not is_lr_column("slope_per_doubling")
    assert readable(df.set_index("label").loss, digits=1).iloc[0] == 2.1


def test_experiments_command_lists_every_experiment_even_without_a_ci_grid(capsys):
    from lora_lab.cli import main
    from lora_lab.findings import EXPERIMENTS

    assert main(["experiments"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EXPERIMENTS)
    assert "no ci grid" in out  # the *_confirm sweeps have only a full grid


def test_sweep_overlay_curves_are_told_apart_and_legends_sit_outside():
    """Notebook 04's panel draws ten sweep curves: each needs its own colour or dash, and
    the legend must not cover the live curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lora_lab.findings.common import sweep_curve_overlay
    from lora_lab.plots import legend_outside

    labels = ["FullFT", "r=1", "r=4", "r=16", "r=64", "r=4 attn", "r=4 mlp", "r=7 attn",
              "r=5 mlp", "r=3"]  # fmt: skip
    curves = pd.DataFrame([{"label": lbl, "lr": 1e-3, "seed": 0, "step": s,
                            "eval_loss": 2.0 - 0.1 * i - 0.01 * s, "key": lbl}
                           for i, lbl in enumerate(labels) for s in (1, 10, 100)])  # fmt: skip
    fig, (left, ax) = plt.subplots(1, 2)
    sweep_curve_overlay(curves)(ax)
    ax.plot([1, 100], [2, 1], lw=2.5, color="crimson", label="live")
    styles = {(str(line.get_color()), tuple(line.get_dashes() if hasattr(line, "get_dashes")
               else ()), line.get_marker()) for line in ax.get_lines()}  # fmt: skip
    assert len(styles) == len(labels) + 1
    left.plot([1, 2], [1, 2], label="left panel")
    legend_outside(ax)
    legend_outside(left)
    fig.canvas.draw()
    box, left_box = ax.get_window_extent(), left.get_window_extent()
    assert ax.get_legend().get_window_extent().x0 >= box.x1  # right of the data
    assert left.get_legend().get_window_extent().y1 <= left_box.y0  # below its own panel
    plt.close(fig)


def test_no_figure_places_a_legend_over_its_data():
    """Every legend in the package and the notebooks goes through plots.legend_outside."""
    from tests.harness import ROOT

    files = [*(ROOT / "lora_lab").rglob("*.py"), *(ROOT / "notebooks").glob("*.ipynb")]
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in files
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"\.legend\(", line) and p.name != "plots.py"]  # fmt: skip
    assert not offenders, offenders


def test_figures_drawn_from_two_threads_at_once_all_render():
    """A panel's Run button draws from a kernel subshell's thread (JupyterLab >= 4.4 with
    ipykernel >= 7) while a cell may draw on the main thread. Log axes put every tick label
    through matplotlib's one maths-text parser; unguarded, two threads at once corrupt it
    (ParseException / IndexError in nearly every figure here). With the guard every
    figure renders."""
    import threading

    from matplotlib.figure import Figure

    from lora_lab.plots import guard_mathtext

    guard_mathtext()
    guard_mathtext()  # idempotent: one lock, not two nested wrappers
    errors: list[str] = []

    def draw(n: int) -> None:
        for i in range(n):
            try:
                fig = Figure()
                ax = fig.subplots()
                ax.set(xscale="log", yscale="log", title=f"$r={i}$")
                ax.plot(np.logspace(i % 3 - 3, 2, 5), np.logspace(0, 2 + i % 4, 5))
                fig.tight_layout()  # measures the tick labels: parses outside a draw
            except Exception as e:  # noqa: BLE001 - every failure is the finding
                errors.append(f"{type(e).__name__}: {str(e).strip()[:80]}")

    threads = [threading.Thread(target=draw, args=(8,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
