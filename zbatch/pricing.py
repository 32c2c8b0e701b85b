"""Estimated cost from token counts, with the job's prices over the provider's table.

Prices are USD per 1M tokens (input, cached input, output). Each provider profile carries
its own table (:mod:`zbatch.providers`); prices change, so a job's ``[prices]`` table
overrides them, e.g.

    [prices]
    "my-model" = { input = 0.6, cached = 0.11, output = 2.2 }
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens."""

    input: float
    cached: float
    output: float


def price_for(
    model: str, overrides: Mapping[str, Mapping[str, float]], table: Mapping[str, Price]
) -> Price | None:
    """The price of a model (case-insensitive): the job's overrides, then the provider's
    ``table`` (keyed by lower-case model); None if neither has it."""
    for name, prices in overrides.items():
        if name.lower() == model.lower():
            return Price(
                float(prices.get("input", 0.0)),
                float(prices.get("cached", prices.get("input", 0.0))),
                float(prices.get("output", 0.0)),
            )
    return table.get(model.lower())


def nearest_model(model: str, known: Iterable[str]) -> str | None:
    """The known model name nearest to ``model`` (a typo such as glm-4.66 for glm-4.6 is
    the usual reason a model has no price), if one is near."""
    names = {name.lower(): name for name in known}
    near = difflib.get_close_matches(model.lower(), list(names), n=1, cutoff=0.75)
    return names[near[0]] if near else None


def no_price(model: str, near: str | None) -> str:
    """What to say about a model without a price: its name, the nearest known one, and how
    to give it a price."""
    guess = f"; did you mean {near}?" if near else ""
    return (
        f"no price for model {model}{guess} (if the name is right, add it to [prices], "
        f'e.g. "{model}" = {{ input = 0.6, output = 2.2 }})'
    )


def cost(price: Price | None, prompt: int, cached: int, completion: int) -> float | None:
    """USD for the given token counts; cached tokens are part of the prompt tokens."""
    if price is None:
        return None
    fresh = max(0, prompt - cached)
    return (fresh * price.input + cached * price.cached + completion * price.output) / 1e6


def discounted(price: Price | None, factor: float) -> Price | None:
    """``price`` times ``factor``: the Batch API's price is ``batch_discount`` of the live one."""
    if price is None:
        return None
    return Price(price.input * factor, price.cached * factor, price.output * factor)
