"""``two_hop``: facts that must be composed, for the multi-hop question of notebook 04.

People work for companies; companies sit in cities with random 4-letter codes. Training
holds every single-hop fact ("The employer of X is C", "The city of C is abcd") and the
composed question ("The city of the employer of X is abcd") for a ``train_fraction`` of
the people. The ``test`` split asks the composed question for the other people, whose two
single-hop facts *are* in training: a model answers only by composing what it stored. The
``hop1`` / ``hop2`` splits ask the single-hop facts of those test people (did it store the
parts?), and ``recall`` the composed questions it was trained on.
"""

from __future__ import annotations

import math
import random

from lora_lab.tasks.base import Example, SFTDataset, Task
from lora_lab.tasks.world import make_names, random_code

EMPLOYER = "The employer of {person} is"
CITY = "The city of {company} is"
COMPOSED = "The city of the employer of {person} is"


def make_two_hop(
    n_people: int = 400,
    n_companies: int = 40,
    train_fraction: float = 0.5,
    value_len: int = 4,
    explicit: bool = True,
    seed: int = 0,
) -> Task:
    """Build the task (see the module docstring). ``explicit``: the composed answer names the
    intermediate hop (" Daikkles, so cofg"), so a model composes by recalling two stored facts
    in turn; otherwise the answer is the code alone and the composition must happen inside
    the network (compact models fail at that: the "two-hop curse")."""
    if n_people < 2 or n_companies < 1 or value_len < 1:
        raise ValueError("need n_people >= 2, n_companies >= 1 and value_len >= 1")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be strictly between 0 and 1, got {train_fraction}")
    rng = random.Random(f"two_hop:{seed}")
    names = make_names(n_people + n_companies, rng, for_corpus=False)
    people, companies = names[:n_people], names[n_people:]
    city = {c: random_code(rng, value_len) for c in companies}
    employer = {p: rng.choice(companies) for p in people}
    n_train = max(1, min(n_people - 1, round(train_fraction * n_people)))
    seen, unseen = people[:n_train], people[n_train:]

    def ask(template: str, who: str, answer: str) -> Example:
        key = "person" if "{person}" in template else "company"
        return Example(template.format(**{key: who}), " " + answer, answer=answer)

    hop1 = [ask(EMPLOYER, p, employer[p]) for p in people]
    hop2 = [ask(CITY, c, city[c]) for c in companies]
    composed = {
        p: ask(COMPOSED, p, f"{employer[p]}, so {city[employer[p]]}" if explicit
               else city[employer[p]])
        for p in people
    }  # fmt: skip
    train = hop1 + hop2 + [composed[p] for p in seen]
    random.Random(seed).shuffle(train)
    bits = n_people * math.log2(n_companies) + n_companies * value_len * math.log2(26)
    notes = {"people": n_people, "companies": n_companies, "composed_in_training": n_train}
    return Task(
        name="two_hop",
        train=SFTDataset("two_hop", "train", train, info_bits=bits, notes=notes),
        test=SFTDataset("two_hop", "test", [composed[p] for p in unseen], notes=notes),
        params={
            "n_people": n_people,
            "n_companies": n_companies,
            "train_fraction": train_fraction,
            "value_len": value_len,
            "explicit": explicit,
            "seed": seed,
        },  # fmt: skip
        extra={
            "hop1": SFTDataset("two_hop", "hop1", [hop1[people.index(p)] for p in unseen]),
            "hop2": SFTDataset("two_hop", "hop2", hop2),
            "recall": SFTDataset("two_hop", "recall", [composed[p] for p in seen]),
        },
    )
