"""Preference pairs (prompt, chosen, rejected) with a known amount of information, for DPO.

A preference label carries at most one bit. What a model must *store* to win every pair can
be far more, and that is what these tasks make exact:

- ``facts_prefs``: N fictional entities, each with a random 4-letter code (the ``facts``
  task). The chosen completion is the entity's own code, the rejected one another entity's
  code from the same pool, so no code is wrong in itself: to win a pair the model must know
  which code belongs to which entity. Putting every entity's code above all the others' is
  knowing the assignment of N codes to N entities, ``log2(N!)`` bits (the *ranking bits*);
  the chosen completions themselves hold ``N * 18.8`` bits (the *content bits*); the
  training labels ``pairs_per_fact * N`` bits at most (the *label bits*). Held-out pairs
  (``test``) ask the same questions against codes that never appeared as their rejected;
  ``rephrased`` asks them in a phrasing never trained on.
- ``arith_prefs``: ``arith`` problems; the chosen completion is the verified scratchpad
  solution, the rejected one the same solution with a plausible wrong final answer (off by
  1-10). One bit per pair; the skill is shared by every problem, so held-out pairs are new
  problems (``arith``'s test split).
"""

from __future__ import annotations

import math
import random

from lora_lab.tasks.arith import make_arith
from lora_lab.tasks.base import Example, SFTDataset, Task
from lora_lab.tasks.facts import PHRASINGS, bits_per_fact
from lora_lab.tasks.world import ATTRIBUTES, make_names, random_code


def ranking_bits(n: int) -> float:
    """``log2(n!)``: the information in an assignment of ``n`` codes to ``n`` entities."""
    return math.lgamma(n + 1) / math.log(2)


def verify_code(example: Example, completion: str) -> bool:
    """1/0: is the completion's first word the entity's own code?"""
    words = completion.split()
    return bool(words) and example.answer is not None and words[0] == example.answer


def _pair(phrasing: int, name: str, attr: str, own: str, other: str) -> Example:
    prompt = PHRASINGS[phrasing].format(attr=attr, name=name)
    return Example(prompt, " " + own, answer=own, rejected=" " + other)


def make_facts_prefs(
    n_entities: int = 64,
    pairs_per_fact: int = 2,
    value_len: int = 4,
    seed: int = 0,
) -> Task:
    """Preference pairs over ``n_entities`` facts (one attribute each), ``pairs_per_fact``
    training pairs per fact, each against a different other entity's code; one held-out
    pair per fact against yet another code (``test``, training phrasing; ``rephrased``, a
    phrasing never trained on)."""
    for name, v, low in (("n_entities", n_entities, 2), ("pairs_per_fact", pairs_per_fact, 1),
                         ("value_len", value_len, 1)):  # fmt: skip
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    if pairs_per_fact + 1 >= n_entities:
        raise ValueError(
            f"pairs_per_fact + 1 = {pairs_per_fact + 1} rejected codes per fact need more "
            f"than {n_entities} entities"
        )
    rng = random.Random(f"facts_prefs:{seed}")
    names = make_names(n_entities, rng, for_corpus=False)
    codes: list[str] = []
    while len(codes) < n_entities:  # distinct codes: no rejected equals the chosen
        code = random_code(rng, value_len)
        if code not in codes:
            codes.append(code)
    attr = ATTRIBUTES[0]
    train, test, rephrased = [], [], []
    for i, name in enumerate(names):
        # other entities' codes, drawn without replacement: the first pairs_per_fact are
        # trained on, the next one is held out
        others = rng.sample([j for j in range(n_entities) if j != i], pairs_per_fact + 1)
        train += [_pair(0, name, attr, codes[i], codes[j]) for j in others[:-1]]
        test.append(_pair(0, name, attr, codes[i], codes[others[-1]]))
        rephrased.append(_pair(len(PHRASINGS) - 1, name, attr, codes[i], codes[others[-1]]))
    random.Random(seed).shuffle(train)
    notes = {
        "facts": n_entities,
        "label_bits": float(len(train)),
        "ranking_bits": ranking_bits(n_entities),
        "content_bits": n_entities * bits_per_fact(value_len),
    }
    bits = notes["ranking_bits"]

    def split(name: str, examples: list[Example]) -> SFTDataset:
        return SFTDataset("facts_prefs", name, examples, info_bits=bits, verifier=verify_code,
                          notes=dict(notes))  # fmt: skip

    return Task(
        name="facts_prefs",
        train=split("train", train),
        test=split("test", test),
        params={"n_entities": n_entities, "pairs_per_fact": pairs_per_fact,
                "value_len": value_len, "seed": seed},  # fmt: skip
        extra={"rephrased": split("rephrased", rephrased)},
    )


def wrong_answer(example: Example, rng: random.Random) -> str:
    """``example``'s completion with its final answer moved by 1-10, never below 0."""
    answer = int(example.answer)
    shift = rng.choice([d for d in range(-10, 11) if d and answer + d >= 0])
    head, _, _ = example.completion.rpartition("#### ")
    return f"{head}#### {answer + shift}"


def make_arith_prefs(n_train: int = 2000, n_test: int = 200, seed: int = 0, **arith_kwargs
                     ) -> Task:  # fmt: skip
    """``arith`` problems as pairs: verified solution vs the same with a wrong final answer."""
    base = make_arith(n_train=n_train, n_test=n_test, seed=seed, **arith_kwargs)
    rng = random.Random(f"arith_prefs:{seed}")

    def pairs(data: SFTDataset) -> SFTDataset:
        examples = [Example(ex.prompt, ex.completion, answer=ex.answer,
                            rejected=wrong_answer(ex, rng)) for ex in data.examples]  # fmt: skip
        bits = float(len(examples))
        return SFTDataset("arith_prefs", data.split, examples, info_bits=bits,
                          verifier=data.verifier, notes={"label_bits": bits})  # fmt: skip

    return Task("arith_prefs", pairs(base.train), pairs(base.test), dict(base.params))
