"""Prices: the job's [prices] over the provider's table, and the cost of token counts."""

from __future__ import annotations

import pytest

from zbatch.pricing import Price, cost, price_for
from zbatch.providers import OPENAI, ZAI


def test_the_provider_table_prices_a_model_whatever_its_case():
    assert price_for("GLM-4.6", {}, ZAI.prices) == Price(0.6, 0.11, 2.2)


def test_the_jobs_prices_win_and_cached_defaults_to_the_input_price():
    overrides = {"GLM-4.6": {"input": 1.0, "output": 4.0}}
    assert price_for("glm-4.6", overrides, ZAI.prices) == Price(1.0, 1.0, 4.0)


def test_a_model_neither_prices_has_no_price_and_no_cost():
    assert price_for("glm-4.6", {}, OPENAI.prices) is None
    assert price_for("my-local-model", {}, ZAI.prices) is None
    assert cost(None, 1000, 0, 1000) is None


def test_cached_tokens_are_part_of_the_prompt_tokens_and_cost_the_cached_price():
    price = Price(input=1.0, cached=0.1, output=2.0)
    # 1M prompt tokens of which 400k cached, 500k completion tokens
    assert cost(price, 1_000_000, 400_000, 500_000) == pytest.approx(0.6 + 0.04 + 1.0)
