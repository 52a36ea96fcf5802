"""A built-in synthetic task suite: natural-looking tasks generated from a seed, no data, no network.

Each *family* is a kind of task with a hidden rule (which topic maps to which label word, which animal
to count, which coefficient to apply, ...). Each *instance* of a family draws its own rule parameters
from ``random.Random(f"{seed}:{family}:{instance}")``, so the rule has to be inferred from the in-context
examples; the instruction only describes the format. Families marked ``held_out`` are reserved for
evaluation and never meta-trained on. Same arguments, same tasks (byte-identical, in the same order).

Classification families (cls, nli) draw labels in exact rotation, so classes are balanced; no input
repeats within a task, and no test input appears in train. A family whose input space is too small for
the requested sizes raises ``ValueError`` instead of looping.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .tasks import CATEGORIES, Example, Task, Template

_MAX_TRIES = 1000
"""Draws allowed per example before a family is declared too small for the requested sizes."""


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


# --------------------------------------------------------------------------------------------
# Registry and generation
# --------------------------------------------------------------------------------------------


@dataclass
class _Spec:
    """One instance's hidden rule and its example generator."""

    gen: Callable[[random.Random, int | None], Example]
    """Draws one example; cls/nli get the index of the label to produce, other categories None."""
    rule: str
    """The instance's hidden rule in words (goes into Task.description, never into the prompt)."""
    labels: tuple[str, ...] = ()
    options: bool = False
    """Examples carry their own multiple-choice options."""


@dataclass(frozen=True)
class Family:
    name: str
    category: str
    held_out: bool
    description: str
    """What the hidden rule is (one line)."""
    make: Callable[[random.Random], _Spec] = field(repr=False, compare=False)
    """Draws an instance's rule from the RNG and returns its generator."""
    prompt: tuple[str, str, str, str] = ("an input", "produce the output", "Input: ", "Output:")
    """(what an input is, what to do, input prefix, output prefix): format only, never the rule."""


FAMILIES: dict[str, Family] = {}
_METRICS = {"cls": "accuracy", "nli": "accuracy", "qa": "exact_match", "mlcls": "multilabel_f1", "sum": "rouge_l",
            "math": "math_accuracy", "other": "exact_match"}  # fmt: skip


def _family(category: str, held_out: bool, prompt: str):
    """Register a family; ``prompt`` is 'what|do|input prefix|output prefix', the docstring its description."""
    assert category in CATEGORIES

    def register(fn: Callable[[random.Random], _Spec]) -> Callable[[random.Random], _Spec]:
        name = fn.__name__.lstrip("_")
        what, do, ip, op = prompt.split("|")
        desc = (fn.__doc__ or "").strip().rstrip(".")
        FAMILIES[name] = Family(name, category, held_out, desc, fn, (what, do, ip, op))
        return fn

    return register


