"""Write zbatch's example inputs: reviews, news, support tickets and chat snippets.

    python sample_data/make_samples.py            # writes next to this script
    python sample_data/make_samples.py --out /tmp/samples --seed 7

Every text is composed from the hand-written fragments below with ``random.Random``,
so the output is the same on every run for a given seed. Each file has its own
generator (seeded with "<seed>-<file>"), so changing one does not reshuffle the others.
Only the standard library is used, plus pyarrow for ``news.parquet``.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def pick[T](rng: random.Random, items: Sequence[T]) -> T:
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

PRODUCTS: dict[str, list[str]] = {
    "kitchen": [
        "Brava 12-Cup Coffee Maker",
        "Crème Brûlée Kitchen Torch",
        "山水 Bamboo Cutting Board",
        "Kettlewell Gooseneck Kettle",
        "Ferrum 26 cm Cast-Iron Skillet",
    ],
    "audio": [
        "Pulse Mini Bluetooth Speaker",
        "Quietline ANC Headphones",
        "Tōne Wireless Earbuds",
    ],
    "home": [
        "Nordlys LED Desk Lamp",
        "Sova Memory-Foam Pillow",
        "Aurora Smart Bulb (4-pack)",
        "Hjem Wool Throw Blanket",
    ],
    "outdoor": [
        "Trailhead 28L Daypack",
        "Sierra Ultralight 2-Person Tent",
        "Glacier Insulated Bottle 750 ml",
    ],
    "office": [
        "ErgoLift Standing Desk",
        "Kōyō Fountain Pen",
        "Margin Dot-Grid Notebook",
    ],
    "gadgets": [
        "Volt 20000 mAh Power Bank",
        "Lumo 7\" E-Reader",
        "Pico 6-in-1 USB-C Hub",
    ],
}

# aspect -> sentiment -> sentences. Sentences start with a common word so that
# lower_first() can join them after "but" or "that said,".
Aspects = dict[str, dict[str, list[str]]]

GENERIC_ASPECTS: Aspects = {
    "price": {
        "pos": [
            "The price is fair for what you get.",
            "It was on sale when I bought it, but I'd happily pay full price.",
            "For the money, it's hard to beat.",
        ],
        "neg": [
            "It's far too expensive for the quality.",
            "At this price I expected a lot more.",
            "You can find better for half the money.",
        ],
        "neu": [
            "The price is about what you'd expect.",
            "It's neither cheap nor expensive.",
        ],
    },
    "delivery": {
        "pos": [
            "Delivery was quick, two days door to door.",
            "It arrived a day earlier than promised.",
        ],
        "neg": [
            "Delivery took almost three weeks.",
            "The courier left it in the rain outside the building.",
        ],
        "neu": [
            "Delivery took about a week, as stated.",
        ],
    },
    "packaging": {
        "pos": [
            "The packaging was minimal and fully recyclable, which I appreciate.",
            "It came well packed, with no plastic.",
        ],
        "neg": [
            "The box was crushed and one corner of the item was scuffed.",
            "There was an absurd amount of plastic in the box.",
        ],
        "neu": [
            "The packaging is plain cardboard, nothing special.",
        ],
    },
    "support": {
        "pos": [
            "Customer service answered my question within an hour.",
            "When I had a question, the support team was friendly and helpful.",
        ],
        "neg": [
            "Customer service never replied to my two emails.",
            "Support kept sending me the same copy-pasted answer.",
        ],
        "neu": [
            "I contacted support once and got a standard reply after a few days.",
        ],
    },
}

CATEGORY_ASPECTS: dict[str, Aspects] = {
    "kitchen": {
        "build": {
            "pos": [
                "It feels solid and well made.",
                "The finish is lovely and it looks great on the counter.",
            ],
            "neg": [
                "The handle started wobbling after a month.",
                "It feels flimsy, and a part cracked the first week.",
            ],
            "neu": ["The build quality is okay, though some parts feel a bit plasticky."],
        },
        "cleaning": {
            "pos": [
                "Cleaning takes thirty seconds under the tap.",
                "It's very easy to clean.",
            ],
            "neg": [
                "Cleaning it is a nightmare, there are too many small crevices.",
                "It stains easily and doesn't come clean.",
            ],
            "neu": ["Cleaning is a bit fiddly but manageable."],
        },
        "performance": {
            "pos": [
                "It heats up fast and evenly.",
                "It does exactly what I need every single morning.",
                "The results are consistently excellent ☕",
            ],
            "neg": [
                "It takes forever to heat up.",
                "The results are uneven no matter what I try.",
            ],
            "neu": ["It works, but it's not noticeably better than my old one."],
        },
    },
    "audio": {
        "sound": {
            "pos": [
                "The sound is rich, with surprisingly deep bass.",
                "Vocals are crisp and clear, even at low volume.",
            ],
            "neg": [
                "The sound is tinny and distorts at higher volume.",
                "Bass is basically non-existent.",
            ],
            "neu": ["The sound is decent, nothing to write home about."],
        },
        "battery": {
            "pos": [
                "Battery life is excellent, I charge it once a week.",
                "The battery easily lasts a full day of use.",
            ],
            "neg": [
                "The battery barely lasts three hours.",
                "Battery life has dropped noticeably after two months.",
            ],
            "neu": ["Battery life matches the spec sheet, more or less."],
        },
        "connection": {
            "pos": [
                "Pairing with my phone took seconds and it never drops.",
                "It switches between my laptop and phone without fuss.",
            ],
            "neg": [
                "The Bluetooth connection drops every few minutes.",
                "It refuses to pair with my laptop at all.",
            ],
            "neu": ["Pairing works, though it sometimes needs a second try."],
        },
        "comfort": {
            "pos": ["They are comfortable enough to wear for hours."],
            "neg": ["They hurt my ears after about twenty minutes."],
            "neu": ["Comfort is fine for an hour or so."],
        },
    },
    "home": {
        "comfort": {
            "pos": [
                "It's incredibly cosy.",
                "I've slept better since the day it arrived.",
            ],
            "neg": [
                "It's uncomfortable and smells of chemicals.",
                "It went flat within a couple of weeks.",
            ],
            "neu": ["It's comfortable enough, if a little firmer than I'd like."],
        },
        "light": {
            "pos": [
                "The light is warm and even, with no flicker at all.",
                "The dimmer has a really nice range.",
            ],
            "neg": [
                "The light flickers at low brightness.",
                "The colour is a harsh blue-white that gives me headaches.",
            ],
            "neu": ["The light is bright enough, though the colour is a bit cold."],
        },
        "setup": {
            "pos": ["Setup took five minutes, app included."],
            "neg": ["The app kept crashing during setup and I gave up twice."],
            "neu": ["Setup was a little confusing but I got there."],
        },
        "looks": {
            "pos": ["It looks even better than in the photos."],
            "neg": ["The colour is nothing like the photos."],
            "neu": ["It looks fine, a bit plainer than pictured."],
        },
    },
    "outdoor": {
        "durability": {
            "pos": [
                "It has survived a season of hiking without a scratch.",
                "The fabric is tough and the zips are excellent.",
            ],
            "neg": [
                "A seam split on the second trip.",
                "The zip broke after a handful of uses.",
            ],
            "neu": ["It seems durable so far, but it's only been a few outings."],
        },
        "weight": {
            "pos": ["It's impressively light."],
            "neg": ["It's much heavier than the listing suggests."],
            "neu": ["The weight is average for this kind of gear."],
        },
        "weather": {
            "pos": [
                "It kept everything dry through a full day of rain in Snowdonia.",
                "My drinks stay cold all day, even in the sun.",
            ],
            "neg": [
                "It leaked in the first proper rain.",
                "It doesn't keep anything cold for more than a couple of hours.",
            ],
            "neu": ["It handles light rain, I wouldn't trust it in a storm."],
        },
    },
    "office": {
        "build": {
            "pos": ["It feels sturdy and well finished."],
            "neg": ["It wobbles even at the lowest height."],
            "neu": ["The build is acceptable, with a few rough edges."],
        },
        "writing": {
            "pos": [
                "It writes smoothly and the ink doesn't bleed through the page.",
                "The paper takes fountain pen ink beautifully.",
            ],
            "neg": [
                "It skips constantly and leaks in my pocket.",
                "Ink feathers badly on every page.",
            ],
            "neu": ["Writing is fine with a gel pen, less so with a fountain pen."],
        },
        "ergonomics": {
            "pos": ["My back pain has eased since I started using it."],
            "neg": ["The motor is loud and it stops halfway up now and then."],
            "neu": ["It takes some getting used to, but it's okay."],
        },
    },
    "gadgets": {
        "battery": {
            "pos": ["It charges my phone almost five times over."],
            "neg": ["It loses charge even when I'm not using it."],
            "neu": ["Capacity is a bit below what's advertised, as usual."],
        },
        "speed": {
            "pos": [
                "Charging is fast and it doesn't get hot.",
                "The screen is sharp and page turns are instant.",
            ],
            "neg": [
                "It gets worryingly hot while charging.",
                "Page turns are sluggish and the screen ghosts.",
            ],
            "neu": ["Speed is fine for everyday use."],
        },
        "compatibility": {
            "pos": ["Everything I plugged in worked straight away, including a 4K monitor."],
            "neg": ["My external monitor isn't detected half the time."],
            "neu": ["Most things work, though my older USB stick isn't recognised."],
        },
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
        "Returned it after two weeks.",
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
    "I've been using it every day for about three months now.",
    "We bought it for our cabin near Tromsø and it has seen heavy use.",
    "My partner picked this after reading a dozen reviews, so expectations were high.",
    "I replaced a ten-year-old model with this one.",
    "I use it at work and at home, so it gets carried around a lot.",
    "I ordered it for a long trip and tested it properly before leaving.",
    "This was a birthday present from my sister, who knows I'm picky.",
]

HEDGES = ["To be fair, ", "Honestly, ", "So far, ", "For what it's worth, ", "In fairness, "]

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
        "Three stars feels right.",
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


def _aspect_sentences(
    rng: random.Random, aspects: Aspects, polarity: str, count: int, used: set[str]
) -> list[str]:
    """``count`` sentences about distinct aspects (not in ``used``), in ``polarity``."""
    free = [name for name in aspects if name not in used]
    rng.shuffle(free)
    sentences = []
    for name in free[:count]:
        used.add(name)
        sentences.append(pick(rng, aspects[name][polarity]))
    return sentences


def _review_text(rng: random.Random, category: str, sentiment: str, length: str) -> str:
    if length == "short":
        return pick(rng, SHORT_REVIEWS[sentiment])
    aspects = {**CATEGORY_ASPECTS[category], **GENERIC_ASPECTS}
    used: set[str] = set()
    parts = [pick(rng, OPENERS[sentiment])]
    if length == "long":
        parts.append(pick(rng, CONTEXTS))
    main = {"short": 0, "normal": rng.randint(1, 2), "long": 4}[length]
    if sentiment == "neu":
        good = _aspect_sentences(rng, aspects, "pos", 1, used)
        bad = _aspect_sentences(rng, aspects, "neg", 1, used)
        joiner = pick(rng, [" But ", " On the other hand, ", " That said, "])
        parts.append(good[0] + joiner + lower_first(bad[0]) if joiner != " But " else
                     good[0] + joiner + bad[0])
        parts.extend(_aspect_sentences(rng, aspects, "neu", main - 1, used))
    else:
        parts.extend(_aspect_sentences(rng, aspects, sentiment, main, used))
        # A minor point the other way keeps 4- and 2-star reviews realistic.
        if length == "long" or rng.random() < 0.3:
            other = "neg" if sentiment == "pos" else "pos"
            minor = _aspect_sentences(rng, aspects, other, 1, used)
            if minor:
                lead = "My only gripe: " if sentiment == "pos" else pick(rng, HEDGES)
                parts.append(lead + lower_first(minor[0]))
    if length == "long":
        parts.extend(_aspect_sentences(rng, aspects, "neu", 1, used))
    if length == "long" or rng.random() < 0.6:
        parts.append(pick(rng, CLOSERS[sentiment]))
    text = " ".join(parts)
    if length == "long":
        # Pad with further aspect sentences until the review is around 600 characters.
        while len(text) < 560:
            extra = _aspect_sentences(rng, aspects, sentiment if sentiment != "neu" else "neu",
                                      1, used)
            if not extra:
                break
            parts.insert(-1, extra[0])
            text = " ".join(parts)
    return text


def make_reviews(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Product reviews; sentiment is positive, negative or neutral and matches the stars."""
    products = [(category, name) for category, names in PRODUCTS.items() for name in names]
    seen: set[str] = set()
    rows = []
    for index in range(1, count + 1):
        category, product = pick(rng, products)
        draw = rng.random()
        sentiment = "pos" if draw < 0.45 else ("neg" if draw < 0.75 else "neu")
        draw = rng.random()
        length = "short" if draw < 0.04 else ("long" if draw < 0.09 else "normal")
        text = unique(rng, lambda r: _review_text(r, category, sentiment, length), seen)
        rows.append(
            {
                "id": f"r{index:04d}",
                "product": product,
                "text": text,
                "stars": _stars_for(rng, sentiment),
            }
        )
    return rows


