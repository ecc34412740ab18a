"""Every exercise checker, one parametrized test: the instructors' answer (lora_lab.solutions)
passes, a plausible wrong answer does not, and a student's outcome is recorded for grading."""

import json
import math
import re

import pytest

from lora_lab import exercises as ex
from lora_lab import solutions as sol
from lora_lab.grading import grade_notebooks, outcomes


@pytest.fixture(scope="module")
def capacity_rows():
    from lora_lab.analysis import load_runs
    from lora_lab.findings.capacity import capacity_bound, capacity_table
    from lora_lab.sweeps.experiment import results_dir

    table = capacity_table(load_runs(results_dir("capacity")))
    table["bound"] = capacity_bound(table)
    return table


# (checker, answer, wrong answer, needs the capacity table)
CASES = {
    "lora_forward": (ex.check_lora_forward, sol.reference_lora_forward,
                     lambda x, w, a_, b_, a, r: x @ w.T, False),
    "lora_forward_shape": (ex.check_lora_forward, sol.reference_lora_forward,
                           lambda x, w, a_, b_, a, r: x @ w, False),
    "bits_in_facts": (ex.check_bits_in_facts, sol.reference_bits_in_facts, lambda n: n * 4, False),
    "out_of_room_rule": (ex.check_out_of_room_rule, sol.reference_out_of_room,
                         lambda n, p, b: False, True),
    "parabola_optimum": (ex.check_parabola_optimum, sol.reference_parabola_optimum,
                         lambda lrs, losses: lrs[1], False),
    "is_interior": (ex.check_is_interior, sol.reference_is_interior, lambda lrs, losses: True,
                    False),
    "lr_exponent": (ex.check_lr_exponent, sol.reference_lr_exponent, lambda b, lrs: 0.5, False),
    "paired_gap": (ex.check_paired_gap, sol.reference_paired_gap, lambda a, b: 0.0, False),
    "lora_param_count": (ex.check_lora_param_count, sol.reference_lora_param_count,
                         lambda d_in, d_out, r: d_in * d_out, False),
    "matching_rank": (ex.check_matching_rank, sol.reference_matching_rank,
                      lambda budget, per_rank: budget // per_rank, False),
    "group_advantages": (ex.check_group_advantages, sol.reference_group_advantages,
                         lambda rewards: rewards, False),
    "advantage_bits": (ex.check_advantage_bits, sol.reference_advantage_bits,
                       lambda k, g: k / g, False),
    "flop_ratio": (ex.check_flop_ratio, sol.reference_flop_ratio, lambda n, r: 2 / 3, False),
    "adam_bytes": (ex.check_adam_bytes, sol.reference_adam_bytes, lambda n: 8 * n, False),
    "alpha_exponent": (ex.check_alpha_exponent, sol.reference_alpha_exponent,
                       lambda alphas, lrs: 1.0, False),
    "predict_ratio": (ex.check_predict_ratio, sol.reference_predict_ratio,
                      lambda r, s, a: r, False),
    "next_lrs": (ex.check_next_lrs, sol.reference_next_lrs, lambda lrs, losses: [], False),
    "ratio_interval": (ex.check_ratio_interval, sol.reference_ratio_interval,
                       lambda a, b, c, d: (a / c, b / d), False),
    "dpo_loss": (ex.check_dpo_loss, sol.reference_dpo_loss,
                 lambda a, b, c, d, beta: math.log(2), False),
    "failing_size": (ex.check_failing_size, sol.reference_failing_size,
                     lambda cap, sizes: sizes[0], False),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_checker_accepts_the_answer_and_rejects_a_wrong_one(name, request):
    check, answer, wrong, needs_table = CASES[name]
    extra = (request.getfixturevalue("capacity_rows"),) if needs_table else ()
    assert check(answer, *extra, quiet=True)
    assert not check(wrong, *extra, quiet=True)


def test_every_checker_has_a_case_and_an_answer():
    checkers = {n.removeprefix("check_") for n in dir(ex) if n.startswith("check_")}
    assert checkers <= set(CASES)
    answers = {n for n in dir(sol) if n.startswith("reference_")}
    assert len(answers) >= len(checkers)


def test_no_notebook_shows_the_answers():
    from lora_lab.paths import notebooks_dir

    for path in sorted(notebooks_dir().glob("*.ipynb")):
        text = path.read_text()
        assert "lora_lab.solutions" not in text, path.name
        assert not re.search(r"\breference_(?!bits_per_param)\w+\(", text), path.name


def _executed(tmp_path, name, cells):
    """A notebook as papermill would save it: each checker's outputs as a kernel emits them.
    (nbformat is imported here, not at collection: ~3-8 s that every test worker would pay.)"""
    import nbformat

    nb = nbformat.v4.new_notebook()
    for source, outputs in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = [nbformat.v4.new_output("display_data", data=o) for o in outputs]
        nb.cells.append(cell)
    path = tmp_path / name
    nbformat.write(nb, str(path))
    return path


def _emitted(monkeypatch, fn, *args):
    """What a checker emits inside a kernel (IPython's display captured)."""
    shown = []
    monkeypatch.setattr(ex, "_in_kernel", lambda: True)
    monkeypatch.setattr(ex, "_display", lambda data: shown.append(data))
    fn(*args)
    return shown


def test_grade_collects_one_row_per_notebook_and_exercise(tmp_path, monkeypatch):
    passed = _emitted(monkeypatch, ex.check_bits_in_facts, sol.reference_bits_in_facts)
    failed = _emitted(monkeypatch, ex.check_flop_ratio, lambda n, r: 2 / 3)

    def todo(n):
        raise NotImplementedError

    untried = _emitted(monkeypatch, ex.check_bits_in_facts, todo)
    assert [d[ex.EXERCISE_MIME]["outcome"] for d in passed + failed + untried] == [
        "passed", "failed", "not attempted"]
    alice = _executed(tmp_path, "alice.ipynb", [
        ("check_bits_in_facts(my_bits)", passed), ("check_flop_ratio(my_ratio)", failed)])
    bob = _executed(tmp_path, "bob.ipynb", [
        ("check_bits_in_facts(my_bits)", untried), ("check_flop_ratio(my_ratio)", [])])
    table = grade_notebooks([alice, bob])
    got = {(r.notebook, r.exercise): r.outcome for r in table.itertuples()}
    assert got == {("alice.ipynb", "bits_in_facts"): "passed",
                   ("alice.ipynb", "flop_ratio"): "failed",
                   ("bob.ipynb", "bits_in_facts"): "not attempted",
                   ("bob.ipynb", "flop_ratio"): "not run"}  # called, but nothing recorded
    assert outcomes(json.loads(alice.read_text()))[0]["exercise"] == "bits_in_facts"
    csv = tmp_path / "grades.csv"
    from lora_lab.cli import main

    assert main(["grade", str(tmp_path), "--csv", str(csv)]) == 0
    assert len(csv.read_text().strip().splitlines()) == 1 + 4
    assert main(["grade", str(tmp_path / "nobody.ipynb")]) == 2


def test_quiet_self_checks_are_not_recorded(monkeypatch):
    assert _emitted(monkeypatch, ex.check_bits_in_facts, sol.reference_bits_in_facts) != []
    shown = []
    monkeypatch.setattr(ex, "_display", lambda data: shown.append(data))
    ex.check_bits_in_facts(sol.reference_bits_in_facts, quiet=True)
    assert shown == []