def make_task(
    family: str, instance: int = 0, seed: int = 0, train_size: int = 400, test_size: int = 100
) -> Task:
    """Instance ``instance`` of ``family``: its own hidden rule, ``train`` and ``test`` splits of exactly
    ``train_size`` and ``test_size`` examples (both at least 1)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown synthetic family {family!r}; known: {', '.join(FAMILIES)}")
    if train_size < 1 or test_size < 1:
        raise ValueError(f"train_size and test_size must be at least 1, got {train_size} and {test_size}")
    fam = FAMILIES[family]
    rng = random.Random(f"{seed}:{family}:{instance}")
    spec = fam.make(rng)
    name = f"{family}_{instance}"
    balanced = fam.category in ("cls", "nli")
    seen: set[str] = set()
    splits = {
        split: _generate(spec, rng, n, seen, balanced, f"{name}/{split}")
        for split, n in (("train", train_size), ("test", test_size))
    }
    metric = _METRICS[fam.category] if not spec.options else "accuracy"
    what, do, input_prefix, output_prefix = fam.prompt
    template = Template(
        instruction=f"Task: You will receive {what}. Your task is to {do}. Here are some examples:",
        instruction_separator="\n", input_prefix=input_prefix, input_output_separator="\n",
        output_prefix=output_prefix, target_prefix=" ", example_separator="\n",
    )  # fmt: skip
    return Task(
        name=name, category=fam.category, template=template, splits=splits, metric=metric, labels=spec.labels,
        label_separator=", ", family=family, description=f"{fam.description}. This instance: {spec.rule}.",
    )  # fmt: skip


def _generate(
    spec: _Spec, rng: random.Random, n: int, seen: set[str], balanced: bool, where: str
) -> list[Example]:
    k = len(spec.labels)
    wants: list[int | None] = [i % k for i in range(n)] if balanced else [None] * n
    rng.shuffle(wants)
    out = []
    for want in wants:
        for _ in range(_MAX_TRIES):
            ex = spec.gen(rng, want)
            if ex.input not in seen:
                break
        else:
            raise ValueError(
                f"{where}: no new distinct input after {_MAX_TRIES} draws; this family's input space is "
                f"too small for {n} examples here; ask for fewer train/test examples"
            )
        if want is not None and ex.output != spec.labels[want]:
            raise AssertionError(f"{where}: generator produced {ex.output!r}, wanted {spec.labels[want]!r}")
        seen.add(ex.input)
        out.append(ex)
    return out


def synthetic_suite(
    seed: int = 0, instances: int = 4, train_size: int = 400, test_size: int = 100, split: str = "all"
) -> list[Task]:
    """``instances`` tasks of every family in ``split`` ('all', 'held_in' or 'held_out'), family by family."""
    names = {"all": tuple(FAMILIES), "held_in": HELD_IN, "held_out": HELD_OUT}.get(split)
    if names is None:
        raise ValueError(f"split must be 'all', 'held_in' or 'held_out', got {split!r}")
    if instances < 1:
        raise ValueError(f"instances must be at least 1, got {instances}")
    return [make_task(f, i, seed, train_size, test_size) for f in names for i in range(instances)]


# --------------------------------------------------------------------------------------------
# cls
# --------------------------------------------------------------------------------------------

TOPICS = {
    "sports": (_w("football,tennis,basketball,hockey,volleyball,rugby,cricket,baseball"), (
        "{name} scored twice in the last minutes of the {x} match in {city} on {day}.",
        "The {x} team from {city} trained hard all week before the big game.",
        "After losing the {x} final, {name} promised the fans a better season.",
        "Thousands of fans in {city} cheered when the {x} champions came home on {day}.",
    )),
    "weather": (_w("rain,snow,fog,strong wind,thunderstorms,hail,freezing drizzle"), (
        "Forecasters expect {x} across {city} on {day} afternoon, so take a warm coat.",
        "{name} checked the forecast and saw that {x} will reach {city} by {day}.",
        "The temperature in {city} dropped sharply overnight as {x} moved in from the coast.",
        "Schools in {city} closed early on {day} because of the {x}.",
    )),
    "food": (_w("soup,curry,stew,omelette,salad,risotto,lasagna,noodle soup,chili"), (
        "{name} cooked a spicy {x} for dinner and added fresh herbs from the garden.",
        "The new restaurant in {city} serves the best {x} that {name} has ever tasted.",
        "For lunch on {day}, {name} tried a recipe for {x} with garlic and lemon.",
        "The chef in {city} explained that the secret of a good {x} is patience.",
    )),
    "music": (_w("guitar,piano,violin,harp,cello,trumpet,flute,saxophone"), (
        "{name} practiced the {x} for three hours before the concert in {city}.",
        "The band's new album features a beautiful {x} solo that {name} recorded on {day}.",
        "On {day} night, {name} played the {x} at a small jazz club in {city}.",
        "The orchestra in {city} is looking for a {x} player for its spring tour.",
    )),
    "travel": (_w("suitcase,passport,map,backpack,camera,guidebook"), (
        "{name} packed a {x} and caught an early train to {city} on {day}.",
        "Our flight to {city} was delayed, so {name} bought a new {x} at the airport.",
        "{name} booked a hotel near the old harbor in {city} and forgot the {x} at home.",
        "On the first day of the trip to {city}, {name} lost the {x} at the station.",
    )),
    "technology": (_w("laptop,phone,tablet,smartwatch,router,printer,camera app"), (
        "{name} updated the software on the {x} and it now starts much faster.",
        "The company in {city} released a new {x} with a longer battery life on {day}.",
        "On {day}, {name} fixed a bug that made the {x} crash at startup.",
        "Engineers in {city} say the next {x} will connect to the cloud automatically.",
    )),
}  # fmt: skip


@_family("cls", False, "a sentence|assign it one of the labels|Sentence: |Label:")
def _topic_labels(rng: random.Random) -> _Spec:
    """Topic of a sentence (sports, weather, food, ...) -> an arbitrary label word per topic."""
    topics = sorted(rng.sample(list(TOPICS), rng.choice([3, 4, 5, 6])), key=list(TOPICS).index)
    words = tuple(rng.sample(rng.choice(LABEL_POOLS), len(topics)))

    def gen(r: random.Random, k: int | None) -> Example:
        xs, temps = TOPICS[topics[k]]
        return Example(_fill(r, r.choice(temps), x=xs), words[k])

    rule = ", ".join(f"{t} -> {w}" for t, w in zip(topics, words))
    return _Spec(gen, rule, words)


_REVIEW = {
    "subj": _w(
        "the hotel,the pizza,the movie,this phone,the concert,the service,the museum tour,the new album,"
        "our guide,the coffee,the bakery,the train ride,the hostel,the play,the sushi,the spa"
    ),
    "pos": _w("wonderful delightful excellent superb charming fantastic pleasant brilliant lovely"),
    "neg": _w("terrible awful disappointing dreadful dull miserable horrible poor"),
    "posc": _w(
        "I would happily go back,I will recommend it to all my friends,it was worth every penny,"
        "we left with big smiles,I cannot wait to return"
    ),
    "negc": _w(
        "I want my money back,I will never go back,it was a complete waste of time,"
        "we left early and annoyed,I regret going"
    ),
}
REVIEWS = (
    "{subj} was {adj} and {adj2}, and {clause}.",
    "{name} thought {subj} in {city} was {adj}; {clause}.",
    "Honestly, {subj} was {adj}, and {clause}.",
    "We visited {city} on {day} and {subj} was {adj}, so {clause}.",
    "According to {name}, {subj} was {adj} and {adj2}; {clause}.",
)


@_family("cls", False, "a short review|assign it one of the labels|Review: |Label:")
def _sentiment_words(rng: random.Random) -> _Spec:
    """Sentiment of a short review -> an arbitrary word for positive and one for negative."""
    words = tuple(rng.sample(rng.choice(LABEL_POOLS), 2))

    def gen(r: random.Random, k: int | None) -> Example:
        pol = ("pos", "neg")[k]
        text = _fill(r, r.choice(REVIEWS), subj=_REVIEW["subj"], adj=_REVIEW[pol], clause=_REVIEW[pol + "c"])
        return Example(_cap(text), words[k])

    rule = f"positive -> {words[0]}, negative -> {words[1]}"
    return _Spec(gen, rule, words)


def _scene(r: random.Random, items: list[str]) -> str:
    r.shuffle(items)
    return _fill(r, r.choice(SCENES), items=(_join([_an(x) for x in items]),))


@_family("cls", False, "a sentence|answer with one of the labels|Sentence: |Answer:")
def _keyword_class(rng: random.Random) -> _Spec:
    """Does the sentence mention an item of the instance's hidden category (animal, tool, ...)."""
    target = rng.choice(list(CATS))
    labels = rng.choice(BINARY_LABELS[:2] + (("present", "absent"), ("found", "missing")))
    others = [x for c, xs in CATS.items() if c != target for x in xs]

    def gen(r: random.Random, k: int | None) -> Example:
        n = r.choice([1, 2, 2, 3])
        items = r.sample(others, n) if k else [r.choice(CATS[target])] + r.sample(others, n - 1)
        return Example(_scene(r, items), labels[k])

    rule = f"mentions {_an(target)} -> {labels[0]}, else {labels[1]}"
    return _Spec(gen, rule, labels)


