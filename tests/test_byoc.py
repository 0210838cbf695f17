"""The BYOC registrar against the orchestrator double: surge prices, retries, the orchSecret."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import pytest

from appliance.config import Node, ServedModel, load_node_text
from appliance.livepeer.byoc import ByocRegistrar
from tests.doubles.orchestrator import Orchestrator

NODE = """
[[models]]
model = "ppocr-v4-det"
capability = "depth"
capacity = 4
[orchestrator]
orch_secret_file = "/unused/in/this/test"
byoc_url = "URL"
byoc_interval_seconds = 60
[[pricing]]
capability = "depth"
unit = "second"
price = "0.001"
currency = "USD"
surge = { threshold = 0.75, multiplier = "1.5" }
"""


SECRET = "s3cret"  # the double's throwaway orchSecret


@pytest.fixture
def orchestrator() -> Iterator[Orchestrator]:
    double = Orchestrator([], orch_secret=SECRET)
    double.serve()
    yield double
    double.close()


def _registrar(
    node: Node,
    *,
    worker_url: str = "http://127.0.0.1:9",
    orch_secret: str = SECRET,
    load: Callable[[ServedModel], float] = lambda _: 0.0,
) -> ByocRegistrar:
    """The registrar of every model of ``node``, made inside the test's event loop (its HTTP client needs one)."""
    return ByocRegistrar(node, list(node.models), worker_url=worker_url, token=None, orch_secret=orch_secret, load=load)


async def _until(condition: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_surge_price_follows_load_both_ways(orchestrator: Orchestrator) -> None:
    node = load_node_text(NODE.replace("URL", orchestrator.url), source="t")
    load = {"busy": 0.0}

    def busy_fraction(_: ServedModel) -> float:
        return load["busy"]

    async def scenario() -> None:
        registrar = _registrar(node, load=busy_fraction)
        task = asyncio.create_task(registrar.run())
        try:
            await _until(lambda: "depth" in orchestrator.registrations)
            assert orchestrator.registrations["depth"]["price_scaling"] == 1000
            load["busy"] = 0.75  # 3 of 4 slots: at the threshold, the surge price is registered at once
            await _until(lambda: orchestrator.registrations["depth"]["price_per_unit"] == 3)
            assert orchestrator.registrations["depth"]["price_scaling"] == 2000  # 0.001 × 1.5 = 3/2000
            load["busy"] = 0.25
            await _until(lambda: orchestrator.registrations["depth"]["price_per_unit"] == 1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            registered_id = orchestrator.registrations["depth"]["id"]
            await registrar.unregister_all()
        # By id (later go-livepeer), then by name (v0.9.1): this node has one worker instance.
        assert registered_id == "depth@http://127.0.0.1:9/m/depth/ppocr-v4-det"
        assert orchestrator.unregistered == [registered_id, "depth"]

    asyncio.run(scenario())


def test_wrong_secret_is_refused_and_retried(orchestrator: Orchestrator) -> None:
    node = load_node_text(NODE.replace("URL", orchestrator.url), source="t")

    async def scenario() -> None:
        registrar = _registrar(node, orch_secret="wrong")
        assert await registrar.register(node.models[0]) is False
        assert orchestrator.registrations == {}
        await registrar.client.aclose()

    asyncio.run(scenario())


def test_an_instance_among_several_unregisters_only_its_own_runner(orchestrator: Orchestrator) -> None:
    node = load_node_text("[worker]\ngpus = [0, 1]\n" + NODE.replace("URL", orchestrator.url), source="t")

    async def scenario() -> None:
        registrar = _registrar(node, worker_url="http://127.0.0.1:8001")
        assert await registrar.register(node.models[0]) is True
        await registrar.unregister_all()

    asyncio.run(scenario())
    # By name, go-livepeer would drop GPU 0's runner as well.
    assert orchestrator.unregistered == ["depth@http://127.0.0.1:8001/m/depth/ppocr-v4-det"]
