"""``facts``: knowledge with an exactly known information content.

N fictional entities x K attributes; each attribute value is a uniformly random code of L
lower-case letters, so there are V = 26**L equally likely values and the dataset holds
exactly N * K * log2(V) bits. Each fact is asked in several phrasings; the test split uses a
phrasing never seen in training (does the model know the fact, or only the string?). The
``recall`` split asks every fact once in the first training phrasing: the loss on it is the
code length of the facts under the model, which is what capacity is measured with.
"""

from __future__ import annotations

import math
import random

from lora_lab.tasks.base import Example, SFTDataset, Task
from lora_lab.tasks.world import ATTRIBUTES, make_names, random_code

PHRASINGS = [
    "The {attr} of {name} is",
    "Q: What is the {attr} of {name}?\nA:",
    "{name} has the {attr}",
    "Tell me {name}'s {attr}:",
]


def bits_per_fact(value_len: int = 4) -> float:
    """Information in one fact: its value is one of 26**value_len equally likely codes."""
    return value_len * math.log2(26)


def fact_examples(facts: list[tuple[str, str, str]], phrasings: list[int]) -> list[Example]:
    return [
        Example(PHRASINGS[p].format(attr=attr, name=name), " " + value, answer=value)
        for p in phrasings
        for name, attr, value in facts
    ]


def make_facts(
    n_entities: int = 500,
    n_attributes: int = 1,
    value_len: int = 4,
    train_phrasings: int = 1,
    seed: int = 0,
    for_corpus: bool = False,
) -> Task:
    """Build the facts task. With the defaults each fact holds 4 * log2(26) = 18.8 bits, the
    key -> value setting a CPU prototype found to show the rank/capacity effect clearly."""
    if n_entities <= 0 or value_len <= 0:
        raise ValueError("n_entities and value_len must be positive")
    if not 1 <= n_attributes <= len(ATTRIBUTES):
        raise ValueError(f"n_attributes must be in [1, {len(ATTRIBUTES)}]")
    if not 1 <= train_phrasings < len(PHRASINGS):
        raise ValueError(f"train_phrasings must be in [1, {len(PHRASINGS) - 1}]")
    rng = random.Random(f"facts:{seed}:{for_corpus}")
    names = make_names(n_entities, rng, for_corpus=for_corpus)
    facts = [
        (name, attr, random_code(rng, value_len))
        for name in names
        for attr in ATTRIBUTES[:n_attributes]
    ]
    bits = len(facts) * value_len * math.log2(26)
    notes = {"facts": len(facts), "bits_per_fact": value_len * math.log2(26)}
    train_ids = list(range(train_phrasings))
    train = fact_examples(facts, train_ids)
    random.Random(seed).shuffle(train)
    return Task(
        name="facts",
        train=SFTDataset("facts", "train", train, info_bits=bits, notes=notes),
        test=SFTDataset(
            "facts", "test", fact_examples(facts, [len(PHRASINGS) - 1]), info_bits=bits, notes=notes
        ),
        params={
            "n_entities": n_entities,
            "n_attributes": n_attributes,
            "value_len": value_len,
            "train_phrasings": train_phrasings,
            "seed": seed,
        },
        extra={
            "recall": SFTDataset(
                "facts", "recall", fact_examples(facts, [0]), info_bits=bits, notes=notes
            )
        },
    )