INTENTS = (
    (("restaurant reservation", "book restaurant"), (
        "book a table for {num} at {acuisine} place in {city} {when}",
        "can you reserve dinner for {num} people at the {cuisine} restaurant {when}",
        "I need a table for {num} at {name}'s favorite {cuisine} spot {when}")),
    (("weather query", "weather"), (
        "what will the weather be like in {city} {when}",
        "is it going to rain in {city} {when}",
        "should I bring an umbrella to {city} {when}")),
    (("set alarm", "alarm"), (
        "set an alarm for {clock} {when}",
        "wake me up at {clock} {when}",
        "I need an alarm at {clock} {when} so I don't miss the {event}")),
    (("play music", "music request"), (
        "play some {genre} music while I {chore}",
        "put on a {genre} playlist for {name}",
        "I want to listen to {genre} songs {when}")),
    (("flight status", "flight info"), (
        "is my flight to {city} on time {when}",
        "has the {clock} flight to {city} been delayed",
        "check the status of my flight from {city} to {city2}")),
    (("transfer money", "money transfer"), (
        "send {money} dollars to {name} from my {acct} account",
        "transfer {money} dollars to {name} {when}",
        "move {money} dollars into {name}'s {acct} account")),
    (("check balance", "account balance"), (
        "how much money is left in my {acct} account {when}",
        "what is the current balance of my {acct} account",
        "tell me if my {acct} account has more than {money} dollars")),
    (("translate", "translation"), (
        "how do you say {phrase} in {lang}",
        "translate {phrase} into {lang} for me",
        "what is the {lang} way to say {phrase}")),
    (("set timer", "timer"), (
        "set a timer for {mins} minutes for the {dish}",
        "start a {mins} minute timer",
        "count down {mins} minutes while the {dish} is in the oven")),
    (("create reminder", "reminder"), (
        "remind me to call {name} {when}",
        "create a reminder to pay the {bill} bill {when}",
        "don't let me forget to email {name} at {clock}")),
    (("schedule meeting", "calendar"), (
        "schedule a meeting with {name} {when} at {clock}",
        "put lunch with {name} on my calendar {when}",
        "add a call with {name} and {name2} to my agenda {when}")),
    (("order food", "food delivery"), (
        "order a large {pizza} pizza for delivery to {name}'s place",
        "I want {food} delivered to my apartment {when}",
        "get me some {food} from the place near the {place}")),
    (("book taxi", "ride booking"), (
        "call a taxi to take me to the {place} at {clock}",
        "I need a ride to the {place} {when}",
        "book a cab from the {place} to the {place2}")),
    (("directions", "navigation"), (
        "how do I get to the {place} from here",
        "what is the fastest route to the {place} in {city}",
        "give me walking directions to the nearest {shop}")),
    (("exchange rate", "currency exchange"), (
        "how many {cur} do I get for {money} dollars",
        "what is the exchange rate between dollars and {cur} {when}",
        "convert {money} {cur} into dollars")),
    (("recipe", "cooking help"), (
        "how do I make {dish} at home",
        "give me a recipe for {dish} with {ingredient}",
        "what do I need to cook {dish} for {num} people")),
    (("report lost card", "lost card"), (
        "I lost my {card} card somewhere in {city}",
        "my {card} card was stolen {when}, please block it",
        "freeze my {card} card because I can't find it since {day}")),
    (("shopping list", "grocery list"), (
        "add {grocery} to my shopping list",
        "put {num} bottles of {drink} on the grocery list",
        "we are out of {grocery} and {grocery2}, add them to the list")),
    (("define word", "definition"), (
        "what does the word {word} mean",
        "define {word} for me",
        "give me the meaning of the word {word} in simple terms")),
    (("tell joke", "joke"), (
        "tell me a joke about {topic}",
        "say something funny about {topic} to cheer up {name}",
        "I need a good joke about {topic} for my speech {when}")),
    (("smart lights", "lighting control"), (
        "turn off the lights in the {room}",
        "dim the {room} lights to {pct} percent",
        "switch on the lamp in the {room} {when}")),
)  # fmt: skip
_INTENT_SLOTS = {
    "num": _w("two three four five six eight"),
    "when": _w(
        "tonight,tomorrow,this weekend,on Friday,on Monday morning,next week,tomorrow evening,on Saturday"
    ),
    "cuisine": _w("Italian Indian Ethiopian Thai Greek Mexican Korean"),
    "acuisine": _w("an Italian,an Indian,an Ethiopian,a Thai,a Greek,a Mexican,a Korean"),
    "clock": tuple(
        f"{h}:{m:02d} {ap}" for h in (5, 6, 7, 8, 9) for m in (0, 15, 30, 45) for ap in ("am", "pm")
    ),
    "event": _w("bus,train,meeting,flight,interview,ferry"),
    "genre": _w("jazz,rock,classical,country,reggae,hip hop,blues,pop,folk,soul,techno"),
    "chore": _w("cook,clean the kitchen,work,do the dishes,study,run"),
    "money": _w("20 50 75 100 150 200 250 300 500 1000"),
    "acct": _w("checking savings business joint student"),
    "phrase": _w(
        "good morning,thank you,where is the station,I am hungry,how much is this,see you later,"
        "happy birthday,excuse me,I am lost"
    ),
    "lang": _w("French Spanish German Italian Japanese Portuguese Dutch Korean"),
    "mins": _w("3 5 8 10 12 15 20 25 30 40 45"),
    "dish": _w("pasta,rice,cake,soup,bread,cookies,lasagna,curry,pancakes,roast chicken"),
    "bill": _w("electricity water phone internet gas"),
    "pizza": _w("pepperoni mushroom margherita veggie cheese"),
    "food": _w("sushi,tacos,noodles,curry,burgers,dumplings,falafel,pad thai"),
    "place": _w(
        "train station,airport,stadium,museum,hospital,central library,harbor,shopping mall,university"
    ),
    "shop": _w("gas station,pharmacy,bakery,cash machine,post office,supermarket"),
    "cur": _w("euros yen pounds pesos rupees francs"),
    "ingredient": _w("chicken mushrooms spinach tomatoes cheese beans tofu lemon"),
    "card": _w("credit debit bank travel"),
    "grocery": _w("milk eggs bread butter rice onions apples coffee flour yogurt cheese bananas"),
    "drink": _w("water juice milk soda lemonade"),
    "word": _w(
        "serendipity ephemeral ubiquitous meticulous gregarious lethargic pragmatic eloquent resilient "
        "ambiguous candid frugal nostalgia whimsical tenacious benevolent diligent ominous quaint verbose "
        "zealous cryptic lucid mundane"
    ),
    "topic": _w("cats dogs programmers doctors teachers penguins coffee math pirates vegetables"),
    "room": _w("kitchen,bedroom,living room,bathroom,garage,office,hallway,basement"),
    "pct": _w("10 20 30 40 50 60 70 80"),
}
_OPENERS = _w(",,hey,hi,okay,please,quick question,excuse me")


