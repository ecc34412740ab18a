import math

import pytest
import torch

from lora_lab.tasks import make_arith, make_facts, make_instruct, make_task, parse_answer, verify
from lora_lab.tasks.arith import arith_example, scratchpad
from lora_lab.tasks.corpus import corpus_documents
from lora_lab.tasks.world import is_corpus_name
from lora_lab.tokenizer import BOS, EOS, PAD, TOKENIZER


def test_tokenizer_round_trip():
    text = "Hello, World!\n  ~{x} = 42 #### -7"
    ids = TOKENIZER.encode(text, bos=True, eos=True)
    assert ids[0] == BOS and ids[-1] == EOS
    assert TOKENIZER.decode(ids) == text
    assert TOKENIZER.vocab_size == 99
    all_chars = "".join(TOKENIZER.itos[3:])
    assert TOKENIZER.decode(TOKENIZER.encode(all_chars)) == all_chars


def test_tokenizer_rejects_unknown_characters():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        TOKENIZER.encode("café")
    with pytest.raises(ValueError):
        TOKENIZER.decode([500])


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("facts", {"n_entities": 100, "train_phrasings": 2}),
        ("instruct", {"n_train": 300, "n_test": 50}),
        ("arith", {"n_train": 300, "n_test": 50}),
    ],
)
def test_tasks_deterministic_and_disjoint(name, kwargs):
    a, b = make_task(name, seed=1, **kwargs), make_task(name, seed=1, **kwargs)
    assert a.train.examples == b.train.examples and a.test.examples == b.test.examples
    c = make_task(name, seed=2, **kwargs)
    assert c.train.examples != a.train.examples
    train_text = {(e.prompt, e.completion) for e in a.train.examples}
    test_text = {(e.prompt, e.completion) for e in a.test.examples}
    assert not train_text & test_text


def test_instruct_and_arith_test_inputs_unseen():
    task = make_instruct(n_train=500, n_test=100)
    args = lambda ds: {e.prompt.split("\n")[0].split(" ", 2)[2] for e in ds.examples}
    assert not args(task.train) & args(task.test)
    arith = make_arith(n_train=500, n_test=100)
    key = lambda e: (e.prompt.split(" has ")[1].split(" ")[0], e.answer)
    assert not {key(e) for e in arith.train.examples} & {key(e) for e in arith.test.examples}


@pytest.mark.parametrize("name", ["facts", "instruct", "arith"])
def test_masks_cover_exactly_the_completion(name):
    task = make_task(
        name, seed=0, **({"n_entities": 50} if name == "facts" else {"n_train": 50, "n_test": 10})
    )
    inputs, targets, mask = task.train.tensors()
    for i, ex in enumerate(task.train.examples):
        masked = targets[i][mask[i].bool()].tolist()
        assert masked == TOKENIZER.encode(ex.completion) + [EOS]
        # inputs are targets shifted by one, and padding carries no loss
        assert inputs[i, 0] == BOS
        assert torch.equal(inputs[i, 1:], targets[i, :-1])
        assert not mask[i][targets[i] == PAD].any()


def test_facts_information_content():
    task = make_facts(n_entities=300, n_attributes=2, value_len=3)
    assert task.train.info_bits == pytest.approx(300 * 2 * 3 * math.log2(26))
    d = task.train.describe()
    assert d["bits"] == pytest.approx(task.train.info_bits)
    assert d["completion_tokens"] == 600 * (1 + 3 + 1)  # space + code + EOS
    assert len(task.extra["recall"]) == 600
    # values are uniform random codes: the letters' empirical entropy is near log2(26)
    letters = "".join(e.answer for e in task.train.examples)
    counts = torch.tensor([letters.count(ch) for ch in set(letters)], dtype=torch.float)
    p = counts / counts.sum()
    assert float(-(p * p.log2()).sum()) > 0.97 * math.log2(26)


def test_facts_entities_are_new_to_the_corpus():
    task = make_facts(n_entities=300)
    names = {e.prompt.split(" is")[0].split(" of ")[1] for e in task.extra["recall"].examples}
    assert not any(is_corpus_name(n) for n in names)
    docs = " ".join(corpus_documents(n_docs=2000))
    assert not any(f" {n} " in docs or f" {n}?" in docs for n in list(names)[:50])


def test_arith_scratchpad_and_verifier():
    assert scratchpad(47, 38, "+") == " 7+8+0=5 c1, 4+3+1=8 c0. #### 85"
    assert scratchpad(43, 25, "-") == " 13-5-0=8 b1, 4-2-1=1 b0. #### 18"
    assert scratchpad(95, 7, "+").endswith("carry 1. #### 102")
    import random

    ex = arith_example(347, 285, "+", random.Random(0))
    assert verify(ex, ex.completion)
    assert verify(ex, " junk. #### 632")
    assert not verify(ex, " 7+5+0=2 c1. #### 631")
    assert not verify(ex, " no answer line")
    assert parse_answer("#### 1 then #### -12") == -12
    task = make_arith(n_train=200, n_test=20)
    assert all(task.test.verify(e, e.completion) for e in task.test.examples)


def test_task_argument_errors():
    with pytest.raises(ValueError, match="unknown task"):
        make_task("poetry")
    with pytest.raises(ValueError):
        make_facts(n_entities=0)
    with pytest.raises(ValueError, match="unknown ops"):
        make_instruct(ops=("reverse", "juggle"))
    with pytest.raises(ValueError):
        make_arith(digits=(3, 2))


def test_two_hop_tests_composition_of_facts_it_was_trained_on():
    from lora_lab.tasks import make_task

    task = make_task("two_hop", n_people=40, n_companies=5, train_fraction=0.5, seed=1)
    train_prompts = {e.prompt for e in task.train.examples}
    assert len(task.test) == 20 and len(task.extra["recall"]) == 20
    for composed, hop1 in zip(task.test.examples, task.extra["hop1"].examples):
        assert composed.prompt not in train_prompts  # the composition is never trained
        assert hop1.prompt in train_prompts  # ... but both of its parts are
        company, code = composed.answer.split(", so ")
        assert hop1.answer == company
        assert f"The city of {company} is" in train_prompts
        assert len(code) == 4
    latent = make_task("two_hop", n_people=40, n_companies=5, explicit=False, seed=1)
    assert [e.answer for e in latent.test.examples] == [
        e.answer.split(", so ")[1] for e in task.test.examples
    ]
    with pytest.raises(ValueError, match="train_fraction"):
        make_task("two_hop", train_fraction=1.0)


def test_arith_says_when_its_problem_space_runs_out():
    import pytest

    from lora_lab.tasks import make_task

    with pytest.raises(ValueError, match="could not draw"):
        make_task("arith", n_train=64, n_test=16, digits=(1, 1), seed=0)


def test_arith_max_len_keeps_every_example_within_the_context():
    from lora_lab.tokenizer import TOKENIZER

    plain = make_task("arith", n_train=300, n_test=40, digits=(1, 2), seed=0)
    short = make_task("arith", n_train=300, n_test=40, digits=(1, 2), seed=0, max_len=124)
    n = lambda e: len(TOKENIZER.encode(e.prompt + e.completion, bos=True, eos=True))  # noqa: E731
    assert max(map(n, plain.train.examples)) > 124  # the limit bites on this draw
    assert max(map(n, short.train.examples + short.test.examples)) <= 124
    assert len(short.train) == 300 and short.params["max_len"] == 124
    assert "max_len" not in plain.params  # existing tasks keep their fingerprints
    with pytest.raises(ValueError, match="max_len"):
        make_task("arith", max_len=4)
