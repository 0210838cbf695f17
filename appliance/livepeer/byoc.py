"""BYOC: registering the worker's capabilities outside go-livepeer's list with its orchestrator.

``POST /capability/register`` (header ``Authorization: <orchSecret>``, raw; body per LIVEPEER.md §5) at start,
again every ``byoc_interval_seconds`` (an orchestrator drops a capability after a connection error and forgets
it when it restarts), again at once when a surge rule's price changes, and ``/capability/unregister`` on a
clean shutdown. The registration bodies are the ones ``lpa render`` writes to byoc.json: one function makes both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import structlog

from appliance.config import Node, ServedModel
from appliance.livepeer.prices import byoc_price
from appliance.runtime import entry_base_path

__all__ = ["ByocRegistrar", "byoc_name", "registration"]

log = structlog.get_logger("appliance.byoc")

_TIMEOUT_S = 10.0


def byoc_name(node: Node, entry: ServedModel) -> str:
    """The capability's name, or capability-model when several models serve one capability."""
    shared = sum(1 for other in node.models if other.capability == entry.capability) > 1
    return f"{entry.capability}-{entry.served_id.replace('/', '-')}" if shared else entry.capability


def registration(
    node: Node, entry: ServedModel, worker_url: str, token: str | None, *, surging: bool = False
) -> dict[str, Any]:
    """The ``/capability/register`` body of ``entry`` (its surge price when ``surging``)."""
    rule = node.price_for(entry)
    price = byoc_price(rule, surging=surging) if rule else None
    name, url = byoc_name(node, entry), worker_url + entry_base_path(entry)
    return {
        # go-livepeer v0.9.1 keeps one runner per name and ignores "id"; later versions key runners by "id" and
        # give a registration without one a random key, so every periodic re-registration would add a runner.
        "id": f"{name}@{url}",
        "name": name,
        "description": f"{entry.capability} with {entry.served_id} (livepeer-appliance)",
        "url": url,
        "capacity": entry.capacity,
        "price_per_unit": price.price_per_unit if price else 0,
        "price_scaling": price.price_scaling if price else 1,
        "currency": price.currency if price else "wei",
        **({"token": token} if token else {}),
    }


class ByocRegistrar:
    """Keeps every BYOC entry registered; ``load(entry)`` gives its busy fraction for surge pricing."""

    def __init__(
        self,
        node: Node,
        entries: list[ServedModel],
        *,
        worker_url: str,
        token: str | None,
        orch_secret: str,
        load: Callable[[ServedModel], float],
    ) -> None:
        settings = node.orchestrator
        assert settings.byoc_url is not None
        self.node, self.entries, self.worker_url, self.token, self.load = node, entries, worker_url, token, load
        self.base_url = settings.byoc_url
        self.interval = settings.byoc_interval_seconds
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            verify=settings.byoc_verify_tls,
            timeout=_TIMEOUT_S,
            headers={"Authorization": orch_secret},
        )
        self.registered: dict[str, dict[str, Any]] = {}  # name → body last accepted

    def _surging(self, entry: ServedModel) -> bool:
        rule = self.node.price_for(entry)
        return bool(rule and rule.surge and self.load(entry) >= rule.surge.threshold)

    async def register(self, entry: ServedModel) -> bool:
        body = registration(self.node, entry, self.worker_url, self.token, surging=self._surging(entry))
        try:
            response = await self.client.post("/capability/register", json=body)
        except httpx.HTTPError as exc:
            log.warning("BYOC registration failed", capability=body["name"], error=type(exc).__name__)
            return False
        if response.status_code != 200:
            log.warning("BYOC registration refused", capability=body["name"], status=response.status_code)
            return False
        if self.registered.get(body["name"]) != body:
            log.info(
                "BYOC capability registered",
                capability=body["name"],
                price_per_unit=body["price_per_unit"],
                price_scaling=body["price_scaling"],
                currency=body["currency"],
            )
        self.registered[body["name"]] = body
        return True

    async def run(self) -> None:
        """Register now and every interval, and at once when a surge price changes; runs until cancelled."""
        next_full = 0.0
        while True:
            now = time.monotonic()
            if now >= next_full:
                registered = [await self.register(entry) for entry in self.entries]
                # A failure is retried soon, not after a whole interval: the orchestrator may be starting.
                next_full = now + (self.interval if all(registered) else min(self.interval, 2.0))
            else:
                for entry in self.entries:
                    if self._price_changed(entry):
                        await self.register(entry)
            await asyncio.sleep(min(self.interval, 0.5))

    def _price_changed(self, entry: ServedModel) -> bool:
        body = registration(self.node, entry, self.worker_url, self.token, surging=self._surging(entry))
        last = self.registered.get(body["name"])
        return last is not None and (last["price_per_unit"], last["price_scaling"]) != (
            body["price_per_unit"],
            body["price_scaling"],
        )

    async def unregister_all(self) -> None:
        """Withdraw every registration: by its id (go-livepeer after v0.9.1 removes just this runner), then by
        name (v0.9.1 knows only names) where this worker is the node's only instance: with several, the name
        would also withdraw the other GPUs' runners."""
        only_instance = len(self.node.worker.gpus) == 1
        for name, body in list(self.registered.items()):
            try:
                for key in (body["id"], name) if only_instance else (body["id"],):
                    await self.client.post(
                        "/capability/unregister", content=key.encode(), headers={"Content-Type": "text/plain"}
                    )
                log.info("BYOC capability unregistered", capability=name)
            except httpx.HTTPError as exc:
                log.warning("BYOC unregistration failed", capability=name, error=type(exc).__name__)
        self.registered.clear()
        await self.client.aclose()
