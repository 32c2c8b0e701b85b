"""Estimated cost from token counts, with a per-model price table the user can override.

Prices are USD per 1M tokens (input, cached input, output), from docs.z.ai's
pricing page (2026). Prices change: a job's ``[prices]`` table overrides them, e.g.

    [prices]
    "glm-4.6" = { input = 0.6, cached = 0.11, output = 2.2 }
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens."""

    input: float
    cached: float
    output: float


PRICES: dict[str, Price] = {
    "glm-5": Price(1.0, 0.2, 3.2),
    "glm-4.7": Price(0.6, 0.11, 2.2),
    "glm-4.6": Price(0.6, 0.11, 2.2),
    "glm-4.5": Price(0.6, 0.11, 2.2),
    "glm-4.5-air": Price(0.2, 0.03, 1.1),
    "glm-4.5-x": Price(2.2, 0.45, 8.9),
    "glm-4.7-flashx": Price(0.07, 0.01, 0.4),
    "glm-4-32b-0414-128k": Price(0.1, 0.1, 0.1),
    "glm-4.7-flash": Price(0.0, 0.0, 0.0),
    "glm-4.5-flash": Price(0.0, 0.0, 0.0),
}


def price_for(model: str, overrides: Mapping[str, Mapping[str, float]]) -> Price | None:
    """The price of a model (case-insensitive), the job's overrides first; None if unknown."""
    for name, table in overrides.items():
        if name.lower() == model.lower():
            return Price(
                float(table.get("input", 0.0)),
                float(table.get("cached", table.get("input", 0.0))),
                float(table.get("output", 0.0)),
            )
    return PRICES.get(model.lower())


def cost(price: Price | None, prompt: int, cached: int, completion: int) -> float | None:
    """USD for the given token counts; cached tokens are part of the prompt tokens."""
    if price is None:
        return None
    fresh = max(0, prompt - cached)
    return (fresh * price.input + cached * price.cached + completion * price.output) / 1e6