# --------------------------------------------------------------------------------------
# News items
# --------------------------------------------------------------------------------------

# Per topic: who the story is about; (headline phrase, summary phrase) pairs with
# {n}, {pct}, {city}, {day}, {rival} slots; and follow-up sentences for the summary.
NewsTopic = dict[str, list[Any]]

NEWS: dict[str, NewsTopic] = {
    "business": {
        "subjects": [
            "Skyvale Airlines", "Lindqvist & Søn", "FreshWay Markets", "Orbis Logistics",
            "Banco Meridional", "Kestrel Motors", "Halden Paper Mills", "Café Lumière",
        ],
        "actions": [
            ("posts record quarterly profit",
             "reported its strongest quarter on record on {day}, with revenue up {pct}%"),
            ("cuts {n} jobs in restructuring",
             "said on {day} it would cut {n} jobs as part of a two-year restructuring plan"),
            ("agrees to buy rival {rival}",
             "agreed on {day} to acquire {rival} in a deal that still needs regulatory approval"),
            ("warns of weaker sales",
             "warned on {day} that sales would fall short of forecasts for the rest of the year"),
            ("opens new headquarters in {city}",
             "moved into a new headquarters in {city} this week, consolidating three offices"),
            ("raises prices for second time this year",
             "told customers on {day} that prices would rise by about {pct}% from next month"),
            ("names new chief executive",
             "appointed a new chief executive on {day} after a months-long search"),
            ("settles dispute with suppliers",
             "reached a settlement with its main suppliers on {day}, ending a long pricing row"),
        ],
        "rivals": ["Nordway", "Bellmont Group", "Pacifica Trading", "Zenit SA"],
        "followups": [
            "Shares rose {pct}% in early trading.",
            "Analysts had expected a weaker result.",
            "The company declined to comment beyond its statement.",
            "Unions said they would seek talks with management.",
            "Investors reacted cautiously, and the shares closed flat.",
            "The firm employs about {n} people across Europe.",
        ],
    },
    "sports": {
        "subjects": [
            "Porto Vale FC", "The Riverside Hawks", "Malmö Lions", "Kraków Eagles",
            "The national rugby side", "Atlético Sereno", "The Harbour City Comets",
        ],
        "actions": [
            ("beat {rival} in last-minute thriller",
             "beat {rival} with a goal in stoppage time on {day}"),
            ("clinch league title with two games to spare",
             "secured the league title on {day} with two matches still to play"),
            ("sack head coach after losing run",
             "dismissed their head coach on {day} after {n} defeats in a row"),
            ("sign teenage striker from {rival}",
             "completed the signing of a 17-year-old striker from {rival} on {day}"),
            ("knocked out of cup by second-tier {rival}",
             "were eliminated from the cup by second-division {rival} on {day}"),
            ("unveil plans for new {n}-seat stadium",
             "presented plans on {day} for a new stadium with room for {n} fans"),
            ("hold {rival} to goalless draw",
             "held {rival} to a 0-0 draw in front of a sell-out crowd on {day}"),
        ],
        "rivals": ["Northgate United", "Sporting Alvor", "the Bay City Bears", "FK Dunaj"],
        "followups": [
            "The captain called it the best performance of the season.",
            "Fans celebrated late into the night in {city}.",
            "The result leaves them {n} points clear at the top.",
            "The coach praised the squad's fitness in the closing stages.",
            "Ticket sales for the next home game have already doubled.",
            "It is their first trophy in {n} years.",
        ],
    },
    "science": {
        "subjects": [
            "Researchers at the University of Tartu", "Astronomers at the Atacama observatory",
            "Marine biologists in Bergen", "Chemists at the Kessler Institute",
            "Geologists in Iceland", "Engineers at the Polytechnic of Turin",
            "Climate scientists in Potsdam",
        ],
        "actions": [
            ("find new species of deep-sea coral",
             "described a previously unknown species of coral living {n} metres down"),
            ("detect water vapour around distant exoplanet",
             "reported signs of water vapour in the atmosphere of a planet {n} light-years away"),
            ("develop battery that survives extreme cold",
             "built a battery cell that kept {pct}% of its capacity at minus 40 degrees"),
            ("map ancient river system under the ice",
             "published the most detailed map yet of a river network buried beneath the ice"),
            ("link gut bacteria to sleep quality",
             "found that certain gut bacteria were linked to deeper sleep in a study of {n} adults"),
            ("measure fastest glacier retreat on record",
             "measured a glacier retreating {n} metres in a single year, the fastest on record"),
            ("grow crystals that bend without breaking",
             "reported organic crystals that can bend repeatedly without cracking"),
        ],
        "rivals": [],
        "followups": [
            "The findings were published in a peer-reviewed journal on {day}.",
            "The team plans a larger follow-up study next year.",
            "Other researchers called the results promising but preliminary.",
            "The work was funded by a European research grant.",
            "The data will be made freely available to other scientists.",
        ],
    },
    "politics": {
        "subjects": [
            "Parliament", "The governing coalition", "Prime Minister Helena Voss",
            "The opposition Green Alliance", "Mayor Tomás Ferreira",
            "The Senate finance committee", "Interior Minister Jonas Eklund",
        ],
        "actions": [
            ("backs plan to lower voting age to 16",
             "voted on {day} in favour of lowering the voting age to 16"),
            ("rejects budget amid row over defence spending",
             "rejected the draft budget on {day} after a heated debate over defence spending"),
            ("proposes cap on short-term rentals in {city}",
             "proposed limiting short-term holiday rentals in {city} to {n} nights a year"),
            ("faces criticism over delayed housing reform",
             "came under pressure on {day} as a promised housing reform slipped again"),
            ("calls for inquiry into election funding",
             "called on {day} for an independent inquiry into how election campaigns are funded"),
            ("unveils {n}-point plan to cut waiting lists",
             "presented a {n}-point plan on {day} to shorten hospital waiting lists"),
            ("signs border agreement with neighbours",
             "signed an agreement on {day} to simplify border checks with neighbouring states"),
        ],
        "rivals": [],
        "followups": [
            "A final vote is expected before the summer recess.",
            "Critics said the measure does not go far enough.",
            "Opinion polls suggest voters are split on the issue.",
            "The opposition promised to challenge the decision in court.",
            "Protesters gathered outside the parliament building in {city}.",
            "Officials said details would follow in the coming weeks.",
        ],
    },
    "entertainment": {
        "subjects": [
            "Director Inés Calderón", "Pop duo Neon Harbor", "Actor Kenji Mori",
            "Singer Aïcha Benali", "Comedian Priya Nair", "Rapper Lil Mistral",
            "Composer Jónas Þórsson",
        ],
        "actions": [
            ("announces {n}-date world tour",
             "announced on {day} a world tour of {n} dates, starting in {city}"),
            ("wins best newcomer award at {city} gala",
             "took home the best newcomer award at a ceremony in {city} on {day}"),
            ("releases surprise album at midnight",
             "released a surprise album at midnight on {day} with no advance promotion"),
            ("signs on for sequel to hit drama",
             "confirmed on {day} they will return for the sequel to last year's hit drama"),
            ("cancels concerts after vocal injury",
             "cancelled the next {n} concerts on doctors' advice after a vocal injury"),
            ("tops streaming charts for third week",
             "held the top spot on the streaming charts for a third straight week"),
            ("to star in adaptation of cult novel",
             "will star in a film adaptation of a cult 1970s novel, producers said on {day}"),
        ],
        "rivals": [],
        "followups": [
            "Tickets sold out within {n} minutes.",
            "Fans flooded social media with reactions. 🎉",
            "Critics have been largely positive.",
            "Filming is due to begin in {city} next spring.",
            "A documentary about the making of the project is also planned.",
        ],
    },
    "technology": {
        "subjects": [
            "Chipmaker Veridian", "Cloud provider Nimbus", "Startup Lattice Labs",
            "Phone maker Orin", "Messaging app Chirp", "Robotics firm Kōdō Systems",
            "Search engine Findr",
        ],
        "actions": [
            ("unveils faster, cooler laptop chip",
             "unveiled a laptop processor it says is {pct}% faster while using less power"),
            ("patches critical security flaw",
             "released an urgent update on {day} fixing a flaw that let attackers read messages"),
            ("restores service after six-hour outage",
             "restored service on {day} after an outage that affected users across Europe"),
            ("delays launch of foldable phone",
             "pushed back the launch of its foldable phone, citing problems with the hinge"),
            ("open-sources its speech recognition model",
             "published the code and weights of its speech recognition model on {day}"),
            ("adds end-to-end encryption to group calls",
             "began rolling out end-to-end encryption for group calls of up to {n} people"),
            ("launches delivery robots in {city}",
             "started a pilot of sidewalk delivery robots in {city} on {day}"),
        ],
        "rivals": [],
        "followups": [
            "The update will reach all users within {n} days.",
            "Security researchers welcomed the quick response.",
            "Reviewers said the battery gains were noticeable in early tests.",
            "The company said no customer data was lost.",
            "Competitors are expected to respond with their own announcements.",
            "The feature is turned on by default.",
        ],
    },
}

