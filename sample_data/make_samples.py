"""Write zbatch's example inputs: reviews, news, support tickets and chat snippets.

    .venv/bin/python sample_data/make_samples.py          # writes next to this script
    .venv/bin/python sample_data/make_samples.py --out /tmp/samples --seed 7

Every text is composed from the hand-written fragments below with ``random.Random``,
so the output is the same on every run for a given seed. Each file has its own
generator (seeded with "<seed>-<file>"), so changing one does not reshuffle the others.
Only the standard library is used, plus pyarrow for ``news.parquet``.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

DEFAULT_SEED = 20240917
HERE = Path(__file__).resolve().parent

N_REVIEWS = 300
N_NEWS = 300
N_TICKETS = 200
N_CHATS = 100

SUPPORT_SYSTEM = (
    "You triage customer support tickets. "
    "Answer with exactly one word: billing, shipping, account, bug or other."
)


T = TypeVar("T")


def pick(rng: random.Random, items: Sequence[T]) -> T:
    """One item of a non-empty sequence."""
    return items[rng.randrange(len(items))]


def lower_first(sentence: str) -> str:
    """The sentence with its first letter in lower case (for joining after "but" etc.)."""
    if sentence.startswith("I ") or sentence.startswith("I'"):
        return sentence
    return sentence[:1].lower() + sentence[1:]


def unique(rng: random.Random, make: Callable[[random.Random], str], seen: set[str]) -> str:
    """A text from ``make`` that has not been produced before (a few tries, then any)."""
    text = make(rng)
    for _ in range(20):
        if text not in seen:
            break
        text = make(rng)
    seen.add(text)
    return text


# --------------------------------------------------------------------------------------
# Product reviews
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Aspect:
    """Sentences about one aspect of a product, by polarity.

    Each sentence starts with a common word (never a name), so that lower_first()
    can join it after "That said," or "My only gripe:".
    """

    pos: Sequence[str]
    neg: Sequence[str]
    neu: Sequence[str]

    def sentences(self, polarity: str) -> Sequence[str]:
        return {"pos": self.pos, "neg": self.neg, "neu": self.neu}[polarity]


# Aspects any product can have.
GENERIC_ASPECTS: dict[str, Aspect] = {
    "price": Aspect(
        pos=[
            "The price is fair for what you get.",
            "For the money, it's hard to beat.",
            "It was on sale when I bought it, but I'd happily pay full price.",
        ],
        neg=[
            "It's far too expensive for the quality.",
            "At this price I expected a lot more.",
            "You can find better for half the money.",
        ],
        neu=["The price is about what you'd expect.", "It's neither cheap nor expensive."],
    ),
    "delivery": Aspect(
        pos=[
            "Delivery was quick, two days door to door.",
            "It arrived a day earlier than promised.",
        ],
        neg=[
            "Delivery took almost three weeks.",
            "The courier left it in the rain outside the building.",
        ],
        neu=["Delivery took about a week, as stated."],
    ),
    "packaging": Aspect(
        pos=[
            "The packaging was minimal and fully recyclable, which I appreciate.",
            "It came well packed, with no plastic.",
        ],
        neg=[
            "The box was crushed and one corner was scuffed.",
            "There was an absurd amount of plastic in the box.",
        ],
        neu=["The packaging is plain cardboard, nothing special."],
    ),
    "support": Aspect(
        pos=[
            "Customer service answered my question within an hour.",
            "When I had a question, the support team was friendly and helpful.",
        ],
        neg=[
            "Customer service never replied to my two emails.",
            "Support kept sending me the same copy-pasted answer.",
        ],
        neu=["I contacted support once and got a standard reply after a few days."],
    ),
}

# Aspects shared by several products.
SHARED_ASPECTS: dict[str, Aspect] = {
    "build": Aspect(
        pos=["It feels solid and well made.", "The finish is lovely and nothing rattles."],
        neg=[
            "It feels flimsy, and a part cracked in the first week.",
            "One of the screws came loose after a month.",
        ],
        neu=["The build is okay, though some parts feel a bit plasticky."],
    ),
    "looks": Aspect(
        pos=["It looks even better than in the photos."],
        neg=["The colour is nothing like the photos."],
        neu=["It looks fine, a little plainer than pictured."],
    ),
    "cleaning": Aspect(
        pos=["Cleaning takes thirty seconds under the tap.", "It's very easy to clean."],
        neg=[
            "Cleaning it is a nightmare, there are too many small crevices.",
            "It stains easily and never looks clean again.",
        ],
        neu=["Cleaning is a bit fiddly but manageable."],
    ),
    "battery": Aspect(
        pos=[
            "Battery life is excellent, I charge it about once a week.",
            "The battery easily lasts a full day.",
        ],
        neg=[
            "The battery barely lasts three hours.",
            "Battery life dropped noticeably after two months.",
        ],
        neu=["Battery life matches the spec sheet, more or less."],
    ),
    "pairing": Aspect(
        pos=[
            "Pairing with my phone took seconds and the connection never drops.",
            "It switches between my laptop and phone without any fuss.",
        ],
        neg=["The connection drops every few minutes.", "It refuses to pair with my laptop."],
        neu=["Pairing works, though it sometimes needs a second try."],
    ),
    "sound": Aspect(
        pos=[
            "The sound is rich, with surprisingly deep bass.",
            "Vocals are crisp and clear, even at low volume.",
        ],
        neg=[
            "The sound is tinny and distorts at higher volume.",
            "Bass is basically non-existent.",
        ],
        neu=["The sound is decent, nothing to write home about."],
    ),
    "weight": Aspect(
        pos=["It's impressively light."],
        neg=["It's much heavier than the listing suggests."],
        neu=["The weight is about average for this kind of thing."],
    ),
    "rain": Aspect(
        pos=["It kept everything dry through a full day of rain in Snowdonia."],
        neg=["It leaked in the first proper downpour."],
        neu=["It copes with light rain; I wouldn't trust it in a storm."],
    ),
    "app": Aspect(
        pos=["Setup took five minutes, app included."],
        neg=["The app kept crashing during setup and I gave up twice."],
        neu=["Setup was a little confusing, but I got there in the end."],
    ),
    "heating": Aspect(
        pos=["It heats up fast and evenly."],
        neg=["It takes forever to heat up."],
        neu=["It heats up at a normal speed, neither fast nor slow."],
    ),
}

# Product -> its own aspects (names of SHARED_ASPECTS, or Aspect objects).
PRODUCTS: dict[str, dict[str, str | Aspect]] = {
    "Brava 12-Cup Coffee Maker": {
        "coffee": Aspect(
            pos=[
                "The coffee is consistently excellent. ☕",
                "It makes a full pot in about six minutes, and the coffee stays hot.",
            ],
            neg=[
                "The coffee tastes burnt after twenty minutes on the hot plate.",
                "It drips all over the counter every time I pour.",
            ],
            neu=["The coffee is fine, comparable to any other filter machine."],
        ),
        "timer": Aspect(
            pos=["Waking up to fresh coffee thanks to the timer is a small luxury."],
            neg=["The timer resets every time there's a power cut."],
            neu=["The timer works, but the buttons are fiddly."],
        ),
        "cleaning": "cleaning",
        "build": "build",
    },
    "Crème Brûlée Kitchen Torch": {
        "flame": Aspect(
            pos=["The flame is steady and easy to adjust, perfect for caramelising sugar."],
            neg=["The flame sputters and goes out halfway through."],
            neu=["The flame is adequate for desserts, too weak for anything else."],
        ),
        "safety": Aspect(
            pos=["The safety lock is reassuring with kids around."],
            neg=["The ignition button is stiff and often needs several clicks."],
            neu=["The safety lock takes some getting used to."],
        ),
        "build": "build",
    },
    "山水 Bamboo Cutting Board": {
        "surface": Aspect(
            pos=["It's gentle on my knives and doesn't slide around."],
            neg=["It warped after a couple of weeks, even though I never soaked it."],
            neu=["The surface shows knife marks quickly, as bamboo does."],
        ),
        "cleaning": "cleaning",
        "looks": "looks",
    },
    "Kettlewell Gooseneck Kettle": {
        "pour": Aspect(
            pos=["The spout gives a slow, precise pour, ideal for pour-over."],
            neg=["The spout dribbles down the side unless I pour very slowly."],
            neu=["Pouring is precise enough once you get the angle right."],
        ),
        "temperature": Aspect(
            pos=["The temperature settings are accurate to within a degree."],
            neg=["The display is several degrees off compared to my thermometer."],
            neu=["The keep-warm function only lasts thirty minutes."],
        ),
        "heating": "heating",
        "looks": "looks",
    },
    "Ferrum 26 cm Cast-Iron Skillet": {
        "seasoning": Aspect(
            pos=["The pre-seasoning is good enough to fry eggs on from day one."],
            neg=["The seasoning flaked off after the first wash."],
            neu=["It needed a couple of rounds of seasoning before it was really non-stick."],
        ),
        "heating": "heating",
        "weight": "weight",
    },
    "Pulse Mini Bluetooth Speaker": {
        "sound": "sound",
        "battery": "battery",
        "pairing": "pairing",
        "waterproof": Aspect(
            pos=["It survived being dropped in the pool without any problem."],
            neg=["A bit of splashing in the shower and it stopped working."],
            neu=["It's splash-proof, but I wouldn't take it swimming."],
        ),
    },
    "Quietline ANC Headphones": {
        "sound": "sound",
        "battery": "battery",
        "pairing": "pairing",
        "anc": Aspect(
            pos=["The noise cancelling makes my commute blissfully quiet."],
            neg=["The noise cancelling creates an odd pressure in my ears."],
            neu=["The noise cancelling is decent, a step below the big brands."],
        ),
        "comfort": Aspect(
            pos=["They are comfortable enough to wear all day."],
            neg=["They pinch after about twenty minutes."],
            neu=["They're comfortable for an hour or so."],
        ),
    },
    "Tōne Wireless Earbuds": {
        "sound": "sound",
        "battery": "battery",
        "pairing": "pairing",
        "fit": Aspect(
            pos=["They stay put even when I'm running."],
            neg=["They keep falling out, whichever tips I use."],
            neu=["The fit is okay with the largest tips."],
        ),
    },
    "Nordlys LED Desk Lamp": {
        "light": Aspect(
            pos=["The light is warm and even, with no flicker at all."],
            neg=["The light flickers at low brightness."],
            neu=["The light is bright enough, though the colour is a bit cold."],
        ),
        "dimmer": Aspect(
            pos=["The touch dimmer has a really nice range."],
            neg=["The touch control reacts whenever I brush past it."],
            neu=["The dimmer only has three steps, which is a bit limiting."],
        ),
        "build": "build",
        "looks": "looks",
    },
    "Sova Memory-Foam Pillow": {
        "support": Aspect(
            pos=[
                "I've slept better since the day it arrived.",
                "My neck pain in the morning has gone.",
            ],
            neg=["It went flat within a couple of weeks."],
            neu=["It's comfortable enough, if a little firmer than I'd like."],
        ),
        "smell": Aspect(
            pos=["There was no chemical smell at all out of the box."],
            neg=["It still smells of chemicals after a week of airing."],
            neu=["There was a slight smell at first, gone after a few days."],
        ),
    },
    "Aurora Smart Bulb (4-pack)": {
        "colour": Aspect(
            pos=["The colours are vivid and the warm white is genuinely warm."],
            neg=["The white is a harsh blue that gives me headaches."],
            neu=["The colours are fine, but the maximum brightness is modest."],
        ),
        "app": "app",
        "pairing": "pairing",
    },
    "Hjem Wool Throw Blanket": {
        "warmth": Aspect(
            pos=["It's incredibly cosy on cold evenings."],
            neg=["It's thinner than expected and not very warm."],
            neu=["It's warm enough for the sofa, not for a cold bedroom."],
        ),
        "texture": Aspect(
            pos=["The wool is soft and doesn't itch at all."],
            neg=["It sheds everywhere and itches."],
            neu=["It's a little scratchy at first but softens with use."],
        ),
        "looks": "looks",
    },
    "Trailhead 28L Daypack": {
        "straps": Aspect(
            pos=["The straps are well padded, even with a full load."],
            neg=["The shoulder straps dig in after an hour."],
            neu=["The hip belt is basic, but fine for day hikes."],
        ),
        "pockets": Aspect(
            pos=["There's a pocket for everything, and the laptop sleeve is well protected."],
            neg=["The side pockets are too tight for a normal water bottle."],
            neu=["The pockets are fine, if a bit of a maze."],
        ),
        "durability": Aspect(
            pos=["It has survived a season of hiking without a scratch."],
            neg=["The zip broke after a handful of uses."],
            neu=["It seems durable so far, but it's only been a few outings."],
        ),
        "rain": "rain",
    },
    "Sierra Ultralight 2-Person Tent": {
        "pitching": Aspect(
            pos=["It pitches in under ten minutes, even on my own."],
            neg=["The instructions are useless and pitching it took an hour."],
            neu=["Pitching is straightforward after the first attempt."],
        ),
        "space": Aspect(
            pos=["There's more room inside than I expected for two people."],
            neg=["Two adults is a very tight squeeze."],
            neu=["It's snug for two, roomy for one."],
        ),
        "rain": "rain",
        "weight": "weight",
    },
    "Glacier Insulated Bottle 750 ml": {
        "insulation": Aspect(
            pos=["Drinks stay cold all day, even in the sun."],
            neg=["It doesn't keep anything cold for more than a couple of hours."],
            neu=["It keeps tea warm for the morning, not much longer."],
        ),
        "lid": Aspect(
            pos=["The lid seals perfectly; it rides in my bag upside down."],
            neg=["The lid leaks as soon as the bottle tips over."],
            neu=["The lid is secure but hard to clean."],
        ),
        "weight": "weight",
    },
    "ErgoLift Standing Desk": {
        "stability": Aspect(
            pos=["It's rock solid, even at full standing height."],
            neg=["It wobbles noticeably when I type."],
            neu=["There's a slight wobble at the highest setting."],
        ),
        "motor": Aspect(
            pos=["The motor is quiet and the memory presets are handy."],
            neg=["The motor is loud and sometimes stops halfway up."],
            neu=["The motor is a bit slow but does the job."],
        ),
        "assembly": Aspect(
            pos=["Assembly took about forty minutes and everything lined up."],
            neg=["Two screw holes didn't line up, so assembly took all afternoon."],
            neu=["Assembly is doable alone, easier with two people."],
        ),
        "ergonomics": Aspect(
            pos=["My back pain has eased since I started using it."],
            neg=["The lowest height is still too high for me."],
            neu=["It took a few weeks to get used to standing for part of the day."],
        ),
    },
    "Kōyō Fountain Pen": {
        "nib": Aspect(
            pos=["The nib is smooth, with just the right amount of feedback."],
            neg=["The nib is scratchy and skips constantly."],
            neu=["The nib is fine, a bit drier than I'd like."],
        ),
        "ink": Aspect(
            pos=["The converter is easy to fill and it has never leaked."],
            neg=["It leaked ink in my shirt pocket twice."],
            neu=["It takes standard cartridges, which is convenient."],
        ),
        "looks": "looks",
    },
    "Margin Dot-Grid Notebook": {
        "paper": Aspect(
            pos=["The paper takes fountain pen ink beautifully, with no bleed-through."],
            neg=["Ink feathers badly and shows through on the other side."],
            neu=["The paper is fine with a gel pen, less so with a fountain pen."],
        ),
        "binding": Aspect(
            pos=["It lies completely flat when open."],
            neg=["Pages started falling out within a month."],
            neu=["The binding is a bit stiff at first."],
        ),
    },
    "Volt 20000 mAh Power Bank": {
        "capacity": Aspect(
            pos=["It charges my phone almost five times over."],
            neg=["It loses charge even when I'm not using it."],
            neu=["Capacity is a bit below what's advertised, as usual."],
        ),
        "charging": Aspect(
            pos=["It charges my laptop too, and it stays cool."],
            neg=["It gets worryingly hot while charging."],
            neu=["Recharging the power bank itself takes a whole night."],
        ),
        "weight": "weight",
    },
    "Lumo 7-inch E-Reader": {
        "screen": Aspect(
            pos=["The screen is sharp and the front light is perfectly even."],
            neg=["The screen ghosts and page turns are sluggish."],
            neu=["The screen is fine, though the front light is a little blue."],
        ),
        "battery": "battery",
        "software": Aspect(
            pos=["Sideloading my own EPUB files is easy."],
            neg=["The software crashes whenever I open a large PDF."],
            neu=["The menus are a bit clunky but usable."],
        ),
    },
    "Pico 6-in-1 USB-C Hub": {
        "compatibility": Aspect(
            pos=["Everything I plugged in worked straight away, including a 4K monitor."],
            neg=["My external monitor isn't detected half the time."],
            neu=["Most things work, though my old USB stick isn't recognised."],
        ),
        "heat": Aspect(
            pos=["It barely gets warm, even with everything plugged in."],
            neg=["It gets too hot to touch after an hour."],
            neu=["It gets warm, but not alarmingly so."],
        ),
        "build": "build",
    },
}

OPENERS: dict[str, list[str]] = {
    "pos": [
        "Really happy with this.",
        "Bought this as a gift and ended up keeping it for myself.",
        "Exceeded my expectations.",
        "This is my second one, which should tell you enough.",
        "Absolutely love it!",
        "Great purchase.",
        "Très bien, honestly.",
        "I was sceptical, but I'm a convert.",
    ],
    "neg": [
        "Disappointed, honestly.",
        "I really wanted to like this.",
        "Save your money.",
        "It's going back.",
        "Not worth it.",
        "What a letdown.",
        "Avoid.",
    ],
    "neu": [
        "It's fine.",
        "Mixed feelings about this one.",
        "Does what it says, nothing more.",
        "Decent, but not quite what I hoped for.",
        "It's okay.",
        "Average product.",
    ],
}

CONTEXTS = [
    "My partner picked this after reading a dozen reviews, so expectations were high.",
    "It replaced a much older one that had finally given up.",
    "This was a birthday present from my sister, who knows I'm picky.",
    "I did a fair amount of research before choosing this one.",
    "Long review, sorry, but I think the details matter here.",
    "I've had it for a few weeks now, so here are my thoughts.",
]

TIPS = [
    "Tip: register it on the maker's website, the warranty goes up to three years.",
    "If you're in the EU, check the local retailer first; it was cheaper for me there.",
    "Read the little leaflet in the box, it answers most of the questions people ask here.",
]

OVERALLS: dict[str, list[str]] = {
    "pos": [
        "Overall, it does everything I wanted and a little more.",
        "All in all, one of the better purchases I've made this year.",
    ],
    "neg": [
        "Overall, it feels like a product that was rushed to market.",
        "All in all, it's not something I can recommend to anyone.",
    ],
    "neu": [
        "Overall, it's a middling product that covers the basics.",
        "All in all, it's fine, just not special.",
    ],
}

HEDGES = ["To be fair,", "In fairness,", "Credit where it's due:", "On the plus side,"]

CLOSERS: dict[str, list[str]] = {
    "pos": [
        "Would buy again.",
        "Highly recommended! 👍",
        "Totally worth it.",
        "No regrets at all.",
        "Already told my friends about it.",
    ],
    "neg": [
        "Would not recommend.",
        "Back it goes.",
        "Very disappointed.",
        "Look elsewhere.",
        "Waiting for my refund now. 😞",
    ],
    "neu": [
        "Might suit someone with different needs.",
        "Okay for the price.",
        "Not bad, not great.",
        "I'll keep it, but I wouldn't buy it again.",
        "Middle of the road.",
    ],
}

SHORT_REVIEWS: dict[str, list[str]] = {
    "pos": ["Love it!", "Perfect. 👍", "Great value.", "Superb!"],
    "neg": ["Broke in a week.", "Junk.", "Never arrived working."],
    "neu": ["Meh.", "It's okay.", "Does the job."],
}


def _stars_for(rng: random.Random, sentiment: str) -> int:
    if sentiment == "pos":
        return 5 if rng.random() < 0.6 else 4
    if sentiment == "neg":
        return 1 if rng.random() < 0.55 else 2
    draw = rng.random()
    return 3 if draw < 0.7 else (2 if draw < 0.85 else 4)


def _aspect_queue(rng: random.Random, product: str) -> list[Aspect]:
    """The product's aspects in the order a review mentions them: its own first, mostly."""
    own = [SHARED_ASPECTS[a] if isinstance(a, str) else a for a in PRODUCTS[product].values()]
    generic = list(GENERIC_ASPECTS.values())
    rng.shuffle(own)
    rng.shuffle(generic)
    if rng.random() < 0.25:
        own.insert(0, generic.pop())
    return own + generic