@_family("cls", True, "a request to a voice assistant|classify the intent of the request|Text: |Intent:")
def _intent_many(rng: random.Random) -> _Spec:
    """Intent of a short assistant request (12-18 of 21 intents, instance-specific label names)."""
    chosen = sorted(rng.sample(range(len(INTENTS)), rng.randint(12, 18)))
    labels = tuple(rng.choice(INTENTS[i][0]) for i in chosen)

    def gen(r: random.Random, k: int | None) -> Example:
        text = _fill(r, r.choice(INTENTS[chosen[k]][1]), **_INTENT_SLOTS)
        opener = r.choice(_OPENERS)
        return Example(f"{opener}, {text}" if opener else text, labels[k])

    return _Spec(gen, f"{len(labels)} intents named {', '.join(labels)}", labels)


# --------------------------------------------------------------------------------------------
# nli
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# qa
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# mlcls
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# sum
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# math
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# other
# --------------------------------------------------------------------------------------------

_SENT_PARTS = {
    "verb": _w("painted cleaned found moved sold carried fixed opened washed borrowed"),
    "adj": _w("old small red heavy broken new wooden shiny"),
    "noun": _w("fence chair door bike lamp table box boat kettle ladder"),
    "tail": _w(",,yesterday,near the lake,after lunch,in the garden,on Sunday,before dinner"),
}
_WORD_OPS = {
    "reverse": lambda ws: ws[::-1],
    "sort": lambda ws: sorted(ws, key=lambda w: (w.lower(), w)),
    "swap ends": lambda ws: [ws[-1]] + ws[1:-1] + [ws[0]],
    "rotate": lambda ws: ws[1:] + ws[:1],
}