CITIES = ["Lisbon", "Montréal", "Malmö", "Kraków", "Osaka", "Cape Town", "Valparaíso", "Leeds"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SOURCES = [
    "Harbor Gazette", "The Meridian Post", "Northwind Wire", "Le Quotidien Libre",
    "Daily Ledger", "Nordic Signal", "Pacific Dispatch", "Rheinland Kurier",
]


def _slots(rng: random.Random, topic: NewsTopic) -> dict[str, str]:
    rivals = topic["rivals"] or ["a rival"]
    return {
        "n": str(pick(rng, [3, 5, 7, 12, 40, 120, 350, 800, 1200, 45000])),
        "pct": str(rng.randint(2, 18)),
        "city": pick(rng, CITIES),
        "day": pick(rng, DAYS),
        "rival": pick(rng, rivals),
    }


def _news_item(rng: random.Random, topic: NewsTopic) -> tuple[str, str]:
    subject = pick(rng, topic["subjects"])
    head, summary_phrase = pick(rng, topic["actions"])
    slots = _slots(rng, topic)
    headline = f"{subject} {head.format(**slots)}"
    summary = f"{subject} {summary_phrase.format(**slots)}."
    if rng.random() < 0.7:
        summary += " " + pick(rng, topic["followups"]).format(**_slots(rng, topic))
    return headline, summary


def make_news(rng: random.Random, count: int) -> list[dict[str, str]]:
    """Short news items, an even mix of the six topics in shuffled order."""
    topics = [name for _ in range(count // len(NEWS) + 1) for name in NEWS][:count]
    rng.shuffle(topics)
    seen: set[str] = set()
    rows = []
    for index, name in enumerate(topics, start=1):
        headline, summary = _news_item(rng, NEWS[name])
        for _ in range(20):
            if headline not in seen:
                break
            headline, summary = _news_item(rng, NEWS[name])
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

TICKET_PROBLEMS: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for order #{order}.",
        "My card was charged {amount} but the order shows as cancelled.",
        "I still haven't received the refund for the jacket I returned on {date}.",
        "Can you send me a VAT invoice for order #{order}? Our accountant needs it.",
        "My subscription renewed even though I cancelled it last month.",
        "The discount code WELCOME10 wasn't applied at checkout.",
        "Why is there a {amount} fee on my statement I don't recognise?",
    ],
    "shipping": [
        "My order #{order} was supposed to arrive on {date} and it's still not here.",
        "The tracking number hasn't updated in six days.",
        "The parcel arrived but the box was crushed and the mug inside is broken.",
        "I entered the wrong delivery address, can you change it before it ships?",
        "Only two of the three items in order #{order} arrived.",
        "Do you ship to the Canary Islands, and how long does it take?",
        "The courier says it was delivered but there's nothing at my door.",
    ],
    "account": [
        "I can't log in, the password reset email never arrives.",
        "How do I change the email address on my account?",
        "I got a new phone and lost access to my two-factor codes.",
        "Please delete my account and all my personal data.",
        "My account was locked after too many login attempts.",
        "Someone changed my password and I didn't do it!",
        "I'd like to merge my two accounts, one uses my work email.",
    ],
    "bug": [
        "The app crashes every time I open the basket on Android {version}.",
        "The 'Pay now' button does nothing in Safari.",
        "I get 'Error 500' when I try to save my address.",
        "Search results show the same product {count} times.",
        "The app logs me out every few minutes.",
        "Prices in the app are shown in dollars even though my country is set to France.",
        "When I upload a profile photo the page goes blank.",
    ],
    "other": [
        "Do you offer gift wrapping?",
        "Are your stores open on public holidays?",
        "I'm a blogger and would love to partner with you.",
        "Just wanted to say the new catalogue is beautiful!",
        "Will the green version of the Trailhead daypack come back in stock?",
        "Do you have a student discount?",
        "Can I pick up my order from the Leeds store instead?",
    ],
}

TICKET_DETAILS: dict[str, list[str]] = {
    "billing": [
        "I've attached a screenshot of my bank statement.",
        "This is the second time this has happened.",
        "I paid with PayPal, if that matters.",
    ],
    "shipping": [
        "I need it before my daughter's birthday on Saturday.",
        "I've already checked with my neighbours.",
        "The carrier's website just says 'in transit'.",
    ],
    "account": [
        "I've checked the spam folder too.",
        "I've had this account since 2016 and don't want to lose my order history.",
        "I tried on both the app and the website.",
    ],
    "bug": [
        "I've reinstalled the app and restarted my phone, same thing.",
        "It worked fine until last week's update.",
        "My husband has the same problem on his iPhone.",
    ],
    "other": [
        "Thanks in advance!",
        "No rush at all.",
        "I couldn't find this in the FAQ.",
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
SIGNOFFS = ["Thanks, Maria", "Regards, Tom", "Thank you!", "Cheers, Søren", "Best, Zoë", "—Luis"]
TICKET_FRUSTRATION = [
    "This is really frustrating.",
    "Please sort this out as soon as possible.",
    "I'd appreciate a quick reply.",
    "I've been a loyal customer for years.",
]


def _ticket_slots(rng: random.Random) -> dict[str, str]:
    return {
        "order": str(rng.randint(40000, 99999)),
        "amount": f"€{rng.randint(5, 240)}.{rng.choice(['00', '49', '99'])}",
        "date": f"{rng.randint(1, 28)} {pick(rng, ['March', 'April', 'May', 'June'])}",
        "version": str(rng.randint(11, 15)),
        "count": str(rng.randint(3, 9)),
    }


def _ticket_text(rng: random.Random) -> str:
    draw = rng.random()
    if draw < 0.05:
        return pick(rng, TICKET_FOREIGN)[1].format(**_ticket_slots(rng))
    category = pick(rng, list(TICKET_PROBLEMS))
    if draw < 0.12:
        return pick(rng, TICKET_SHORT[category]).format(**_ticket_slots(rng))
    parts = []
    if rng.random() < 0.6:
        parts.append(pick(rng, GREETINGS))
    problems = rng.sample(TICKET_PROBLEMS[category], 2 if draw > 0.9 else 1)
    parts.extend(problems)
    if rng.random() < 0.5 or draw > 0.9:
        parts.append(pick(rng, TICKET_DETAILS[category]))
    if category != "other" and (rng.random() < 0.25 or draw > 0.9):
        parts.append(pick(rng, TICKET_FRUSTRATION))
    if rng.random() < 0.5:
        parts.append(pick(rng, SIGNOFFS))
    return " ".join(parts).format(**_ticket_slots(rng))


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
        ("I'm going to Lisbon for four days in May. Any tips?",
         "May is a lovely time to go. Base yourself in Baixa or Príncipe Real, buy a Viva "
         "Viagem card for trams and the metro, and keep a day for Sintra."),
        ("Is Sintra worth it if I don't like crowds?",
         "Yes, if you arrive before 9 a.m. and start with Pena Palace; the Moorish Castle "
         "and Monserrate are much quieter."),
        ("And where should I eat pastéis de nata?",
         "Try a small neighbourhood pastelaria rather than the famous spot in Belém; the "
         "queues are shorter and they're just as good."),
    ],
    [
        ("My sourdough starter smells like nail polish remover. Is it dead?",
         "No, that acetone smell means it's hungry. Feed it more often, say every 12 hours, "
         "and keep it somewhere warm."),
        ("How do I know when it's ready to bake with?",
         "When it reliably doubles within 4 to 6 hours of a feed and a spoonful floats in "
         "water, it's ready."),
        ("Can I keep it in the fridge between bakes?",
         "Yes. Feed it, let it rise for an hour, then refrigerate. Give it two feeds at room "
         "temperature before baking."),
    ],
    [
        ("The kitchen tap drips even when it's fully closed.",
         "That's usually a worn washer or cartridge. Is it a single lever or two separate "
         "handles?"),
        ("Single lever, about eight years old.",
         "Then it's probably the cartridge. Turn off the water under the sink, remove the "
         "handle and take the cartridge to a hardware shop to match it."),
        ("Do I need special tools?",
         "An Allen key, an adjustable spanner and a towel for the sink should be enough."),
    ],
    [
        ("I need a laptop for editing 4K video, budget around 1,500 euros.",
         "Look for at least 32 GB of RAM, a recent mid-range GPU or an Apple M-series chip, "
         "and a fast 1 TB SSD."),
        ("Is 16 GB of RAM really not enough?",
         "It works for short clips, but with long timelines and effects you'll hit the limit "
         "quickly. 32 GB gives you headroom."),
        ("What about the screen?",
         "If you colour grade, pick a panel that covers close to 100% of DCI-P3, or plan on "
         "an external calibrated monitor."),
        ("OK, I think I'll wait for the autumn sales.",
         "Good idea; prices on last year's models usually drop then."),
    ],
    [
        ("I'm 41 and want to learn guitar. Is it too late?",
         "Not at all. Adults often progress faster at first because they practise more "
         "deliberately."),
        ("How much should I practise?",
         "Twenty minutes a day beats two hours on Sunday. Start with a few open chords and "
         "simple strumming patterns."),
        ("My fingertips hurt a lot.",
         "That's normal for the first few weeks. Keep sessions short until calluses form, and "
         "check the strings aren't set too high."),
    ],
    [
        ("My Python script throws KeyError: 'price' on some rows.",
         "Some of your dictionaries don't have a 'price' key. Use row.get('price') or check "
         "for missing values before that line."),
        ("The data comes from a CSV. Why would the key be missing?",
         "Possibly a header with a trailing space, like 'price ', or a different delimiter in "
         "some files. Print the keys of a failing row."),
        ("You're right, the header is 'Price' with a capital P in one file.",
         "Normalise the headers when you read them, for example by lower-casing and "
         "stripping each one."),
    ],
    [
        ("We're moving flat next month and I'm worried about our cat.",
         "Cats find moves stressful. Set up one quiet room in the new flat with her litter "
         "tray, bed and food before letting her explore."),
        ("Should I keep her in a cattery during the move itself?",
         "If moving day will be chaotic, a day or two at a cattery or a friend's place can "
         "help."),
        ("How long before she can go outside?",
         "Keep her indoors for at least two to three weeks so she learns the new place is "
         "home."),
    ],
    [
        ("I signed up for my first marathon in October. Where do I start?",
         "With a 16 to 18 week plan. Build your weekly distance slowly, no more than about "
         "10% a week, with one long run every weekend."),
        ("My knees ache after long runs.",
         "Check your shoes, slow the long runs down and add strength work for hips and "
         "glutes. If the pain is sharp, see a physio."),
        ("What should I eat on race day?",
         "Nothing new. Have a familiar breakfast three hours before and practise your gels "
         "during training runs."),
    ],
    [
        ("The leaves on my monstera are turning yellow.",
         "Most often that's overwatering. Does the pot have drainage holes, and how often do "
         "you water it?"),
        ("Every three days, and the pot has no holes.",
         "That's likely the cause. Repot it into a pot with drainage and water only when the "
         "top few centimetres of soil are dry."),
        ("Should I cut off the yellow leaves?",
         "Yes, they won't turn green again. Cut them at the base with clean scissors."),
    ],
    [
        ("I'm best man at my brother's wedding and I have to give a speech. Help!",
         "Keep it to about five minutes: a warm opening, one or two stories, a kind word "
         "about the couple, and a toast."),
        ("Is it OK to tell the story about him getting lost in Amsterdam?",
         "If it's affectionate and the grandparents won't be shocked, yes. Run it past "
         "someone who knows the family."),
        ("How do I not get nervous?",
         "Rehearse out loud several times, keep notes on cards, and take a slow breath before "
         "you start."),
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
            ("Hola, quiero empezar a correr pero nunca he hecho deporte.",
             "¡Qué bien! Empieza alternando un minuto corriendo y dos caminando, tres veces "
             "por semana."),
            ("¿Y cuándo puedo correr media hora seguida?",
             "Normalmente en unas ocho semanas, si aumentas poco a poco."),
        ],
        ["Resume esta conversación en una sola línea, por favor.",
         "¿Me haces un resumen de una línea?"],
    ),
    (
        [
            ("Mi hijo de seis años no quiere leer. ¿Qué puedo hacer?",
             "Deja que elija los libros él mismo, aunque sean cómics, y leed juntos diez "
             "minutos antes de dormir."),
            ("¿Y si se aburre enseguida?",
             "Alterna: tú lees una página y él la siguiente. Lo importante es que sea un "
             "momento agradable."),
        ],
        ["Resúmelo todo en una frase."],
    ),
    (
        [
            ("Bonjour ! Je cherche une idée de dîner végétarien rapide.",
             "Un curry de pois chiches au lait de coco se prépare en vingt minutes, avec du "
             "riz ou du pain naan."),
            ("Je n'ai pas de lait de coco.",
             "Remplacez-le par des tomates concassées et un peu de crème fraîche."),
        ],
        ["Peux-tu résumer notre échange en une seule ligne ?",
         "Un résumé en une phrase, s'il te plaît."],
    ),
    (
        [
            ("Mon vélo fait un bruit de cliquetis quand je pédale.",
             "Vérifiez d'abord la chaîne : elle est peut-être sèche ou mal alignée sur le "
             "dérailleur."),
            ("Je l'ai graissée, mais le bruit continue.",
             "Alors regardez les pédales et le boîtier de pédalier ; un roulement usé fait "
             "souvent ce bruit."),
        ],
        ["Résume cette conversation en une ligne."],
    ),
    (
        [
            ("Ich möchte Spanisch lernen, habe aber nur wenig Zeit.",
             "Zehn Minuten am Tag mit einer App und ein Podcast auf dem Arbeitsweg reichen "
             "für den Anfang."),
            ("Wann sollte ich anfangen zu sprechen?",
             "So früh wie möglich. Ein Tandempartner hilft sehr, auch wenn es am Anfang "
             "holprig ist."),
        ],
        ["Kannst du unser Gespräch in einem Satz zusammenfassen?",
         "Bitte fasse das in einer Zeile zusammen."],
    ),
    (
        [
            ("Unsere Waschmaschine zeigt den Fehler E18 an.",
             "Das bedeutet meist, dass das Wasser nicht abläuft. Prüfen Sie das Flusensieb "
             "unten an der Vorderseite."),
            ("Im Sieb war tatsächlich eine Socke.",
             "Dann sollte sie wieder funktionieren. Starten Sie zur Sicherheit ein kurzes "
             "Programm."),
        ],
        ["Fass das bitte in einem Satz zusammen."],
    ),
    (
        [
            ("Olá! Vou a Salvador em julho. Vai chover muito?",
             "Julho é inverno na Bahia e costuma chover bastante, mas geralmente em pancadas "
             "curtas."),
            ("Então vale a pena ir mesmo assim?",
             "Vale sim: as praias ficam mais vazias e os preços dos hotéis são mais baixos."),
        ],
        ["Pode resumir a nossa conversa numa linha?"],
    ),
    (
        [
            ("Ciao, come posso conservare il basilico più a lungo?",
             "Mettilo in un bicchiere d'acqua come un mazzo di fiori, fuori dal frigorifero."),
            ("E se ne ho tantissimo?",
             "Puoi fare il pesto e congelarlo in porzioni nei cubetti per il ghiaccio."),
        ],
        ["Riassumi la conversazione in una riga, per favore."],
    ),
]

