"""Question-answering families (qa): look-ups, rankings and attributes stated in the input."""

from __future__ import annotations

import random

from ..tasks import Example
from .nli_tasks import JOBS
from .registry import _family, _Spec
from .words import CATS, CITIES, NAMES, _an, _w

PETS = _w("dog cat parrot hamster rabbit turtle goldfish lizard canary ferret")
COLORS = _w("red blue green yellow purple orange black white pink brown")
INSTRUMENTS = CATS["instrument"]
KV_RELATIONS = {
    "home city": ("{p} lives in {v}.", "Where does {p} live?", "Who lives in {v}?", CITIES),
    "job": ("{p} works as {av}.", "What is {p}'s job?", "Who works as {av}?", JOBS),
    "pet": ("{p} has a pet {v}.", "What pet does {p} have?", "Who has a pet {v}?", PETS),
    "color": ("{p}'s favorite color is {v}.", "What is {p}'s favorite color?", "Whose favorite color is {v}?", COLORS),
    "instrument": ("{p} plays the {v}.", "Which instrument does {p} play?", "Who plays the {v}?", INSTRUMENTS),
}  # fmt: skip


@_family("qa", False, "a few facts and a question|answer the question|Question: |Answer:")
def _kv_lookup(rng: random.Random) -> _Spec:
    """A few facts about people, then a question; answer with the looked-up word (forward and/or reverse)."""
    rel = rng.choice(list(KV_RELATIONS))
    direction = rng.choice(["forward", "reverse", "both"])
    fact, fwd, rev, pool = KV_RELATIONS[rel]

    def gen(r: random.Random, k: int | None) -> Example:
        m = r.randint(3, 5)
        people, values = r.sample(NAMES, m), r.sample(pool, m)
        facts = [fact.format(p=p, v=v, av=_an(v)) for p, v in zip(people, values)]
        i = r.randrange(m)
        reverse = direction == "reverse" or (direction == "both" and r.random() < 0.5)
        if reverse:
            q, a = rev.format(v=values[i], av=_an(values[i])), people[i]
        else:
            q, a = fwd.format(p=people[i]), values[i]
        return Example(" ".join(facts + [q]), a)

    return _Spec(gen, f"relation {rel}, {direction} questions")


COMPARATIVES = (
    ("taller", "shorter", "tallest", "shortest"),
    ("older", "younger", "oldest", "youngest"),
    ("faster", "slower", "fastest", "slowest"),
    ("heavier", "lighter", "heaviest", "lightest"),
    ("richer", "poorer", "richest", "poorest"),
)


@_family(
    "qa", False, "a few statements and a question with options|choose the correct option|Question: |Answer:"
)
def _ranking_mc(rng: random.Random) -> _Spec:
    """Chained comparisons between people, then who is at one extreme; multiple choice."""
    more, less, top, bottom = rng.choice(COMPARATIVES)
    ask = rng.choice(["top", "bottom", "both"])

    def gen(r: random.Random, k: int | None) -> Example:
        rank = r.sample(NAMES, r.choice([3, 4]))  # rank[0] is the most
        facts = [
            f"{a} is {more} than {b}." if r.random() < 0.5 else f"{b} is {less} than {a}."
            for a, b in zip(rank, rank[1:])
        ]
        r.shuffle(facts)
        is_top = ask == "top" or (ask == "both" and r.random() < 0.5)
        options = tuple(r.sample(rank, len(rank)))
        q = f"Who is the {top if is_top else bottom}? Options: {', '.join(options)}."
        return Example(" ".join(facts + [q]), rank[0] if is_top else rank[-1], options)

    asked = {"top": top, "bottom": bottom, "both": f"{top} or {bottom}"}[ask]
    return _Spec(gen, f"comparative {more}/{less}, asks for the {asked}", options=True)


CONTAINERS = _w("box jar bag drawer basket envelope chest tin")
ATTRS = {
    "color": _w("red blue green yellow black white purple orange"),
    "size": _w("big small tiny huge"),
    "material": _w("wooden metal glass plastic paper leather"),
}
SMALL_THINGS = _w("key coin ring letter stone shell button marble ticket feather candle map photo spoon")
_HOLDS = ("The {a} {c} holds {o}.", "Inside the {a} {c} there is {o}.", "The {a} {c} contains {o}.")


@_family("qa", True, "a short description and a question|answer the question|Question: |Answer:")
def _attribute_qa(rng: random.Random) -> _Spec:
    """Which object is in which described container (or the reverse); instance-specific answer form."""
    cont, kind = rng.choice(CONTAINERS), rng.choice(list(ATTRS))
    reverse, article = rng.random() < 0.4, rng.random() < 0.5

    def gen(r: random.Random, k: int | None) -> Example:
        m = r.randint(2, min(4, len(ATTRS[kind])))
        attrs, objs = r.sample(ATTRS[kind], m), r.sample(SMALL_THINGS, m)
        facts = [r.choice(_HOLDS).format(a=a, c=cont, o=_an(o)) for a, o in zip(attrs, objs)]
        i = r.randrange(m)
        if reverse:
            q = f"Which {cont} has the {objs[i]}?"
            a = f"the {attrs[i]} {cont}" if article else attrs[i]
        else:
            q = r.choice([f"What is in the {attrs[i]} {cont}?", f"What does the {attrs[i]} {cont} hold?"])
            a = _an(objs[i]) if article else objs[i]
        return Example(" ".join(facts + [q]), a)

    rule = f"{kind} of a {cont}, {'reverse' if reverse else 'forward'} questions, {'with' if article else 'no'} article"
    return _Spec(gen, rule)
