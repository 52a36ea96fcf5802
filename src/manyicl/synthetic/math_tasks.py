"""Arithmetic families (math): a hidden linear rule, price sums, counting."""

from __future__ import annotations

import random

from ..tasks import Example
from .registry import _family, _Spec
from .words import _an, _fill, _join, _w

_CODE_TEXTS = (
    "{name} entered the number {x} into the old machine at the {spot}.",
    "The display in {city} showed {x} when {name} pressed the green button.",
    "Ticket {x} was called at the {spot} while {name} was waiting on {day}.",
    "{name} wrote {x} on a card and fed it into the machine.",
)


@_family("math", False, "a sentence with a number|compute the result|Input: |Answer:")
def _linear_rule(rng: random.Random) -> _Spec:
    """The number in the sentence goes through a hidden a*x+b."""
    a, b = rng.randint(2, 7), rng.randint(0, 20)

    def gen(r: random.Random, k: int | None) -> Example:
        x = r.randint(1, 99)
        return Example(_fill(r, r.choice(_CODE_TEXTS), x=(str(x),)), str(a * x + b))

    return _Spec(gen, f"y = {a}*x + {b}")


GOODS = _w("notebook pen cake book lamp mug scarf umbrella candle plant backpack puzzle")
_PRICE_TEXTS = (
    "{name} bought {items} at the market.",
    "At a shop in {city}, {name} paid for {items}.",
    "On {day}, {name} ordered {items} online.",
)


@_family("math", False, "a sentence about a purchase|compute the amount|Input: |Answer:")
def _sum_prices(rng: random.Random) -> _Spec:
    """Prices of 2-3 items -> total, price gap, or total plus a hidden fixed fee."""
    op, fee = rng.choice(["total", "gap", "fee"]), rng.randint(2, 9)

    def gen(r: random.Random, k: int | None) -> Example:
        goods = r.sample(GOODS, r.choice([2, 3]))
        prices = [r.randint(1, 40) for _ in goods]
        items = _join([f"{_an(g)} for {p} dollar{'s' if p > 1 else ''}" for g, p in zip(goods, prices)])
        ans = (
            sum(prices) if op == "total" else max(prices) - min(prices) if op == "gap" else sum(prices) + fee
        )
        return Example(_fill(r, r.choice(_PRICE_TEXTS), items=(items,)), str(ans))

    rule = {"total": "total price", "gap": "most expensive minus cheapest", "fee": f"total plus {fee}"}[op]
    return _Spec(gen, rule)


ANIMAL_PLURALS = {
    "dog": "dogs", "cat": "cats", "goat": "goats", "duck": "ducks", "horse": "horses", "sheep": "sheep",
    "rabbit": "rabbits", "cow": "cows", "chicken": "chickens", "pig": "pigs", "goose": "geese", "mouse": "mice",
}  # fmt: skip
_COUNT_TEXTS = (
    "On the farm, {name} counted {groups}.",
    "{name} walked through the park on {day} and saw {groups}.",
    "Near the {spot} there were {groups} this morning.",
    "In the picture that {name} took in {city} there are {groups}.",
)


@_family("math", True, "a sentence about animals|give the count|Input: |Answer:")
def _count_items(rng: random.Random) -> _Spec:
    """Groups of animals are listed (some repeated); answer how many of the hidden target animal."""
    animals = rng.sample(list(ANIMAL_PLURALS), 5)
    target = animals[0]

    def gen(r: random.Random, k: int | None) -> Example:
        m = r.choice([2, 3, 3, 4])
        kinds = [r.choice(animals) for _ in range(m)]
        if target not in kinds and r.random() < 0.8:
            kinds[r.randrange(m)] = target
        counts = [r.randint(1, 9) for _ in kinds]
        groups = _join([f"{c} {a if c == 1 else ANIMAL_PLURALS[a]}" for a, c in zip(kinds, counts)])
        ans = sum(c for a, c in zip(kinds, counts) if a == target)
        return Example(_fill(r, r.choice(_COUNT_TEXTS), groups=(groups,)), str(ans))

    return _Spec(gen, f"count the {ANIMAL_PLURALS[target]}")
