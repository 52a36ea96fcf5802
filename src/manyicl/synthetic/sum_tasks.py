"""Summarisation families (sum): a short headline or recap of a generated text."""

from __future__ import annotations

import random

from ..tasks import Example
from .registry import _family, _Spec
from .words import CITIES, DAYS, NAMES, _an, _cap, _fill, _w

ORGS = _w(
    "city council,local school,university,football club,hospital,museum,public library,chamber of commerce"
)
EVENTS = _w(
    "music festival,recycling program,night bus service,summer camp,science fair,art exhibition,cycling race,"
    "food market,book fair,charity concert"
)
VERBS = (("announced", "announces"), ("approved", "approves"), ("cancelled", "cancels"), ("launched", "launches"),
         ("postponed", "postpones"), ("organized", "organizes"))  # fmt: skip
_LEAD = ("The {org} of {city} {v} {ev} on {day}.", "On {day}, the {org} in {city} {v} {ev}.")
_MIDDLE = (
    "{name}, a spokesperson, said the decision followed months of discussion.",
    "Officials said more details would be shared in the coming days.",
    "{name}, who leads the project, called it an important step for the community.",
    "The plan was first proposed by {name} two years ago.",
)
_END = (
    "Residents reacted with {feeling} to the news.",
    "The news spread quickly on social media.",
    "Local newspapers covered the story on the front page.",
    "Several neighbors told reporters they had expected it.",
)
_FEELINGS = _w("surprise,relief,enthusiasm,mixed feelings,cautious optimism")
_HEADLINES = {
    "city-first": "{City} {org} {vp} {ev}",
    "active": "{Org} {v} {aev} in {City}",
    "passive": "{Ev} {v} by {org} in {City}",
}


@_family("sum", False, "a short news text|write a headline for it|Text: |Summary:")
def _headline(rng: random.Random) -> _Spec:
    """A 3-sentence local news item -> a headline in the instance's fixed headline style."""
    style = rng.choice(list(_HEADLINES))

    def gen(r: random.Random, k: int | None) -> Example:
        org, city, ev, (v, vp) = r.choice(ORGS), r.choice(CITIES), r.choice(EVENTS), r.choice(VERBS)
        lead = r.choice(_LEAD).format(org=org, city=city, v=v, ev=_an(ev), day=r.choice(DAYS))
        mid = _fill(r, r.choice(_MIDDLE))
        end = _fill(r, r.choice(_END), feeling=_FEELINGS)
        head = _HEADLINES[style].format(
            City=city, org=org, Org=_cap(org), vp=vp, v=v, ev=ev, aev=_an(ev), Ev=_cap(ev)
        )
        return Example(f"{lead} {mid} {end}", head)

    return _Spec(gen, f"headline style {style}")


_TRIP = (
    "On {day}, {name} took the {vehicle} to {city}.",
    "{name} took an early {vehicle} to {city} on {day}.",
)
_TRIP_MIDDLE = (
    "At the {place}, {name} bought {item} for {friend}.",
    "{name} visited the {place} and bought {item} for {friend}.",
)
_TRIP_END = (
    "In the evening they had dinner together near the harbor.",
    "Afterwards they walked home through the park.",
    "Later they watched a movie at a small cinema.",
    "Then they shared a pot of tea at a quiet cafe.",
)
_TRIP_SUMMARY = {
    "purchase": "{name} bought {item} for {friend} in {city}.",
    "journey": "{name} traveled to {city} by {vehicle} on {day}.",
    "visit": "{name} visited the {place} in {city} on {day}.",
}


@_family("sum", True, "a short story|summarize it in one sentence|Text: |Summary:")
def _event_recap(rng: random.Random) -> _Spec:
    """A 3-sentence account of a trip -> one sentence keeping the facts the instance cares about."""
    focus = rng.choice(list(_TRIP_SUMMARY))

    def gen(r: random.Random, k: int | None) -> Example:
        name, friend = r.sample(NAMES, 2)
        s = dict(name=name, friend=friend, day=r.choice(DAYS), city=r.choice(CITIES))
        s.update(
            vehicle=r.choice(_w("train bus ferry tram")),
            place=r.choice(_w("museum market bookshop gallery bakery zoo")),
        )
        s["item"] = r.choice(
            _w("a scarf,a map,some bread,a vase,a painting,a book about birds,a wooden toy,fresh flowers")
        )
        text = " ".join(r.choice(part).format(**s) for part in (_TRIP, _TRIP_MIDDLE, _TRIP_END))
        return Example(text, _TRIP_SUMMARY[focus].format(**s))

    return _Spec(gen, f"keeps the {focus}")