@_family("other", False, "a sentence|rewrite it|Sentence: |Answer:")
def _word_order(rng: random.Random) -> _Spec:
    """A hidden word-order operation (reverse, sort, swap first and last, rotate)."""
    op = rng.choice(list(_WORD_OPS))

    def gen(r: random.Random, k: int | None) -> Example:
        text = _fill(r, "{name} {verb} the {adj} {noun} {tail}", **_SENT_PARTS).strip()
        return Example(text, " ".join(_WORD_OPS[op](text.split())))

    return _Spec(gen, f"word operation {op}")


_ORG_PARTS = {
    "adj": _w("National Royal Global Central Northern Independent Modern United Coastal Regional"),
    "noun": _w("Museum Institute Society Council League Academy Bureau Agency Center Foundation"),
    "field": _w(
        "Art Science Music History Education Research Sports Wildlife Technology Health Design Trade"
    ),
}
_SMALL_WORDS = {"of", "for", "and", "the"}
_ACRONYMS = {
    "all initials": lambda ws: "".join(w[0].upper() for w in ws),
    "content initials": lambda ws: "".join(w[0] for w in ws if w.lower() not in _SMALL_WORDS),
    "dotted initials": lambda ws: "".join(w[0] + "." for w in ws if w.lower() not in _SMALL_WORDS),
    "lowercase initials": lambda ws: "".join(w[0].lower() for w in ws if w.lower() not in _SMALL_WORDS),
}
_ORG_FORMS = (
    "{adj} {noun} of {field}",
    "{adj} {noun} for {field} and {field2}",
    "the {adj} {noun} of {field} and {field2}",
    "{adj} {adj2} {noun} for {field}",
    "{noun} of {adj} {field}",
)


