"""Shared vocabulary and text helpers of the synthetic suite (names, cities, label-word pools, slot filling)."""

from __future__ import annotations

import random
import re


def _w(s: str) -> tuple[str, ...]:
    """A word list: comma-separated when it has commas (multi-word items), else whitespace-separated."""
    return tuple(x.strip() for x in s.split(",")) if "," in s else tuple(s.split())


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

NAMES = _w(
    "Anna Ben Carla David Emma Felix Grace Hugo Iris Jack Kara Liam Mia Noah Olga Paul Rosa Sam Tara "
    "Victor Wendy Yusuf Zoe Omar Lena Ravi Nina Theo Priya Marco"
)
DAYS = _w("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
CITY_COUNTRY = {
    "Paris": "France", "Lyon": "France", "Nice": "France", "Rome": "Italy", "Milan": "Italy",
    "Naples": "Italy", "Madrid": "Spain", "Seville": "Spain", "Valencia": "Spain", "Berlin": "Germany",
    "Munich": "Germany", "Hamburg": "Germany", "Tokyo": "Japan", "Osaka": "Japan", "Kyoto": "Japan",
    "Lima": "Peru", "Cusco": "Peru", "Cairo": "Egypt", "Luxor": "Egypt", "Toronto": "Canada",
    "Vancouver": "Canada", "Montreal": "Canada", "Sydney": "Australia", "Perth": "Australia",
    "Oslo": "Norway", "Bergen": "Norway",
}  # fmt: skip
CITIES = tuple(CITY_COUNTRY)
COUNTRIES = tuple(dict.fromkeys(CITY_COUNTRY.values()))
SPOTS = _w(
    "old barn,train station,river bank,school gate,garden shed,market square,bus stop,library,bakery,"
    "harbor,town hall,playground"
)
_COMMON = {"name": NAMES, "city": CITIES, "day": DAYS, "spot": SPOTS}

# Arbitrary label words: an instance maps its classes onto words from one pool.
LABEL_POOLS = (
    _w("blue green red gold gray pink purple"),
    _w("alpha beta gamma delta sigma omega kappa"),
    _w("lion tiger eagle shark wolf bear otter"),
    _w("mars venus earth jupiter saturn mercury pluto"),
    _w("north south east west upper lower middle"),
)
BINARY_LABELS = (("yes", "no"), ("true", "false"), ("correct", "incorrect"), ("right", "wrong"), ("valid", "invalid"))  # fmt: skip
NLI_LABELS = (("entailment", "contradiction", "neutral"), ("true", "false", "unknown"), ("yes", "no", "maybe"),
              ("implied", "refuted", "undetermined"), ("supported", "opposed", "unclear"))  # fmt: skip

CATS = {
    "animal": _w("dog cat horse rabbit fox owl goat duck parrot turtle donkey hamster"),
    "vehicle": _w("bicycle truck tram scooter van canoe bus tractor motorbike taxi"),
    "food": _w("sandwich apple cake cheese banana muffin carrot cookie pear pretzel"),
    "tool": _w("hammer ladder shovel wrench rope bucket saw flashlight screwdriver drill"),
    "clothing": _w("scarf jacket hat boot glove sweater raincoat belt sock dress"),
    "instrument": _w("guitar piano violin drum cello trumpet flute harp banjo accordion"),
}
CAT_NAMES = {"animal": ("animal", "creature", "fauna"), "vehicle": ("vehicle", "transport"), "food": ("food", "snack"),
             "tool": ("tool", "equipment"), "clothing": ("clothing", "garment"), "instrument": ("instrument", "music")}  # fmt: skip
SCENES = (
    "{name} saw {items} near the {spot} on {day}.",
    "At the {spot} in {city}, {name} noticed {items}.",
    "{name} told us there were {items} behind the {spot}.",
    "In the photo from {city} you can see {items} next to the {spot}.",
    "On {day} morning {name} found {items} by the {spot}.",
)


def _an(word: str) -> str:
    return f"{'an' if word[0].lower() in 'aeiou' else 'a'} {word}"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _fill(rng: random.Random, template: str, **slots: tuple[str, ...]) -> str:
    """Fill ``{slot}``s left to right; a repeated key reuses its value, ``{x2}`` draws a different ``x``."""
    vals: dict[str, str] = {}
    used: dict[str, list[str]] = {}

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in vals:
            base = key.rstrip("0123456789")
            pool = slots[base] if base in slots else _COMMON[base]
            prev = used.setdefault(base, [])
            vals[key] = rng.choice([p for p in pool if p not in prev] if prev else pool)
            prev.append(vals[key])
        return vals[key]

    return re.sub(r"\{(\w+)\}", sub, template)
