"""Multi-label families (mlcls): every label that applies, joined by the task's separator."""

from __future__ import annotations

import random

from ..tasks import Example
from .cls_tasks import _scene
from .registry import _family, _Spec
from .words import CAT_NAMES, CATS, LABEL_POOLS, _fill


@_family("mlcls", False, "a sentence|list every label that applies|Sentence: |Labels:")
def _multi_topic(rng: random.Random) -> _Spec:
    """Which of the instance's labelled item categories a sentence mentions (others are distractors)."""
    cats = sorted(rng.sample(list(CATS), 4), key=list(CATS).index)
    distract = [c for c in CATS if c not in cats]
    labels = tuple(rng.choice(CAT_NAMES[c]) for c in cats)

    def gen(r: random.Random, k: int | None) -> Example:
        present = sorted(r.sample(range(len(cats)), r.choice([1, 1, 2, 2, 3])))
        items = [r.choice(CATS[cats[i]]) for i in present]
        if r.random() < 0.4:
            items.append(r.choice(CATS[r.choice(distract)]))
        if r.random() < 0.3 and len(items) < 4:
            items.append(r.choice([x for x in CATS[cats[present[0]]] if x not in items]))
        return Example(_scene(r, items), ", ".join(labels[i] for i in present))

    rule = ", ".join(f"{c} -> {w}" for c, w in zip(cats, labels)) + f"; ignored: {', '.join(distract)}"
    return _Spec(gen, rule, labels)


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


NUMBER_PROPS = {
    "even": lambda n: n % 2 == 0,
    "odd": lambda n: n % 2 == 1,
    "prime": _is_prime,
    "square": lambda n: int(n**0.5) ** 2 == n,
    "multiple of 3": lambda n: n % 3 == 0,
    "multiple of 5": lambda n: n % 5 == 0,
    "over 100": lambda n: n > 100,
}
_NUMBER_TEXTS = (
    "The jersey worn by {name} has the number {n} printed on the back.",
    "{name} picked the ticket with the number {n} from the jar on {day}.",
    "Room {n} is where {name} is staying during the trip to {city}.",
    "The bus that {name} takes to the {spot} every day is line {n}.",
    "On {day}, {name} wrote the number {n} on the whiteboard.",
)


@_family("mlcls", True, "a sentence with a number|list every label that applies|Sentence: |Labels:")
def _number_properties(rng: random.Random) -> _Spec:
    """Arithmetic properties of the number in a sentence (even, prime, square, ...) under arbitrary names."""
    props = sorted(rng.sample(list(NUMBER_PROPS), rng.choice([3, 4])), key=list(NUMBER_PROPS).index)
    labels = tuple(rng.sample(rng.choice(LABEL_POOLS), len(props)))
    numbers = {p: [n for n in range(1, 301) if NUMBER_PROPS[p](n)] for p in props}

    def gen(r: random.Random, k: int | None) -> Example:
        n = r.choice(numbers[r.choice(props)])  # a property first, so rare ones (square) are not rare
        text = _fill(r, r.choice(_NUMBER_TEXTS), n=(str(n),))
        return Example(text, ", ".join(w for p, w in zip(props, labels) if NUMBER_PROPS[p](n)))

    rule = ", ".join(f"{p} -> {w}" for p, w in zip(props, labels))
    return _Spec(gen, rule, labels)
