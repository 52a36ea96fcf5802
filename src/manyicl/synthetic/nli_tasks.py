"""Inference families (nli): a premise, a hypothesis, and a label word for how they relate."""

from __future__ import annotations

import random

from ..tasks import Example
from .registry import _family, _Spec
from .words import BINARY_LABELS, CITIES, CITY_COUNTRY, COUNTRIES, DAYS, NAMES, NLI_LABELS, _cap, _w

JOBS = _w("nurse baker farmer pilot teacher painter chef sailor librarian dentist mechanic plumber")
TOWNS = _w("Dover Millbrook Ashford Riverton Greenwich Oakdale Kingsport Fairview")
HABITS = (
    ("speak French", "speaks French"), ("own a bicycle", "owns a bicycle"), ("wake up early", "wakes up early"),
    ("play chess", "plays chess"), ("drink tea", "drinks tea"), ("wear a uniform", "wears a uniform"),
    ("grow tomatoes", "grows tomatoes"), ("sing in a choir", "sings in a choir"), ("keep a diary", "keeps a diary"),
    ("ride horses", "rides horses"), ("bake bread", "bakes bread"), ("read poetry", "reads poetry"),
)  # fmt: skip
_EVERY = ("Every {g} in {t} {p3}.", "All {g}s in {t} {p}.", "In {t}, every {g} {p3}.")
_NO = ("No {g} in {t} {p3}.", "None of the {g}s in {t} {p}.", "In {t}, no {g} {p3}.")
_MEMBER = ("{n} is a {g} in {t}.", "{n} works as a {g} in {t}.")
_NLI_PROMPT = "a premise and a hypothesis|decide how the hypothesis relates to the premise|Premise: |Answer:"


@_family("nli", False, _NLI_PROMPT)
def _entail_rules(rng: random.Random) -> _Spec:
    """A rule about a group plus a member of it; the hypothesis is implied, refuted or undetermined."""
    labels = rng.choice(NLI_LABELS)

    def gen(r: random.Random, k: int | None) -> Example:
        n, other = r.sample(NAMES, 2)
        g, t = r.choice(JOBS), r.choice(TOWNS)
        (p, p3), (q, q3) = r.sample(HABITS, 2)
        positive = r.random() < 0.5
        rule = r.choice(_EVERY if positive else _NO).format(g=g, t=t, p=p, p3=p3)
        yes, no = (f"{n} {p3}.", f"{n} does not {p}.") if positive else (f"{n} does not {p}.", f"{n} {p3}.")
        if k == 2:
            hyp = r.choice([f"{n} {q3}.", f"{n} does not {q}.", f"{other} {p3}.", f"{other} does not {p}."])
        else:
            hyp = (yes, no)[k]
        premise = f"{_cap(rule)} {r.choice(_MEMBER).format(n=n, g=g, t=t)}"
        return Example(f"{premise} Hypothesis: {hyp}", labels[k])

    rule = f"{labels[0]} / {labels[1]} / {labels[2]}"
    return _Spec(gen, rule, labels)


_VISIT = (
    "{n} is spending {day} in {city}.",
    "{n} just landed in {city} for a conference.",
    "{n} is visiting a friend in {city} this week.",
    "This morning {n} sent a postcard from a cafe in {city}.",
)
_IS_IN = ("{n} is in {c}.", "{n} is currently in {c}.", "Right now {n} is in {c}.")


@_family("nli", False, _NLI_PROMPT)
def _location_inference(rng: random.Random) -> _Spec:
    """Someone is in a city; a hypothesis on their country is implied/refuted, on someone else undetermined."""
    labels = rng.choice(NLI_LABELS)

    def gen(r: random.Random, k: int | None) -> Example:
        n, other = r.sample(NAMES, 2)
        city, day = r.choice(CITIES), r.choice(DAYS)
        true_c = CITY_COUNTRY[city]
        c = [true_c, r.choice([x for x in COUNTRIES if x != true_c]), r.choice(COUNTRIES)][k]
        hyp = r.choice(_IS_IN).format(n=other if k == 2 else n, c=c)
        return Example(f"{r.choice(_VISIT).format(n=n, city=city, day=day)} Hypothesis: {hyp}", labels[k])

    return _Spec(gen, f"{labels[0]} / {labels[1]} / {labels[2]}", labels)


THINGS = _w("apples coins stamps marbles books pencils stickers postcards shells cookies plants candles")
_HAS = (
    "{n} has {x} {t}.",
    "After a busy week, {n} now has {x} {t}.",
    "Right now {n} has {x} {t} at home.",
    "{n} keeps {x} {t} in a box under the bed.",
)
_RELS = {
    "more than": lambda x, m: x > m,
    "fewer than": lambda x, m: x < m,
    "at least": lambda x, m: x >= m,
    "at most": lambda x, m: x <= m,
    "exactly": lambda x, m: x == m,
}


@_family("nli", True, "a premise and a hypothesis|decide whether the hypothesis holds|Premise: |Answer:")
def _numeric_compare(rng: random.Random) -> _Spec:
    """A count, and a comparison of it (more than, at most, exactly, ...) -> a true or a false word."""
    labels = rng.choice(BINARY_LABELS)

    def gen(r: random.Random, k: int | None) -> Example:
        n, t, x = r.choice(NAMES), r.choice(THINGS), r.randint(2, 60)
        while True:
            rel = r.choice(list(_RELS))
            cands = [m for m in range(max(1, x - 12), x + 13) if _RELS[rel](x, m) == (k == 0)]
            if cands:
                break
        premise = r.choice(_HAS).format(n=n, x=x, t=t)
        return Example(f"{premise} Hypothesis: {n} has {rel} {r.choice(cands)} {t}.", labels[k])

    return _Spec(gen, f"holds -> {labels[0]}, else {labels[1]}", labels)
