"""The plugin layer: the relay's events (lobbies.signals) from real traffic, delivered off the
event loop; a receiver that raises or blocks never breaks or stalls the relay."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect

from lobbies import signals
from lobbies.events import bus
from tests.sockets import join, opened, received

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]

ALL = [
    signals.peer_online,
    signals.peer_offline,
    signals.lobby_joined,
    signals.lobby_left,
    signals.introduced,
    signals.pipe_opened,
    signals.pipe_traffic,
    signals.pipe_closed,
    signals.lobby_created,
    signals.lobby_changed,
]


class Recorder:
    """Every event, by signal name, in the order delivered (from the delivery thread)."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict]] = defaultdict(list)
        self.order: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, signal, sender, **kwargs) -> None:
        name = next(n for n, s in vars(signals).items() if s is signal)
        with self.lock:
            self.events[name].append(kwargs)
            self.order.append(name)


@pytest.fixture
def recorded() -> Iterator[Recorder]:
    recorder = Recorder()
    for signal in ALL:
        signal.connect(recorder, weak=False, dispatch_uid=f"test-{id(signal)}")
    yield recorder
    for signal in ALL:
        signal.disconnect(dispatch_uid=f"test-{id(signal)}")


async def session(*, drain: bool = True) -> None:
    """Alice and Bob meet in "race" and exchange three frames each way; then both go."""
    alice, bob = await opened("/introduction/alice"), await opened("/introduction/bob")
    await alice.send_to(text_data=join("race", ext=1, nickname="Ace"))
    assert (await received(alice))["type"] == "Joined"
    await bob.send_to(text_data=join("race"))
    assert (await received(alice))["type"] == "Introduction"
    a, b = await opened("/connection/alice/bob/race"), await opened("/connection/bob/alice/race")
    for _ in range(3):
        await a.send_to(bytes_data=b"12345")
        assert await b.receive_from() == b"12345"
        await b.send_to(text_data="xy")
        assert await a.receive_from() == "xy"
    await a.disconnect()
    await b.receive_output()  # closed by the relay
    await alice.send_to(text_data=json.dumps({"type": "Leave", "documentIds": ["race"]}))
    await alice.disconnect()
    await bob.disconnect()
    if drain:
        await bus.drain()


async def test_a_session_is_told_to_plugins_from_online_to_offline(recorded):
    await session()
    events = recorded.events
    assert [e["peer_id"] for e in events["peer_online"]] == ["alice", "bob"]
    assert [e["online"] for e in events["peer_online"]] == [1, 2]  # relay-wide, after each
    joined = {e["peer_id"]: e for e in events["lobby_joined"]}
    assert joined["alice"]["nickname"] == "Ace" and joined["alice"]["document_id"] == "race"
    assert events["introduced"] == [
        {"document_id": "race", "peers": 1, "at": events["introduced"][0]["at"]}
    ]
    (opened_pipe,) = events["pipe_opened"]
    assert (opened_pipe["seeker"], opened_pipe["target"]) == ("alice", "bob")
    (traffic,) = events["pipe_traffic"]
    # alice->bob, bob->alice; bytes as written on the wire: 2 bytes of header per small frame
    assert traffic["frames"] == (3, 3) and traffic["bytes"] == (3 * 7, 3 * 4)
    (closed,) = events["pipe_closed"]
    assert closed["seconds"] >= 0
    left = {e["peer_id"]: e["reason"] for e in events["lobby_left"]}
    assert left == {"alice": "left", "bob": "offline"}
    assert sorted(e["peer_id"] for e in events["peer_offline"]) == ["alice", "bob"]
    assert recorded.order.index("pipe_opened") < recorded.order.index("pipe_closed")


async def test_spliced_pipes_are_counted_too(uvicorn_server, recorded, introduce):
    _server, url = uvicorn_server
    await introduce(url, "a", "b")
    async with connect(f"{url}/connection/a/b/doc") as a, connect(f"{url}/connection/b/a/doc") as b:
        for _ in range(100):
            await a.send(b"x" * 1000)
        for _ in range(100):
            assert await b.recv() == b"x" * 1000
    await bus.drain()
    for _ in range(100):  # the relay closes the second end as the first goes
        await bus.drain()
        if recorded.events["pipe_closed"]:
            break
        await asyncio.sleep(0.02)
    (traffic,) = recorded.events["pipe_traffic"]
    assert traffic["frames"][0] == 100 and traffic["bytes"][0] == 100 * (4 + 1000)


async def test_a_receiver_that_raises_breaks_nothing(recorded, caplog):
    def broken(**kwargs):
        raise RuntimeError("a plugin bug")

    signals.lobby_joined.connect(broken, weak=False, dispatch_uid="broken")
    try:
        await session()
    finally:
        signals.lobby_joined.disconnect(dispatch_uid="broken")
    assert len(recorded.events["lobby_joined"]) == 2  # the other receivers still ran
    assert "a plugin bug" in caplog.text


async def test_a_blocked_receiver_stalls_no_socket_and_its_backlog_is_bounded(settings, recorded):
    settings.RELAY_EVENT_QUEUE = 3
    release = threading.Event()

    def blocked(**kwargs):
        release.wait(10)

    signals.peer_online.connect(blocked, weak=False, dispatch_uid="blocked")
    dropped = bus.dropped
    try:
        # The whole session runs while the receiver is stuck on its first event.
        await session(drain=False)
    finally:
        release.set()
        signals.peer_online.disconnect(dispatch_uid="blocked")
    assert bus.dropped > dropped  # events past the queue's bound were dropped, not waited for
    await bus.drain()


async def test_long_pipes_report_their_traffic_as_they_go(
    uvicorn_server, recorded, introduce, settings
):
    settings.RELAY_PIPE_REPORT_SECONDS = 0.2
    _server, url = uvicorn_server
    await introduce(url, "a", "b")
    async with connect(f"{url}/connection/a/b/doc") as a, connect(f"{url}/connection/b/a/doc") as b:
        for _ in range(3):
            await a.send(b"12")
            assert await b.recv() == b"12"
            await asyncio.sleep(0.3)
        reports = len(recorded.events["pipe_traffic"])
        assert reports >= 1  # reported while still open
    await bus.drain()
    await asyncio.sleep(0.1)
    await bus.drain()
    moved = sum(e["frames"][0] for e in recorded.events["pipe_traffic"])
    assert moved == 3  # each frame counted once, across the reports and the close