@_family("other", False, "the name of an organization|abbreviate it|Name: |Answer:")
def _acronym(rng: random.Random) -> _Spec:
    """An organisation name -> its abbreviation in a hidden style (which words, case, dots)."""
    style = rng.choice(list(_ACRONYMS))

    def gen(r: random.Random, k: int | None) -> Example:
        text = _cap(_fill(r, r.choice(_ORG_FORMS), **_ORG_PARTS))
        return Example(text, _ACRONYMS[style](text.split()))

    return _Spec(gen, style)


CIPHER_VOCAB = {
    "det": _w("the my your"),
    "adj": _w("big small red old new happy quiet dark"),
    "noun": _w("dog cat house tree river bird car book girl boy horse song"),
    "vt": _w("sees likes finds takes wants paints"),
    "vi": _w("sleeps runs sings falls"),
}
_CIPHER_FORMS = ("det noun vi", "det adj noun vi", "det noun vt det noun", "det adj noun vt det noun",
                 "det noun vt det adj noun", "det adj noun vt det adj noun")  # fmt: skip


def _pseudo_words(rng: random.Random, n: int, avoid: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        word = "".join(
            rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.choice([2, 2, 3]))
        )
        if rng.random() < 0.3:
            word += rng.choice("lnrs")
        if word not in avoid and word not in out:
            out.append(word)
    return out


@_family("other", True, "a short English phrase|translate it|English: |Translation:")
def _word_cipher(rng: random.Random) -> _Spec:
    """Word-by-word translation into an invented language with an instance-specific lexicon."""
    english = [w for ws in CIPHER_VOCAB.values() for w in ws]
    lexicon = dict(zip(english, _pseudo_words(rng, len(english), set(english))))

    def gen(r: random.Random, k: int | None) -> Example:
        words: list[str] = []
        for slot in r.choice(_CIPHER_FORMS).split():
            words.append(r.choice([w for w in CIPHER_VOCAB[slot] if slot == "det" or w not in words]))
        return Example(" ".join(words), " ".join(lexicon[w] for w in words))

    sample = ", ".join(f"{e}={lexicon[e]}" for e in english[:4])
    return _Spec(gen, f"lexicon {sample}, ...")


HELD_OUT: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.held_out)
HELD_IN: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if not f.held_out)
