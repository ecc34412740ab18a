"""Notebook 07's starting point: the post's alpha invariance, exactly."""

import numpy as np
import pytest

from lora_lab.findings.lr_ratio import Parametrization, invariance_curves, lora_curve
from lora_lab.tasks import make_task
from lora_lab.training import load_base


@pytest.fixture(scope="module")
def setup():
    return load_base("nano"), make_task("instruct", n_train=256, n_test=32, seed=0).train


@pytest.mark.parametrize("k", [4.0, 0.25, 3.0])
def test_rescaling_alpha_and_lr_b_together_leaves_the_curve_unchanged(setup, k):
    base, data = setup
    curves = invariance_curves(base, data, r=4, lora_alpha=32.0, lr=2e-3, k=k, steps=25)
    diffs = curves.groupby("label", sort=False).max_abs_diff.first().to_numpy()
    assert diffs[0] == 0.0
    # (k alpha, LR_A, LR_B / k) is the same run: exactly for a power of two, else to rounding
    assert diffs[1] <= (0.0 if k in (4.0, 0.25) else 1e-5)
    # changing alpha with one shared LR is a different run
    assert diffs[2] > 1e-3


def test_moving_lr_a_instead_of_lr_b_breaks_the_invariance(setup):
    """The test can fail: moving LR_A (not LR_B) with alpha changes the curve."""
    base, data = setup
    a = lora_curve(base, data, 4, Parametrization(32.0, 2e-3, 2e-3), steps=20)
    b = lora_curve(base, data, 4, Parametrization(128.0, 2e-3 / 4, 2e-3), steps=20)
    assert np.abs(a - b).max() > 1e-3


def test_rslora_at_alpha_32_is_alpha_128_at_rank_16(setup):
    """rsLoRA scales by alpha / sqrt(r): at r = 16 and alpha = 32 that is 8, standard LoRA's
    scaling at alpha = 128; the curves are the same run (so lr_alpha's alpha = 128 answers
    for rsLoRA at alpha = 32). At r = 1 rsLoRA is standard LoRA."""
    from lora_lab.lora import LoraConfig

    assert (
        LoraConfig(r=16, lora_alpha=32, use_rslora=True).scaling()
        == LoraConfig(r=16, lora_alpha=128).scaling()
    )
    assert (
        LoraConfig(r=1, lora_alpha=32, use_rslora=True).scaling()
        == LoraConfig(r=1, lora_alpha=32).scaling()
    )


def test_lr_length_reads_short_budgets_off_the_same_design_as_lr_rule():
    from lora_lab.findings.learning_rate import LR_RULE
    from lora_lab.findings.lr_ratio import LR_LENGTH

    a, b = LR_LENGTH.specs("full")[0], LR_RULE.specs("full")[0]
    same = ("base", "task", "task_kwargs", "batch_size", "eval_limit", "schedule", "warmup_steps")
    assert all(getattr(a, f) == getattr(b, f) for f in same)
    assert set(LR_LENGTH.lr_search.budgets) == {None, 32}


# ----------------------------------------------------------------------------- shipped records
SWEEPS = ["lr_alpha", "lr_warmup", "lr_length", "lr_width_wide"]


@pytest.mark.parametrize("name", SWEEPS)
def test_shipped_sweeps_are_complete_and_every_optimum_is_interior(name):
    from lora_lab.analysis import load_runs
    from lora_lab.findings import get_experiment
    from lora_lab.findings.common import best_lrs
    from lora_lab.sweeps.experiment import results_dir
    from lora_lab.sweeps.store import ResultStore

    exp = get_experiment(name)
    folder = results_dir(name)
    done = ResultStore(folder).done_keys()
    assert {s.key for s in exp.specs("full")} <= done  # the starting grid, at least
    runs = load_runs(folder)
    by = ["label"]
    optima = best_lrs(runs, by)
    assert optima.interior.all(), optima[~optima.interior]
    if name == "lr_length":  # searched at 32 steps too: read off the curves
        from lora_lab.findings.lr_ratio import budget_runs

        b = budget_runs()
        short = best_lrs(b[b.source == "lr_length"], ["steps", "label"])
        assert short.interior.all(), short[~short.interior]


def test_budgets_read_off_longer_runs_equal_shorter_runs():
    """lr_length's 100-step runs and rank_curves' 1,000-step runs share method, LR and seed
    at some points: their losses at a common step agree to float rounding (same batches,
    constant LR) up to the shortest budget, 32 steps."""
    from lora_lab.findings.lr_ratio import budget_consistency

    c = budget_consistency()
    assert (c.pairs > 0).all() and 32 in set(c.step)
    assert c[c.step <= 32].max_diff.max() < 1e-5


def test_formula_table_words_follow_the_intervals():
    from lora_lab.findings.learning_rate import width_table
    from lora_lab.findings.lr_ratio import (
        alpha_runs,
        alpha_table,
        budget_runs,
        formula_table,
        length_table,
        warmup_table,
        width_runs,
    )

    t = formula_table(alpha_table(alpha_runs()), width_table(width_runs()),
                      length_table(budget_runs()), warmup_table())  # fmt: skip
    for r in t.itertuples():
        assert (r.post_10 == "excluded") == (not r.lo <= 10 <= r.hi)
        assert (r.tinker == "excluded") == (not r.lo <= r.hidden_over_2alpha <= r.hi)
