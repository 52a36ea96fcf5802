"""Classification families (cls): topic, sentiment, keyword and many-way intent tasks."""

from __future__ import annotations

import random

from ..tasks import Example
from .registry import _family, _Spec
from .words import BINARY_LABELS, CATS, LABEL_POOLS, SCENES, _an, _cap, _fill, _join, _w

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
