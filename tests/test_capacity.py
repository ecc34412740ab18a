import math

import pytest

from lora_lab.bases import load_base
from lora_lab.capacity import answer_code_length_bits, bits_stored, suggest_rank
from lora_lab.model import get_preset
from lora_lab.tasks import make_facts
from lora_lab.training import train


@pytest.fixture(scope="module")
def setup():
    return load_base("nano"), make_facts(n_entities=40, seed=3)


def test_base_has_not_stored_new_facts(setup):
    base, task = setup
    recall = task.extra["recall"]
    code = answer_code_length_bits(base, recall)
    assert code.shape == (40,)
    assert code.mean() > 0.8 * 4 * math.log2(26)  # close to a uniform guess over letters
    assert bits_stored(base, recall)["fraction_stored"] < 0.2


def test_training_stores_bits(setup):
    base, task = setup
    recall = task.extra["recall"]
    tuned = train(base, task.train, "full", lr=1e-3, steps=150, batch_size=16, progress=False).model
    after = bits_stored(tuned, recall)
    assert after["fraction_stored"] > 0.5
    assert after["bits_stored"] <= after["info_bits"]


def test_suggest_rank_grows_with_information():
    cfg = get_preset("tiny")
    small = suggest_rank(cfg, bits=1e3, verbose=False)
    large = suggest_rank(cfg, bits=1e5, verbose=False)
    assert small < large
    assert suggest_rank(cfg, completion_tokens=1e4, verbose=False) >= 1
    with pytest.raises(ValueError):
        suggest_rank(cfg)
