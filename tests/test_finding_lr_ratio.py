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