# Sentences written for this file, one or two per language.
LANGUAGE_SAMPLES: list[str] = [
    "Je voudrais réserver une table pour deux personnes ce soir, s'il vous plaît.",
    "Könnten Sie mir bitte sagen, wann der nächste Zug nach München fährt?",
    "Mañana vamos a la playa si no llueve.",
    "A reunião foi adiada para a próxima semana por causa da greve.",
    "Ho dimenticato l'ombrello sul treno stamattina.",
    "We fietsen elke zondag langs de rivier naar het dorp.",
    "Jag har bott i Göteborg i nästan tio år nu.",
    "Czy możesz mi pomóc z tym zadaniem domowym?",
    "Bu akşam arkadaşlarımla sinemaya gideceğim.",
    "明日は雨が降るそうなので、傘を持って行きます。",
    "这家餐厅的面条非常好吃，我们下周再来吧。",  # noqa: RUF001 (a Chinese comma)
    "주말에 가족과 함께 산에 갈 거예요.",
    "Sauna on lämmin, tule heti kun ehdit.",
    "Zítra ráno musím jít k zubaři.",
    "Το καλοκαίρι πηγαίνουμε πάντα στο νησί της γιαγιάς μου.",  # noqa: RUF001 (Greek)
    "Я забыл ключи дома, поэтому жду соседа.",  # noqa: RUF001 (Cyrillic)
    "Saya sedang belajar memasak rendang dari ibu saya.",
    "Tôi thích uống cà phê sữa đá vào buổi sáng.",
    "मुझे आज शाम को बाज़ार जाना है।",
    "Aquest estiu anirem a passar uns dies a la muntanya.",
    "Vi må handle melk og brød før butikken stenger.",
    "Egy kávét kérek szépen, tej nélkül.",
]

LANGUAGE_ASKS = [
    'What language is this? "{s}"',
    'Quick one: which language is "{s}" written in? Just the language name, please.',
    "A friend texted me this:\n{s}\nWhich language is it?",
    "Identify the language of the following text and answer with its English name only.\n\n{s}",
    "which language?? {s}",
]

LANGUAGE_LEADS: list[Exchange] = [
    ("I found a handwritten note inside a second-hand book.",
     "How intriguing! What does it say?"),
    ("My neighbour left a message on my door and I can't read it.",
     "Happy to help. Can you type out what it says?"),
    ("I'm sorting old postcards from my grandmother.",
     "That sounds like a lovely project. Is there one you're curious about?"),
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
    sample = pick(rng, LANGUAGE_SAMPLES)
    if rng.random() < 0.3:
        return _messages([pick(rng, LANGUAGE_LEADS)], pick(rng, LANGUAGE_FOLLOWUPS).format(s=sample))
    return _messages([], pick(rng, LANGUAGE_ASKS).format(s=sample))


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
