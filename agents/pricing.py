"""What a model call costs, so budgets and digests can speak in dollars rather than tokens.

The figures are OpenAI's public list prices (standard tier, USD per 1M tokens, no cached-input
or batch discounts). They drift over time, which is why deployments can pass overrides instead of
waiting for a release.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["LIST_PRICES", "Price", "base_model_name", "cost_usd", "is_priced", "price_for"]


@dataclass(frozen=True)
class Price:
    """USD per one million tokens, split because output tokens cost several times more."""

    input_per_million: float
    output_per_million: float

    def __post_init__(self) -> None:
        if self.input_per_million < 0 or self.output_per_million < 0:
            raise ValueError("prices cannot be negative")


# List prices, standard tier, USD per 1M tokens (input, output).
LIST_PRICES: Mapping[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o4-mini": Price(1.10, 4.40),
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
}

# The API answers with snapshot names such as "gpt-4o-mini-2024-07-18"; they bill like the alias.
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def base_model_name(model: str) -> str:
    """Strip the snapshot date so a dated model shares its alias's price.

    Only a trailing ISO date is removed: a plain prefix match would price "gpt-4o-mini" as
    "gpt-4o", which costs over ten times more.
    """
    return _DATE_SUFFIX.sub("", model.strip().lower())


def price_for(model: str, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """Overrides win over list prices, matched by exact name first, then by base name."""
    exact = model.strip().lower()
    base = base_model_name(model)
    for table in (_lowered(overrides or {}), LIST_PRICES):
        for name in (exact, base):
            if name in table:
                return table[name]
    return None


def is_priced(model: str, overrides: Mapping[str, Price] | None = None) -> bool:
    """Lets callers tell "free" apart from "we do not know the price" (both cost 0.0)."""
    return price_for(model, overrides) is not None


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    overrides: Mapping[str, Price] | None = None,
) -> float:
    """Unknown models (local servers, new releases) cost 0.0 so a missing price never blocks."""
    price = price_for(model, overrides)
    if price is None:
        return 0.0
    return (
        max(input_tokens, 0) * price.input_per_million
        + max(output_tokens, 0) * price.output_per_million
    ) / 1_000_000


def _lowered(table: Mapping[str, Price]) -> dict[str, Price]:
    return {name.strip().lower(): price for name, price in table.items()}
