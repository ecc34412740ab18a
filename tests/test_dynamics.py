import pytest

from lora_lab.findings.learning_rate import first_update, first_update_table
from lora_lab.lora import LoraConfig
from lora_lab.tasks import make_instruct
from lora_lab.training import load_base


@pytest.fixture(scope="module")
def setup():
    return load_base("nano"), make_instruct(n_train=256, n_test=16)


def test_first_update_lowers_the_loss_and_is_aligned(setup):
    base, task = setup
    out = first_update(base, task.train, LoraConfig(r=4), lr=1e-3)
    assert out["first_order_loss_change"] < 0 and out["loss_change"] < 0
    assert 0 < out["cosine_with_neg_grad"] <= 1


def test_first_update_gain_is_rank_invariant_but_norm_is_not(setup):
    base, task = setup
    table = first_update_table(base, task.train, [1, 64], lr=1e-3, seeds=(0, 1, 2))
    m = table.groupby("r").mean()
    assert m.delta_norm[1] > 2 * m.delta_norm[64]  # noise averages out with rank
    gain = m.first_order_loss_change
    assert 0.6 < gain[1] / gain[64] < 1.6  # the useful part does not grow with rank