def _review_text(rng: random.Random, product: str, sentiment: str, length: str) -> str:
    if length == "short":
        return pick(rng, SHORT_REVIEWS[sentiment])
    queue = _aspect_queue(rng, product)

    def say(polarity: str) -> str:
        return pick(rng, queue.pop(0).sentences(polarity))

    parts = [pick(rng, OPENERS[sentiment])]
    if length == "long":
        parts.append(pick(rng, CONTEXTS))
    if sentiment == "neu":
        joiner = pick(rng, ["But", "That said,", "On the other hand,"])
        parts.append(f"{say('pos')} {joiner} {lower_first(say('neg'))}")
        if rng.random() < 0.5:
            parts.append(say("neu"))
    else:
        parts.extend(say(sentiment) for _ in range(rng.randint(1, 2)))
        # A minor point the other way keeps 4- and 2-star reviews realistic.
        if length == "long" or rng.random() < 0.3:
            other = say("neg" if sentiment == "pos" else "pos")
            lead = "My only gripe:" if sentiment == "pos" else pick(rng, HEDGES)
            parts.append(f"{lead} {lower_first(other)}")
    if length == "long":
        # Further remarks until the review is around 600 characters.
        while len(" ".join(parts)) < 540 and queue:
            parts.append(say(sentiment if rng.random() < 0.6 else "neu"))
        if len(" ".join(parts)) < 540:
            parts.append(pick(rng, TIPS))
        parts.append(pick(rng, OVERALLS[sentiment]))
    if length == "long" or rng.random() < 0.6:
        parts.append(pick(rng, CLOSERS[sentiment]))
    return " ".join(parts)


