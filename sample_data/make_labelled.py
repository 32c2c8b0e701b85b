"""Write sample_data/tickets_labelled.jsonl: support tickets with a gold category.

    .venv/bin/python sample_data/make_labelled.py              # writes next to this script
    .venv/bin/python sample_data/make_labelled.py --out /tmp/t.jsonl --seed 7

Each ticket is composed from the hand-written fragments below with ``random.Random(seed)``,
so the file is the same on every run for a given seed. A plain ticket states one problem and
asks for it to be solved: its category is that problem's. About a fifth are genuinely
ambiguous (``ambiguous: true``): they state a problem of one category and end with a request
of another (the gold category is the request's: what the customer wants done), or they
describe one category's problem in another's words. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

DEFAULT_SEED = 20261207
ROWS = 300
AMBIGUOUS_SHARE = 0.2
HERE = Path(__file__).resolve().parent
CATEGORIES = ("billing", "shipping", "account", "bug", "other")

SUBJECTS = {
    "billing": [
        "Charged twice",
        "Wrong amount on my invoice",
        "Refund not received",
        "Payment question",
        "Subscription charge",
    ],
    "shipping": [
        "Where is my order?",
        "Package not delivered",
        "Tracking not updating",
        "Parcel arrived damaged",
        "Delivery address",
    ],
    "account": [
        "Cannot log in",
        "Password reset",
        "Change my email",
        "Account locked",
        "Delete my account",
    ],
    "bug": [
        "App crashes",
        "Error on checkout page",
        "Button does nothing",
        "Page stays blank",
        "App freezes",
    ],
    "other": [
        "Question about your stores",
        "Feedback",
        "Opening hours",
        "Partnership enquiry",
        "Gift wrapping",
    ],
}
PROBLEMS = {
    "billing": [
        "I was charged twice for order {order}.",
        "My invoice for {month} shows {amount} but the price was lower.",
        "I returned the item three weeks ago and the refund is still not on my card.",
        "My subscription payment went through even though I cancelled it in {month}.",
        "The charge on my card does not match the total at checkout.",
    ],
    "shipping": [
        "My package for order {order} has not arrived after {days} days.",
        "The tracking for my parcel has not moved since {month}.",
        "The courier says delivered but there is no package at my door.",
        "The parcel arrived with the box crushed and the item damaged in delivery.",
        "My order was shipped to my old address.",
    ],
    "account": [
        "I cannot log in: it says my password is wrong even after a reset.",
        "My account is locked after too many login attempts.",
        "I never get the password reset email.",
        "I want to change the email address on my account.",
        "Someone else may have logged in to my account from another country.",
    ],
    "bug": [
        "The app crashes every time I open my order history.",
        "The checkout page shows an error 500 when I press pay.",
        "The button to apply a coupon does nothing on my phone.",
        "The product page stays blank in {browser}.",
        "The app freezes when I upload a photo to a review.",
    ],
    "other": [
        "Do you have a store in {city}?",
        "I just wanted to say the staff in {city} were lovely.",
        "What are your opening hours on public holidays?",
        "We are a small shop in {city} and would like to sell your products.",
        "Can you gift wrap an item and add a card?",
    ],
}
ASKS = {
    "billing": [
        "Please refund the extra charge.",
        "Please correct the invoice.",
        "I would like my money back.",
        "Please check my payment.",
    ],
    "shipping": [
        "Please tell me when it will be delivered.",
        "Please send a new package.",
        "Can you find out where my parcel is?",
        "Please ship it again.",
    ],
    "account": [
        "Please unlock my account.",
        "Please help me log in.",
        "Please reset my password for me.",
        "Please update my account.",
    ],
    "bug": [
        "Please fix this.",
        "Can your developers look into the error?",
        "Is this a known bug?",
        "Please fix the app.",
    ],
    "other": [
        "Thanks!",
        "Just let me know.",
        "Looking forward to your answer.",
        "Thank you in advance.",
    ],
}
# The same problem, told in another category's words: gold is the first category.
CROSSED = [
    (
        "bug",
        "My invoice page shows every charge twice, but my card was only charged once; "
        "it looks like a display error.",
    ),
    ("account", "The payment page says my card is fine but I cannot log in to see my order."),
    ("shipping", "The app says my order is delivered, but the courier still has the package."),
    ("billing", "I was charged for shipping although delivery was supposed to be free."),
    ("other", "Not a complaint about a refund or a delivery: I just want a catalogue."),
    ("bug", "Every time I log in the app crashes, so I cannot reach my account."),
    ("account", "I changed my email and now my invoices go to the old address."),
    ("shipping", "The delivery fee on my bill is for express, and the parcel came late."),
]
SLOTS = {
    "order": lambda rng: f"#{rng.randrange(10000, 99999)}",
    "month": lambda rng: rng.choice(["March", "April", "May", "June", "September"]),
    "amount": lambda rng: f"{rng.randrange(20, 300)}.{rng.randrange(100):02d} EUR",
    "days": lambda rng: str(rng.randrange(5, 30)),
    "browser": lambda rng: rng.choice(["Firefox", "Safari", "Chrome"]),
    "city": lambda rng: rng.choice(["Lyon", "Porto", "Graz", "Leeds", "Turin"]),
}


def fill(rng: random.Random, text: str) -> str:
    return text.format(**{name: make(rng) for name, make in SLOTS.items()})


def ticket(rng: random.Random, number: int) -> dict[str, object]:
    """One ticket: plain, or (AMBIGUOUS_SHARE of them) ambiguous."""
    if rng.random() < AMBIGUOUS_SHARE:
        if rng.random() < 0.5:
            gold, text = rng.choice(CROSSED)
            subject = rng.choice(SUBJECTS[rng.choice(CATEGORIES)])
        else:  # a problem of one category, a request of another: the request decides
            told, gold = rng.sample(CATEGORIES[:4], 2)
            problems = [fill(rng, rng.choice(PROBLEMS[name])) for name in (told, gold)]
            text = f"{problems[0]} {problems[1]} {rng.choice(ASKS[gold])}"
            subject = rng.choice(SUBJECTS[told])
        ambiguous = True
    else:
        gold = rng.choice(CATEGORIES)
        subject = rng.choice(SUBJECTS[gold])
        text = f"{fill(rng, rng.choice(PROBLEMS[gold]))} {rng.choice(ASKS[gold])}"
        ambiguous = False
    return {
        "id": f"t{number:03d}",
        "subject": subject,
        "text": text,
        "category": gold,
        "ambiguous": ambiguous,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=HERE / "tickets_labelled.jsonl")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = [ticket(rng, number) for number in range(1, ROWS + 1)]
    args.out.write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
    )
    print(f"wrote {len(rows)} tickets to {args.out}")


if __name__ == "__main__":
    main()
