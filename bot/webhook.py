"""Publishing to a webhook: an HTTP POST of JSON carrying an `Idempotency-Key` header."""

from __future__ import annotations

import httpx

from bot.platforms.base import Delivery, DeliveryError


class WebhookPublisher:
    """A platform of the outbox: its channel is the URL, its context the key and payload."""

    name = "webhook"

    def __init__(self, timeout: float = 15.0) -> None:
        self.client = httpx.AsyncClient(timeout=timeout)

    async def deliver(self, delivery: Delivery) -> str | None:
        key = str(delivery.context["idempotency_key"])
        try:
            response = await self.client.post(
                delivery.channel,
                json=delivery.context["payload"],
                headers={"Idempotency-Key": key, "User-Agent": "crewchief"},
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook unreachable: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("Retry-After")
            raise DeliveryError(
                f"webhook answered {response.status_code}",
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        if response.status_code >= 400:
            raise DeliveryError(f"webhook refused it: {response.status_code}", permanent=True)
        return None

    async def aclose(self) -> None:
        await self.client.aclose()