def make_reviews(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Product reviews; sentiment is positive, negative or neutral and matches the stars."""
    products = list(PRODUCTS)
    seen: set[str] = set()
    rows = []
    for index in range(1, count + 1):
        product = pick(rng, products)
        draw = rng.random()
        sentiment = "pos" if draw < 0.45 else ("neg" if draw < 0.75 else "neu")
        draw = rng.random()
        length = "short" if draw < 0.04 else ("long" if draw < 0.09 else "normal")
        make = functools.partial(_review_text, product=product, sentiment=sentiment, length=length)
        rows.append(
            {
                "id": f"r{index:04d}",
                "product": product,
                "text": unique(rng, make, seen),
                "stars": _stars_for(rng, sentiment),
            }
        )
    return rows


# --------------------------------------------------------------------------------------
# News items
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """What a story's subject did: a headline phrase, a summary phrase, fitting follow-ups."""

    headline: str
    summary: str
    followups: Sequence[str] = ()


@dataclass(frozen=True)
class NewsGroup:
    """Subjects that can all do each of the actions; generic follow-up sentences."""

    subjects: Sequence[str]
    actions: Sequence[Action]
    followups: Sequence[str]


# Slots in the phrases ({day}, {city}, {pct}, ...) are filled by _news_slots().
NEWS: dict[str, list[NewsGroup]] = {
    "business": [
        NewsGroup(
            subjects=[
                "Skyvale Airlines",
                "Lindqvist & Søn",
                "FreshWay Markets",
                "Orbis Logistics",
                "Kestrel Motors",
                "Halden Paper Mills",
                "Café Lumière",
                "Banco Meridional",
                "Aldana Textiles",
                "Brightwater Foods",
            ],
            actions=[
                Action(
                    "posts record quarterly profit",
                    "reported its strongest quarter on record on {day}, with revenue up {pct}%",
                    [
                        "Analysts had expected a weaker result.",
                        "Shares rose {pct}% in early trading.",
                    ],
                ),
                Action(
                    "cuts {jobs} jobs in restructuring",
                    "said on {day} it would cut {jobs} jobs as part of a two-year "
                    "restructuring plan",
                    [
                        "Unions said they would seek urgent talks with management.",
                        "The firm employs about {staff} people across Europe.",
                    ],
                ),
                Action(
                    "agrees to buy rival {company}",
                    "agreed on {day} to acquire {company} in a deal that still needs "
                    "regulatory approval",
                    ["Competition authorities are expected to look closely at the deal."],
                ),
                Action(
                    "warns of weaker sales",
                    "warned on {day} that sales would fall short of forecasts for the rest "
                    "of the year",
                    ["Shares fell {pct}% after the announcement."],
                ),
                Action(
                    "opens new headquarters in {city}",
                    "moved into a new headquarters in {city} this week, bringing three "
                    "offices under one roof",
                ),
                Action(
                    "raises prices for second time this year",
                    "told customers on {day} that prices would rise by about {pct}% from "
                    "next month",
                    ["Consumer groups criticised the timing of the increase."],
                ),
                Action(
                    "names new chief executive",
                    "appointed a new chief executive on {day} after a months-long search",
                ),
                Action(
                    "settles pricing dispute with suppliers",
                    "reached a settlement with its main suppliers on {day}, ending a "
                    "long-running row over prices",
                ),
            ],
            followups=[
                "The company declined to comment beyond its statement.",
                "Investors reacted cautiously, and the shares closed flat.",
            ],
        ),
    ],
    "sports": [
        NewsGroup(
            subjects=[
                "Porto Vale FC",
                "The Riverside Hawks",
                "Malmö Lions",
                "Kraków Eagles",
                "Atlético Sereno",
                "The Harbour City Comets",
            ],
            actions=[
                Action(
                    "beat {team} in last-minute thriller",
                    "beat {team} 2-1 with a goal in stoppage time on {day}",
                    [
                        "Fans celebrated late into the night in {city}.",
                        "The result leaves them {small} points clear at the top.",
                    ],
                ),
                Action(
                    "clinch league title with two games to spare",
                    "secured the league title on {day} with two matches still to play",
                    [
                        "It is their first title in {years} years.",
                        "An open-top bus parade is planned for the weekend.",
                    ],
                ),
                Action(
                    "sack head coach after losing run",
                    "dismissed their head coach on {day} after {small} defeats in a row",
                    ["An assistant will take charge until the end of the season."],
                ),
                Action(
                    "sign teenage striker from {team}",
                    "completed the signing of a 17-year-old striker from {team} on {day}",
                    ["The fee was not disclosed."],
                ),
                Action(
                    "knocked out of cup by second-tier {team}",
                    "were eliminated from the cup by second-division {team} on {day}",
                    ["The coach apologised to the travelling fans."],
                ),
                Action(
                    "unveil plans for new {seats}-seat stadium",
                    "presented plans on {day} for a new stadium with room for {seats} fans",
                    ["Construction could start as early as next year."],
                ),
                Action(
                    "hold {team} to goalless draw",
                    "held {team} to a 0-0 draw in front of a sell-out crowd on {day}",
                ),
            ],
            followups=[
                "The captain called it a turning point in the season.",
                "Their next match is away in {city}.",
            ],
        ),
    ],
    "science": [
        NewsGroup(
            subjects=[
                "Researchers at the University of Tartu",
                "Scientists in Bergen",
                "Scientists at the Kessler Institute",
                "Researchers in Reykjavík",
                "Engineers at the Polytechnic of Turin",
                "Researchers in Potsdam",
                "Scientists at the University of Cape Town",
            ],
            actions=[
                Action(
                    "find new species of deep-sea coral",
                    "described a previously unknown species of coral living {depth} metres "
                    "below the surface",
                ),
                Action(
                    "detect water vapour around distant exoplanet",
                    "reported signs of water vapour in the atmosphere of a planet "
                    "{lightyears} light-years away",
                ),
                Action(
                    "develop battery that survives extreme cold",
                    "built a battery cell that kept {pct}% more of its capacity at minus 40 "
                    "degrees than standard cells",
                    ["The design could be used in electric vehicles within five years."],
                ),
                Action(
                    "map ancient river system under the ice",
                    "published the most detailed map yet of a river network buried beneath the ice",
                ),
                Action(
                    "link gut bacteria to sleep quality",
                    "found that certain gut bacteria were linked to deeper sleep in a study "
                    "of {people} adults",
                    ["The authors stressed that the study shows a link, not a cause."],
                ),
                Action(
                    "measure fastest glacier retreat on record",
                    "measured a glacier retreating {depth} metres in a single year, the "
                    "fastest ever recorded",
                ),
                Action(
                    "show honeybees can learn simple counting",
                    "showed in a series of experiments that honeybees can learn to count "
                    "up to four",
                ),
                Action(
                    "turn farmed seaweed into biodegradable plastic",
                    "made a plastic from farmed seaweed that breaks down in soil within "
                    "{days} weeks",
                ),
                Action(
                    "record highest deep-ocean temperatures yet",
                    "recorded the highest deep-ocean temperatures since measurements began",
                ),
                Action(
                    "grow crystals that bend without breaking",
                    "reported organic crystals that can bend thousands of times without cracking",
                ),
            ],
            followups=[
                "The findings were published in a peer-reviewed journal on {day}.",
                "The team plans a larger follow-up study next year.",
                "Other researchers called the results promising but preliminary.",
                "The data will be made freely available to other scientists.",
            ],
        ),
    ],
    "politics": [
        NewsGroup(
            subjects=[
                "Parliament",
                "The governing coalition",
                "Prime Minister Helena Voss",
                "The opposition Green Alliance",
                "The Senate finance committee",
                "Interior Minister Jonas Eklund",
            ],
            actions=[
                Action(
                    "backs plan to lower voting age to 16",
                    "came out on {day} in favour of lowering the voting age to 16",
                    ["Youth organisations welcomed the move."],
                ),
                Action(
                    "rejects budget amid row over defence spending",
                    "rejected the draft budget on {day} after a heated debate over defence "
                    "spending",
                ),
                Action(
                    "proposes cap on short-term rentals in {city}",
                    "proposed limiting short-term holiday rentals in {city} to {rental} "
                    "nights a year",
                    ["Tourism businesses warned the cap would cost jobs."],
                ),
                Action(
                    "faces criticism over delayed housing reform",
                    "came under pressure on {day} as a promised housing reform slipped again",
                ),
                Action(
                    "calls for inquiry into election funding",
                    "called on {day} for an independent inquiry into how election "
                    "campaigns are funded",
                ),
                Action(
                    "pushes for tax break for first-time buyers",
                    "pushed on {day} for a tax break for first-time home buyers",
                ),
                Action(
                    "demands answers over rail strike chaos",
                    "demanded answers on {day} after a week of rail strikes disrupted "
                    "travel across the country",
                ),
                Action(
                    "unveils {small}-point plan to cut hospital waiting lists",
                    "presented its {small}-point plan on {day} to shorten hospital waiting lists",
                ),
            ],
            followups=[
                "A final vote is expected before the summer recess.",
                "Critics said the measure does not go far enough.",
                "Opinion polls suggest voters are split on the issue.",
                "Protesters gathered outside the parliament building.",
                "Officials said details would follow in the coming weeks.",
            ],
        ),
        NewsGroup(
            subjects=["Mayor Tomás Ferreira", "The {city} city council"],
            actions=[
                Action(
                    "approves car-free zone in old town",
                    "approved a car-free zone covering the old town on {day}",
                    ["Shop owners are divided over the plan."],
                ),
                Action(
                    "scraps plan for new ring road",
                    "dropped plans for a new ring road on {day}, citing rising costs",
                ),
                Action(
                    "promises {jobs} new social housing units",
                    "promised on {day} to build {jobs} social housing units by 2030",
                ),
            ],
            followups=[
                "Opposition councillors called the decision rushed.",
                "Residents will be consulted over the summer.",
            ],
        ),
    ],
    "entertainment": [
        NewsGroup(
            subjects=[
                "Pop duo Neon Harbor",
                "Singer Aïcha Benali",
                "Rapper Lil Mistral",
                "Composer Jónas Þórsson",
            ],
            actions=[
                Action(
                    "announces {small}-date world tour",
                    "announced a world tour of {small} dates on {day}, starting in {city}",
                    ["Tickets sold out within {minutes} minutes."],
                ),
                Action(
                    "releases surprise album at midnight",
                    "released a surprise album at midnight on {day} with no advance promotion",
                    ["Fans flooded social media with reactions. 🎉"],
                ),
                Action(
                    "cancels concerts after vocal injury",
                    "cancelled the next {small} concerts on doctors' advice after a vocal injury",
                    ["Ticket holders will be refunded automatically."],
                ),
                Action(
                    "tops streaming charts for third week",
                    "held the top spot on the streaming charts for a third straight week",
                ),
                Action(
                    "to headline {city} summer festival",
                    "was confirmed on {day} as the headline act of the {city} summer festival",
                ),
                Action(
                    "wins best newcomer award at {city} gala",
                    "took home the best newcomer award at a ceremony in {city} on {day}",
                ),
            ],
            followups=["The news was first shared on social media."],
        ),
        NewsGroup(
            subjects=[
                "Director Inés Calderón",
                "Actor Kenji Mori",
                "Comedian Priya Nair",
                "Actress Sofía Lindgren",
            ],
            actions=[
                Action(
                    "signs on for sequel to hit drama",
                    "confirmed on {day} a return for the sequel to last year's hit drama",
                    ["Filming is due to begin in {city} next spring."],
                ),
                Action(
                    "joins adaptation of cult novel",
                    "has joined a film adaptation of a cult 1970s novel, producers said on {day}",
                    ["Filming is due to begin in {city} next spring."],
                ),
                Action(
                    "wins top prize at {city} film festival",
                    "won the top prize at the {city} film festival on {day}",
                    ["The jury praised the film's restraint and humour."],
                ),
                Action(
                    "signs multi-year deal with streaming service",
                    "signed a multi-year deal with a major streaming service on {day}",
                ),
                Action(
                    "opens up about burnout in new documentary",
                    "speaks candidly about burnout in a documentary released on {day}",
                ),
            ],
            followups=[
                "A streaming release is planned for later in the year.",
                "Critics have been largely positive.",
            ],
        ),
    ],
    "technology": [
        NewsGroup(
            subjects=["Phone maker Orin", "Laptop maker Veridian", "Electronics group Kōdō"],
            actions=[
                Action(
                    "unveils its first in-house chip",
                    "unveiled its first in-house processor on {day}, which it says is {pct}% "
                    "faster while using less power",
                    [
                        "Reviewers will get test units next month.",
                        "The company's shares rose {pct}% on the news.",
                    ],
                ),
                Action(
                    "delays launch of flagship device",
                    "pushed back the launch of its flagship device, citing supply problems",
                    ["Competitors are expected to take advantage of the delay."],
                ),
                Action(
                    "opens repair programme to independent shops",
                    "said on {day} that independent repair shops can now buy original parts "
                    "and manuals",
                    ["Right-to-repair campaigners welcomed the decision."],
                ),
                Action(
                    "recalls {units} chargers over overheating risk",
                    "recalled {units} chargers on {day} after reports of overheating",
                    ["Customers can exchange affected chargers free of charge."],
                ),
                Action(
                    "ships laptop with user-replaceable battery",
                    "began shipping a laptop whose battery can be swapped without tools",
                    ["Right-to-repair campaigners welcomed the design."],
                ),
            ],
            followups=["A company spokesperson declined to give further details."],
        ),
        NewsGroup(
            subjects=[
                "Cloud provider Nimbus",
                "Messaging app Chirp",
                "Search engine Findr",
                "Startup Lattice Labs",
            ],
            actions=[
                Action(
                    "patches critical security flaw",
                    "released an urgent update on {day} fixing a flaw that let attackers "
                    "read private data",
                    ["Security researchers welcomed the quick response."],
                ),
                Action(
                    "restores service after six-hour outage",
                    "restored service on {day} after an outage that affected users across Europe",
                    ["The company said no customer data was lost."],
                ),
                Action(
                    "open-sources its speech recognition model",
                    "published the code and weights of its speech recognition model on {day}",
                ),
                Action(
                    "adds end-to-end encryption to group calls",
                    "began rolling out end-to-end encryption for group calls of up to "
                    "{callers} people",
                    [
                        "The feature is turned on by default.",
                        "The change will reach all users within {days} days.",
                    ],
                ),
                Action(
                    "launches AI assistant for spreadsheets",
                    "launched an assistant on {day} that writes spreadsheet formulas from "
                    "plain-language requests",
                ),
                Action(
                    "will end support for older phones",
                    "said on {day} its app will stop working on phones more than six years old",
                ),
            ],
            followups=["A company spokesperson declined to give further details."],
        ),
    ],
}

CITIES = ["Lisbon", "Montréal", "Malmö", "Kraków", "Osaka", "Cape Town", "Valparaíso", "Leeds"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
COMPANIES = ["Nordway", "Bellmont Group", "Pacifica Trading", "Zenit SA"]
TEAMS = ["Northgate United", "Sporting Alvor", "the Bay City Bears", "FK Dunaj"]
SOURCES = [
    "Harbor Gazette",
    "The Meridian Post",
    "Northwind Wire",
    "Le Quotidien Libre",
    "Daily Ledger",
    "Nordic Signal",
    "Pacific Dispatch",
    "Rheinland Kurier",
]


def _news_slots(rng: random.Random) -> dict[str, str]:
    return {
        "day": pick(rng, DAYS),
        "city": pick(rng, CITIES),
        "company": pick(rng, COMPANIES),
        "team": pick(rng, TEAMS),
        "pct": str(rng.randint(2, 18)),
        "small": str(rng.randint(3, 12)),
        "jobs": f"{pick(rng, [120, 240, 350, 800, 1200, 2500]):,}",
        "staff": f"{rng.randrange(1800, 45000, 100):,}",
        "seats": f"{rng.randrange(28000, 62000, 500):,}",
        "years": str(rng.randint(5, 40)),
        "depth": f"{rng.randrange(300, 2500, 50):,}",
        "lightyears": str(rng.randrange(40, 900, 10)),
        "people": f"{rng.randrange(200, 5000, 10):,}",
        "rental": str(pick(rng, [30, 60, 90, 120])),
        "minutes": str(rng.randint(4, 30)),
        "days": str(rng.randint(2, 14)),
        "callers": str(pick(rng, [32, 50, 64, 100])),
        "units": f"{rng.randrange(12000, 250000, 1000):,}",
    }


def _news_item(rng: random.Random, topic: str) -> tuple[str, str]:
    group = pick(rng, NEWS[topic])
    action = pick(rng, group.actions)
    slots = _news_slots(rng)
    subject = pick(rng, group.subjects).format(**slots)
    # Headlines drop a leading article: "The Riverside Hawks" -> "Riverside Hawks".
    short = subject.removeprefix("The ")
    headline = f"{short[:1].upper()}{short[1:]} {action.headline.format(**slots)}"
    summary = f"{subject} {action.summary.format(**slots)}."
    if rng.random() < 0.7:
        followup = pick(rng, [*action.followups, *action.followups, *group.followups])
        summary += " " + followup.format(**slots)
    return headline, summary


def make_news(rng: random.Random, count: int) -> list[dict[str, str]]:
    """Short news items, an even mix of the six topics in shuffled order."""
    topics = [name for _ in range(count // len(NEWS) + 1) for name in NEWS][:count]
    rng.shuffle(topics)
    seen: set[str] = set()
    rows = []
    for index, topic in enumerate(topics, start=1):
        headline, summary = _news_item(rng, topic)
        for _ in range(20):
            if headline not in seen:
                break
            headline, summary = _news_item(rng, topic)
        seen.add(headline)
        rows.append(
            {
                "id": f"n{index:04d}",
                "headline": headline,
                "summary": summary,
                "source": pick(rng, SOURCES),
            }
        )
    return rows


# --------------------------------------------------------------------------------------
# Support tickets (batch request format)
# --------------------------------------------------------------------------------------

# category -> (problem, details that fit it). Slots: {order}, {amount}, {date}, {version}, {count}.
TICKET_PROBLEMS: dict[str, list[tuple[str, list[str]]]] = {
    "billing": [
        (
            "I was charged twice for order #{order}.",
            [
                "I've attached a screenshot of my bank statement.",
                "Both payments show as completed, not pending.",
            ],
        ),
        (
            "My card was charged {amount} but the order shows as cancelled.",
            ["I paid with PayPal, if that matters.", "The money left my account on {date}."],
        ),
        (
            "I still haven't received the refund for the jacket I returned on {date}.",
            [
                "The tracking shows you received the parcel a week later.",
                "Your email said refunds take 5 working days.",
            ],
        ),
        (
            "Can you send me a VAT invoice for order #{order}?",
            [
                "Our accountant needs it by the end of the month.",
                "The company name is Brightside Studio Ltd.",
            ],
        ),
        (
            "My subscription renewed even though I cancelled it last month.",
            [
                "I still have the cancellation confirmation email.",
                "I'd like the {amount} refunded, please.",
            ],
        ),
        (
            "The discount code WELCOME10 wasn't applied at checkout.",
            [
                "It said 'code accepted' but the total didn't change.",
                "Can you refund the difference?",
            ],
        ),
        (
            "There's a {amount} charge on my statement that I don't recognise.",
            ["I haven't ordered anything since {date}."],
        ),
    ],
    "shipping": [
        (
            "My order #{order} was supposed to arrive on {date} and it's still not here.",
            [
                "The carrier's website just says 'in transit'.",
                "I need it before my daughter's birthday on Saturday.",
            ],
        ),
        (
            "The tracking number for order #{order} hasn't updated in six days.",
            ["The last scan was at a depot in Rotterdam.", "The carrier told me to contact you."],
        ),
        (
            "The parcel arrived but the box was crushed and the mug inside is broken.",
            [
                "I've kept the packaging and can send photos.",
                "I'd prefer a replacement rather than a refund.",
            ],
        ),
        (
            "I entered the wrong delivery address, can you change it before it ships?",
            ["It should be flat 4B, not 4D.", "The order number is #{order}."],
        ),
        (
            "Only two of the three items in order #{order} arrived.",
            ["The missing one is the grey wool scarf.", "The packing slip lists all three."],
        ),
        (
            "Do you ship to the Canary Islands, and how long does it take?",
            ["I'd also like to know whether I'll have to pay import duties."],
        ),
        (
            "The courier says order #{order} was delivered but there's nothing at my door.",
            [
                "I've already checked with my neighbours.",
                "The photo in the tracking shows a door that isn't mine.",
            ],
        ),
    ],
    "account": [
        (
            "I can't log in, the password reset email never arrives.",
            ["I've checked the spam folder too.", "I've tried three times since yesterday."],
        ),
        (
            "How do I change the email address on my account?",
            ["My old work address will stop working at the end of the month."],
        ),
        (
            "I got a new phone and lost access to my two-factor codes.",
            ["I still know my password.", "The old phone was wiped when I traded it in."],
        ),
        (
            "Please delete my account and all my personal data.",
            ["I'd like a confirmation once it's done."],
        ),
        (
            "My account was locked after too many login attempts.",
            [
                "I've had this account since 2016 and don't want to lose my order history.",
                "It's been locked for over 24 hours now.",
            ],
        ),
        (
            "Someone changed my password and it wasn't me!",
            [
                "I got an email about a login from a country I've never been to.",
                "Please check whether any orders were placed.",
            ],
        ),
        (
            "I'd like to merge my two accounts, one uses my work email.",
            ["My loyalty points are split between them."],
        ),
    ],
    "bug": [
        (
            "The app crashes every time I open the basket on Android {version}.",
            [
                "I've reinstalled the app and restarted my phone, same thing.",
                "It worked fine until last week's update.",
            ],
        ),
        (
            "The 'Pay now' button does nothing in Safari.",
            [
                "It works in Chrome, so I think it's a browser issue.",
                "There's no error message, the button just doesn't react.",
            ],
        ),
        (
            "I get 'Error 500' when I try to save my address.",
            ["It happens on the website and in the app.", "I've tried two different addresses."],
        ),
        (
            "Search results show the same product {count} times.",
            ["It only happens when I sort by price.", "My husband sees it on his iPhone too."],
        ),
        (
            "The app logs me out every few minutes.",
            ["It started after the latest update.", "I'm on iOS {version}."],
        ),
        (
            "Prices in the app are shown in dollars even though my country is set to France.",
            ["The website shows euros correctly."],
        ),
        (
            "When I upload a profile photo the page goes blank.",
            ["The photo is a normal 2 MB JPEG.", "It's the same on my laptop and my phone."],
        ),
    ],
    "other": [
        ("Do you offer gift wrapping?", ["It's for my mum's 70th birthday."]),
        ("Are your stores open on public holidays?", ["I'm thinking of Easter Monday."]),
        (
            "I'm a blogger and would love to partner with you.",
            ["My blog is about sustainable travel and has about 20,000 readers a month."],
        ),
        (
            "Just wanted to say the new catalogue is beautiful!",
            ["The photos from Norway are stunning. 😍"],
        ),
        (
            "Will the green version of the Trailhead daypack come back in stock?",
            ["I'd like to be notified if it does."],
        ),
        ("Do you have a student discount?", ["I'm studying in Leeds."]),
        (
            "Are you hiring for the Christmas season?",
            ["I worked in retail for two years and I'm available from November."],
        ),
    ],
}

TICKET_SHORT: dict[str, list[str]] = {
    "billing": ["refund pls", "double charged??"],
    "shipping": ["where is my order #{order}", "package not arrived"],
    "account": ["cant login", "reset password not working"],
    "bug": ["app keeps crashing", "checkout broken"],
    "other": ["gift cards?", "hi"],
}

# A few tickets in other languages: (category, text).
TICKET_FOREIGN: list[tuple[str, str]] = [
    ("shipping", "Hola, mi pedido #{order} no ha llegado todavía. ¿Pueden revisar el envío?"),
    ("billing", "Bonjour, j'ai été débité deux fois pour la même commande. Merci de vérifier."),
    ("account", "Hallo, ich kann mich nicht mehr anmelden. Das Passwort wird nicht akzeptiert."),
    ("bug", "Ciao, l'app si chiude da sola quando apro il carrello. Potete aiutarmi?"),
    ("other", "Olá! Vocês fazem entregas para Portugal? Obrigada."),
    ("shipping", "Bonjour, le colis est arrivé abîmé et la tasse est cassée. 😕"),
]

GREETINGS = ["Hi,", "Hello,", "Hi there,", "Good morning,", "Hey team,", "Dear support,"]
SIGNOFFS = [
    "Thanks,\nMaria",
    "Regards,\nTom",
    "Thank you!",
    "Cheers,\nSøren",
    "Best,\nZoë",
    "—Luis",
]
TICKET_EXTRAS: dict[str, list[str]] = {
    "billing": [
        "This is the second time this has happened.",
        "I've been a customer for years and this has never happened before.",
    ],
    "shipping": [
        "This is the second order this month with a problem.",
        "I paid for express delivery, so this is disappointing.",
    ],
    "account": [
        "My customer number is C-{order}.",
        "I'd appreciate it if this could be handled today.",
    ],
    "bug": ["I'm happy to send screenshots if that helps.", "My phone is up to date."],
    "other": ["Thanks in advance!", "No rush at all."],
}
TICKET_FRUSTRATION = [
    "This is really frustrating.",
    "Please sort this out as soon as possible.",
    "I'd appreciate a quick reply.",
]


def _ticket_slots(rng: random.Random) -> dict[str, str]:
    return {
        "order": str(rng.randint(40000, 99999)),
        "amount": f"€{rng.randint(5, 240)}.{rng.choice(['00', '49', '99'])}",
        "date": f"{rng.randint(1, 28)} {pick(rng, ['March', 'April', 'May', 'June'])}",
        "version": str(rng.randint(15, 18)),
        "count": str(rng.randint(3, 9)),
    }


def _ticket_text(rng: random.Random) -> str:
    draw = rng.random()
    slots = _ticket_slots(rng)
    if draw < 0.05:
        return pick(rng, TICKET_FOREIGN)[1].format(**slots)
    category = pick(rng, list(TICKET_PROBLEMS))
    if draw < 0.12:
        return pick(rng, TICKET_SHORT[category]).format(**slots)
    long = draw > 0.92
    problem, details = pick(rng, TICKET_PROBLEMS[category])
    body = [problem]
    if long:
        body.extend(details)
        body.append(pick(rng, TICKET_EXTRAS[category]))
    elif rng.random() < 0.6:
        body.append(pick(rng, details))
    if category != "other" and (long or rng.random() < 0.25):
        body.append(pick(rng, TICKET_FRUSTRATION))
    text = " ".join(body)
    if long or rng.random() < 0.5:
        text = f"{pick(rng, GREETINGS)}\n\n{text}"
    if long or rng.random() < 0.5:
        text = f"{text}\n\n{pick(rng, SIGNOFFS)}"
    return text.format(**slots)


def make_support_batch(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Support tickets as OpenAI / Z.AI batch request lines."""
    seen: set[str] = set()
    rows = []
    for index in range(1, count + 1):
        text = unique(rng, _ticket_text, seen)
        rows.append(
            {
                "custom_id": f"t{index:04d}",
                "method": "POST",
                "url": "/v4/chat/completions",
                "body": {
                    "model": "glm-4.6",
                    "messages": [
                        {"role": "system", "content": SUPPORT_SYSTEM},
                        {"role": "user", "content": text},
                    ],
                    "max_tokens": 8,
                    "temperature": 0,
                },
            }
        )
    return rows


# --------------------------------------------------------------------------------------
# Chat snippets
# --------------------------------------------------------------------------------------

# Each conversation is a list of (user, assistant) exchanges; a chat uses the first k.
Exchange = tuple[str, str]

CONVERSATIONS_EN: list[list[Exchange]] = [
    [
        (
            "I'm going to Lisbon for four days in May. Any tips?",
            "May is a lovely time to go. Base yourself in Baixa or Príncipe Real, buy a Viva "
            "Viagem card for trams and the metro, and keep a day for Sintra.",
        ),
        (
            "Is Sintra worth it if I don't like crowds?",
            "Yes, if you arrive before 9 a.m. and start with Pena Palace; the Moorish Castle "
            "and Monserrate are much quieter.",
        ),
        (
            "And where should I eat pastéis de nata?",
            "Try a small neighbourhood pastelaria rather than the famous spot in Belém; the "
            "queues are shorter and they're just as good.",
        ),
    ],
    [
        (
            "My sourdough starter smells like nail polish remover. Is it dead?",
            "No, that acetone smell means it's hungry. Feed it more often, say every 12 hours, "
            "and keep it somewhere warm.",
        ),
        (
            "How do I know when it's ready to bake with?",
            "When it reliably doubles within 4 to 6 hours of a feed and a spoonful floats in "
            "water, it's ready.",
        ),
        (
            "Can I keep it in the fridge between bakes?",
            "Yes. Feed it, let it rise for an hour, then refrigerate. Give it two feeds at room "
            "temperature before baking.",
        ),
    ],
    [
        (
            "The kitchen tap drips even when it's fully closed.",
            "That's usually a worn washer or cartridge. Is it a single lever or two separate "
            "handles?",
        ),
        (
            "Single lever, about eight years old.",
            "Then it's probably the cartridge. Turn off the water under the sink, remove the "
            "handle and take the cartridge to a hardware shop to match it.",
        ),
        (
            "Do I need special tools?",
            "An Allen key, an adjustable spanner and a towel for the sink should be enough.",
        ),
    ],
    [
        (
            "I need a laptop for editing 4K video, budget around 1,500 euros.",
            "Look for at least 32 GB of RAM, a recent mid-range GPU or an Apple M-series chip, "
            "and a fast 1 TB SSD.",
        ),
        (
            "Is 16 GB of RAM really not enough?",
            "It works for short clips, but with long timelines and effects you'll hit the limit "
            "quickly. 32 GB gives you headroom.",
        ),
        (
            "What about the screen?",
            "If you colour grade, pick a panel that covers close to 100% of DCI-P3, or plan on "
            "an external calibrated monitor.",
        ),
        (
            "OK, I think I'll wait for the autumn sales.",
            "Good idea; prices on last year's models usually drop then.",
        ),
    ],
    [
        (
            "I'm 41 and want to learn guitar. Is it too late?",
            "Not at all. Adults often progress faster at first because they practise more "
            "deliberately.",
        ),
        (
            "How much should I practise?",
            "Twenty minutes a day beats two hours on Sunday. Start with a few open chords and "
            "simple strumming patterns.",
        ),
        (
            "My fingertips hurt a lot.",
            "That's normal for the first few weeks. Keep sessions short until calluses form, and "
            "check the strings aren't set too high.",
        ),
    ],
    [
        (
            "My Python script throws KeyError: 'price' on some rows.",
            "Some of your dictionaries don't have a 'price' key. Use row.get('price') or check "
            "for missing values before that line.",
        ),
        (
            "The data comes from a CSV. Why would the key be missing?",
            "Possibly a header with a trailing space, like 'price ', or a different delimiter in "
            "some files. Print the keys of a failing row.",
        ),
        (
            "You're right, the header is 'Price' with a capital P in one file.",
            "Normalise the headers when you read them, for example by lower-casing and "
            "stripping each one.",
        ),
    ],
    [
        (
            "We're moving flat next month and I'm worried about our cat.",
            "Cats find moves stressful. Set up one quiet room in the new flat with her litter "
            "tray, bed and food before letting her explore.",
        ),
        (
            "Should I keep her in a cattery during the move itself?",
            "If moving day will be chaotic, a day or two at a cattery or a friend's place can "
            "help.",
        ),
        (
            "How long before she can go outside?",
            "Keep her indoors for at least two to three weeks so she learns the new place is home.",
        ),
    ],
    [
        (
            "I signed up for my first marathon in October. Where do I start?",
            "With a 16 to 18 week plan. Build your weekly distance slowly, no more than about "
            "10% a week, with one long run every weekend.",
        ),
        (
            "My knees ache after long runs.",
            "Check your shoes, slow the long runs down and add strength work for hips and "
            "glutes. If the pain is sharp, see a physio.",
        ),
        (
            "What should I eat on race day?",
            "Nothing new. Have a familiar breakfast three hours before and practise your gels "
            "during training runs.",
        ),
    ],
    [
        (
            "The leaves on my monstera are turning yellow.",
            "Most often that's overwatering. Does the pot have drainage holes, and how often do "
            "you water it?",
        ),
        (
            "Every three days, and the pot has no holes.",
            "That's likely the cause. Repot it into a pot with drainage and water only when the "
            "top few centimetres of soil are dry.",
        ),
        (
            "Should I cut off the yellow leaves?",
            "Yes, they won't turn green again. Cut them at the base with clean scissors.",
        ),
    ],
    [
        (
            "I'm best man at my brother's wedding and I have to give a speech. Help!",
            "Keep it to about five minutes: a warm opening, one or two stories, a kind word "
            "about the couple, and a toast.",
        ),
        (
            "Is it OK to tell the story about him getting lost in Amsterdam?",
            "If it's affectionate and the grandparents won't be shocked, yes. Run it past "
            "someone who knows the family.",
        ),
        (
            "How do I not get nervous?",
            "Rehearse out loud several times, keep notes on cards, and take a slow breath before "
            "you start.",
        ),
    ],
]

SUMMARY_ASKS_EN = [
    "Can you summarise our conversation in one line?",
    "Give me a one-line summary of this chat, please.",
    "Thanks! Sum this up in a single sentence so I can save it to my notes.",
    "tl;dr of the above in one line?",
    "Please write one line summarising what we discussed.",
    "Great. One-sentence recap?",
]

CONVERSATIONS_OTHER: list[tuple[list[Exchange], list[str]]] = [
    (
        [
            (
                "Hola, quiero empezar a correr pero nunca he hecho deporte.",
                "¡Qué bien! Empieza alternando un minuto corriendo y dos caminando, tres veces "
                "por semana.",
            ),
            (
                "¿Y cuándo puedo correr media hora seguida?",
                "Normalmente en unas ocho semanas, si aumentas poco a poco.",
            ),
        ],
        [
            "Resume esta conversación en una sola línea, por favor.",
            "¿Me haces un resumen de una línea?",
        ],
    ),
    (
        [
            (
                "Mi hijo de seis años no quiere leer. ¿Qué puedo hacer?",
                "Deja que elija los libros él mismo, aunque sean cómics, y leed juntos diez "
                "minutos antes de dormir.",
            ),
            (
                "¿Y si se aburre enseguida?",
                "Alterna: tú lees una página y él la siguiente. Lo importante es que sea un "
                "momento agradable.",
            ),
        ],
        ["Resúmelo todo en una frase."],
    ),
    (
        [
            (
                "Bonjour ! Je cherche une idée de dîner végétarien rapide.",
                "Un curry de pois chiches au lait de coco se prépare en vingt minutes, avec du "
                "riz ou du pain naan.",
            ),
            (
                "Je n'ai pas de lait de coco.",
                "Remplacez-le par des tomates concassées et un peu de crème fraîche.",
            ),
        ],
        [
            "Peux-tu résumer notre échange en une seule ligne ?",
            "Un résumé en une phrase, s'il te plaît.",
        ],
    ),
    (
        [
            (
                "Mon vélo fait un bruit de cliquetis quand je pédale.",
                "Vérifiez d'abord la chaîne : elle est peut-être sèche ou mal alignée sur le "
                "dérailleur.",
            ),
            (
                "Je l'ai graissée, mais le bruit continue.",
                "Alors regardez les pédales et le boîtier de pédalier ; un roulement usé fait "
                "souvent ce bruit.",
            ),
        ],
        ["Résume cette conversation en une ligne."],
    ),
    (
        [
            (
                "Ich möchte Spanisch lernen, habe aber nur wenig Zeit.",
                "Zehn Minuten am Tag mit einer App und ein Podcast auf dem Arbeitsweg reichen "
                "für den Anfang.",
            ),
            (
                "Wann sollte ich anfangen zu sprechen?",
                "So früh wie möglich. Ein Tandempartner hilft sehr, auch wenn es am Anfang "
                "holprig ist.",
            ),
        ],
        [
            "Kannst du unser Gespräch in einem Satz zusammenfassen?",
            "Bitte fasse das in einer Zeile zusammen.",
        ],
    ),
    (
        [
            (
                "Unsere Waschmaschine zeigt den Fehler E18 an.",
                "Das bedeutet meist, dass das Wasser nicht abläuft. Prüfen Sie das Flusensieb "
                "unten an der Vorderseite.",
            ),
            (
                "Im Sieb war tatsächlich eine Socke.",
                "Dann sollte sie wieder funktionieren. Starten Sie zur Sicherheit ein kurzes "
                "Programm.",
            ),
        ],
        ["Fass das bitte in einem Satz zusammen."],
    ),
    (
        [
            (
                "Olá! Vou a Salvador em julho. Vai chover muito?",
                "Julho é inverno na Bahia e costuma chover bastante, mas geralmente em pancadas "
                "curtas.",
            ),
            (
                "Então vale a pena ir mesmo assim?",
                "Vale sim: as praias ficam mais vazias e os preços dos hotéis são mais baixos.",
            ),
        ],
        ["Pode resumir a nossa conversa numa linha?"],
    ),
    (
        [
            (
                "Ciao, come posso conservare il basilico più a lungo?",
                "Mettilo in un bicchiere d'acqua come un mazzo di fiori, fuori dal frigorifero.",
            ),
            (
                "E se ne ho tantissimo?",
                "Puoi fare il pesto e congelarlo in porzioni nei cubetti per il ghiaccio.",
            ),
        ],
        ["Riassumi la conversazione in una riga, per favore."],
    ),
]

# (language, sentence): sentences written for this file, one per language.
LANGUAGE_SAMPLES: list[tuple[str, str]] = [
    ("French", "Je voudrais réserver une table pour deux personnes ce soir, s'il vous plaît."),
    ("German", "Könnten Sie mir bitte sagen, wann der nächste Zug nach München fährt?"),
    ("Spanish", "Mañana vamos a la playa si no llueve."),
    ("Portuguese", "A reunião foi adiada para a próxima semana por causa da greve."),
    ("Italian", "Ho dimenticato l'ombrello sul treno stamattina."),
    ("Dutch", "We fietsen elke zondag langs de rivier naar het dorp."),
    ("Swedish", "Jag har bott i Göteborg i nästan tio år nu."),
    ("Polish", "Czy możesz mi pomóc z tym zadaniem domowym?"),
    ("Turkish", "Bu akşam arkadaşlarımla sinemaya gideceğim."),  # noqa: RUF001 (Turkish dotless i)
    ("Japanese", "明日は雨が降るそうなので、傘を持って行きます。"),
    ("Chinese", "这家餐厅的面条非常好吃，我们下周再来吧。"),  # noqa: RUF001 (a Chinese comma)
    ("Korean", "주말에 가족과 함께 산에 갈 거예요."),
    ("Finnish", "Sauna on lämmin, tule heti kun ehdit."),
    ("Czech", "Zítra ráno musím jít k zubaři."),
    ("Greek", "Το καλοκαίρι πηγαίνουμε πάντα στο νησί της γιαγιάς μου."),  # noqa: RUF001 (Greek)
    ("Russian", "Я забыл ключи дома, поэтому жду соседа."),
    ("Indonesian", "Saya sedang belajar memasak rendang dari ibu saya."),
    ("Vietnamese", "Tôi thích uống cà phê sữa đá vào buổi sáng."),
    ("Hindi", "मुझे आज शाम को बाज़ार जाना है।"),
    ("Catalan", "Aquest estiu anirem a passar uns dies a la muntanya."),
    ("Norwegian", "Vi må handle melk og brød før butikken stenger."),
    ("Hungarian", "Egy kávét kérek szépen, tej nélkül."),
]


LANGUAGE_ASKS = [
    'What language is this? "{s}"',
    'Quick one: which language is "{s}" written in? Just the language name, please.',
    "A friend texted me this:\n{s}\nWhich language is it?",
    "Identify the language of the following text and answer with its English name only.\n\n{s}",
    "which language?? {s}",
]

LANGUAGE_LEADS: list[Exchange] = [
    ("I found a handwritten note inside a second-hand book.", "How intriguing! What does it say?"),
    (
        "My neighbour left a message on my door and I can't read it.",
        "Happy to help. Can you type out what it says?",
    ),
    (
        "I'm sorting old postcards from my grandmother.",
        "That sounds like a lovely project. Is there one you're curious about?",
    ),
    (
        "There's a label on a jar I bought at a market abroad.",
        "Labels can be tricky. What's written on it?",
    ),
    (
        "A customer left a review on our shop page that nobody here can read.",
        "Paste it here and I'll take a look.",
    ),
]

LANGUAGE_NEXT = [
    "And this one? {s}",
    'Thanks. What about "{s}"?',
    "Great, one more:\n{s}",
]

LANGUAGE_FOLLOWUPS = [
    "It says: «{s}» What language is that? One word, please.",
    "Here it is: {s}\nWhich language is this?",
]


def _messages(exchanges: Sequence[Exchange], final: str) -> list[dict[str, str]]:
    messages = []
    for user, assistant in exchanges:
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
    messages.append({"role": "user", "content": final})
    return messages


def _summary_chat_en(rng: random.Random) -> list[dict[str, str]]:
    conversation = pick(rng, CONVERSATIONS_EN)
    turns = rng.randint(1, len(conversation))
    return _messages(conversation[:turns], pick(rng, SUMMARY_ASKS_EN))


def _summary_chat_other(rng: random.Random) -> list[dict[str, str]]:
    conversation, asks = pick(rng, CONVERSATIONS_OTHER)
    turns = rng.randint(1, len(conversation))
    return _messages(conversation[:turns], pick(rng, asks))


def _language_chat(rng: random.Random) -> list[dict[str, str]]:
    (language, first), (_, second) = rng.sample(LANGUAGE_SAMPLES, 2)
    draw = rng.random()
    if draw < 0.4:
        # A second question after the assistant named the first language.
        answer = pick(rng, [f"{language}.", language, f"That's {language}."])
        ask = pick(rng, LANGUAGE_ASKS).format(s=first)
        return _messages([(ask, answer)], pick(rng, LANGUAGE_NEXT).format(s=second))
    if draw < 0.75:
        followup = pick(rng, LANGUAGE_FOLLOWUPS).format(s=first)
        return _messages([pick(rng, LANGUAGE_LEADS)], followup)
    return _messages([], pick(rng, LANGUAGE_ASKS).format(s=first))


def make_chats(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Multi-turn snippets ending in a user message: one-line summaries or language ids."""
    kinds = [_summary_chat_en] * 55 + [_summary_chat_other] * 15 + [_language_chat] * 30
    kinds = (kinds * (count // len(kinds) + 1))[:count]
    rng.shuffle(kinds)
    seen: set[str] = set()
    rows = []
    for index, kind in enumerate(kinds, start=1):
        messages = kind(rng)
        for _ in range(20):
            key = json.dumps(messages, ensure_ascii=False)
            if key not in seen:
                break
            messages = kind(rng)
        seen.add(json.dumps(messages, ensure_ascii=False))
        rows.append({"id": f"c{index:03d}", "messages": messages})
    return rows


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_news_parquet(path: Path, rows: Sequence[dict[str, str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ("id", "headline", "summary", "source")
    schema = pa.schema([pa.field(name, pa.string(), nullable=False) for name in columns])
    table = pa.Table.from_pylist(list(rows), schema=schema)
    pq.write_table(table, path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write to")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = parser.parse_args(argv)
    out: Path = args.out
    seed: int = args.seed
    out.mkdir(parents=True, exist_ok=True)

    def rng(name: str) -> random.Random:
        return random.Random(f"{seed}-{name}")

    reviews = make_reviews(rng("reviews"), N_REVIEWS)
    news = make_news(rng("news"), N_NEWS)
    tickets = make_support_batch(rng("support_batch"), N_TICKETS)
    chats = make_chats(rng("chats"), N_CHATS)

    write_jsonl(out / "reviews.jsonl", reviews)
    write_news_parquet(out / "news.parquet", news)
    write_jsonl(out / "support_batch.jsonl", tickets)
    write_jsonl(out / "chats.jsonl", chats)
    for name, rows in (
        ("reviews.jsonl", reviews),
        ("news.parquet", news),
        ("support_batch.jsonl", tickets),
        ("chats.jsonl", chats),
    ):
        print(f"wrote {len(rows):4d} rows to {out / name}")


if __name__ == "__main__":
    main()
