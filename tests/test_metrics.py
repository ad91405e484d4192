"""``GET /metrics``: what real sockets, pipes, refusals, limits and an owner's kick do shows in
the numbers a worker exports (read as Prometheus reads them, with prometheus-client's parser);
who may read them; and two workers whose numbers add up without counting the relay-wide ones
twice.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import ROOT, SERVERS, LiveRelay, http_get, start_relay, stop_relay
from tests.test_workers import (  # noqa: F401 (make_cluster: a fixture)
    _owner_token,
    api,
    close_code,
    control,
    introduced_to,
    join,
    make_cluster,
    meet,
    paired,
    pipe,
)

pytestmark = pytest.mark.live

TOKEN = "a-metrics-token-of-the-tests-own"
MAX_SOCKETS = 8  # RELAY_MAX_CONNECTIONS_PER_ADDRESS of the module's relay: one more is a limit hit

Samples = dict[tuple[str, frozenset], float]


@pytest.fixture(scope="module", params=SERVERS)
def relay(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[LiveRelay]:
    """One worker under each server, with a metrics token, a small per-address socket limit and
    statistics kept in memory (the analytics plugin writes them an hour later)."""
    live = start_relay(
        request.param,
        tmp_path_factory.mktemp(f"metrics-{request.param}"),
        RELAY_METRICS_TOKEN=TOKEN,
        RELAY_MAX_CONNECTIONS_PER_ADDRESS=str(MAX_SOCKETS),
        RELAY_ANALYTICS_FLUSH_SECONDS="3600",
        RELAY_ALLOWED_ORIGINS="https://game.example",
    )
    yield live
    stop_relay(live)


def fetch(relay: LiveRelay, path: str = "/metrics", **headers: str) -> tuple[int, dict, str]:
    """Status, headers (lower-case names) and body of ``GET path`` on ``relay``."""
    status, found, body = http_get(relay, path, **headers)
    return status, found, body.decode()


def scrape(relay: LiveRelay) -> Samples:
    """Every sample ``/metrics`` shows, parsed as Prometheus parses it."""
    status, _, text = fetch(relay)
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scraped(relay: LiveRelay) -> Samples:
    return await asyncio.to_thread(scrape, relay)


async def eventually(relay: LiveRelay, check, seconds: float = 15) -> Samples:
    """Scrape until ``check(samples)`` holds (counts fed by the relay's events arrive through
    its delivery thread, a moment after the action); the last samples either way."""
    deadline = time.monotonic() + seconds
    while True:
        samples = await scraped(relay)
        if check(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.1)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def closes(before: Samples, after: Samples, kind: str, code: str, initiator: str) -> float:
    """How many more sockets of ``kind`` closed with ``code`` first by ``initiator``."""
    labels = {"kind": kind, "code": code, "initiator": initiator}
    return moved(before, after, "relay_socket_closes_total", **labels)


def hits(before: Samples, after: Samples, limit: str) -> float:
    return moved(before, after, "relay_limit_hits_total", limit=limit)


async def test_sockets_joins_introductions_pipes_and_closes_move_their_numbers(relay):
    how = "spliced" if relay.server == "uvicorn" else "in_process"
    before = await eventually(relay, lambda s: value(s, "relay_sockets_open", kind="control") == 0)
    a, b = await control(relay, "m-a"), await control(relay, "m-b")
    await join(a, "m-doc")
    await join(b, "m-doc")
    assert await introduced_to(a) == "m-b"
    assert await introduced_to(b) == "m-a"
    end_a, end_b = await asyncio.gather(
        pipe(relay, "m-a", "m-b", "m-doc"), pipe(relay, "m-b", "m-a", "m-doc")
    )
    await end_a.send("hello")  # 5 bytes, 2 of header
    assert await asyncio.wait_for(end_b.recv(), 5) == "hello"
    await end_b.send(b"\x00\x01")  # 2 bytes, 2 of header
    assert await asyncio.wait_for(end_a.recv(), 5) == b"\x00\x01"

    # (Events reach the analytics plugin in batches, every 50 ms: lobbies.events.)
    during = await eventually(relay, lambda s: value(s, "relay_analytics_pending_rows") > 0)
    assert moved(before, during, "relay_handshakes_total", kind="control", outcome="accepted") == 2
    assert moved(before, during, "relay_handshakes_total", kind="pipe", outcome="accepted") == 2
    assert value(during, "relay_sockets_open", kind="control") == 2
    assert value(during, "relay_sockets_open", kind="pipe") == 2
    assert value(during, "relay_pipes_open", how=how) == 1  # one pipe, not one per end
    assert moved(before, during, "relay_joins_total", outcome="joined") == 2
    assert moved(before, during, "relay_introductions_total") == 1  # one pair met
    assert value(during, "relay_presence_peers_online") == 2
    assert value(during, "relay_presence_pipes_open") == 1
    # The analytics plugin holds the joins until its next write; every socket is a task.
    assert value(during, "relay_analytics_pending_rows") > 0
    assert value(during, "relay_asyncio_tasks") >= value(before, "relay_asyncio_tasks") + 4
    # The process's own numbers, as every Python exporter shows them.
    assert value(during, "process_resident_memory_bytes") > 0
    assert value(during, "process_open_fds") > 0

    await end_a.close()  # the client closes its end; the relay closes the other with 1000
    assert await close_code(end_b) == 1000
    after = await eventually(
        relay,
        lambda s: (
            moved(before, s, "relay_pipe_frames_total") == 2
            and moved(before, s, "relay_pipes_paired_total", how=how) == 1
        ),
    )
    # Frames and bytes both ways, as written to the receiving clients, reported at the close.
    assert moved(before, after, "relay_pipe_frames_total") == 2
    assert moved(before, after, "relay_pipe_bytes_total") == 7 + 4
    assert moved(before, after, "relay_pipes_paired_total", how=how) == 1
    assert value(after, "relay_pipes_open", how=how) == 0
    assert closes(before, after, "pipe", "1000", "client") == 1
    assert closes(before, after, "pipe", "1000", "relay") == 1
    await a.close()
    await b.close()
    after = await eventually(relay, lambda s: value(s, "relay_sockets_open", kind="control") == 0)
    assert closes(before, after, "control", "1000", "client") == 2


async def test_refusals_and_limit_hits_are_counted_by_code_and_limit(relay):
    before = await eventually(relay, lambda s: value(s, "relay_sockets_open", kind="control") == 0)
    # An unknown endpoint: refused as it opens.
    nowhere = await connect(f"{relay.ws_url}/nowhere")
    assert await close_code(nowhere) == 4400
    # A control frame over RELAY_MAX_CONTROL_FRAME_BYTES.
    big = await control(relay, "big")
    await big.send(json.dumps({"type": "Join", "documentIds": ["x" * 70_000]}))
    assert await close_code(big) == 4413
    # One socket more than RELAY_MAX_CONNECTIONS_PER_ADDRESS from this address.
    held = [await control(relay, f"held-{n}") for n in range(MAX_SOCKETS)]
    one_more = await control(relay, "one-more")
    assert await close_code(one_more) == 4429
    # A browser page of an origin RELAY_ALLOWED_ORIGINS does not name: 403, before any consumer.
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{relay.ws_url}/introduction/elsewhere", origin="https://other.example")
    assert refused.value.response.status_code == 403
    # A client's own close code outside the known ones: counted, as "other".
    await held[0].close(code=3999)
    for socket in held[1:]:
        await socket.close()

    after = await eventually(relay, lambda s: value(s, "relay_sockets_open", kind="control") == 0)
    assert moved(before, after, "relay_handshakes_total", kind="invalid", outcome="refused") == 1
    assert closes(before, after, "invalid", "4400", "relay") == 1
    assert moved(before, after, "relay_limit_hits_total", limit="max_control_frame_bytes") == 1
    assert closes(before, after, "control", "4413", "relay") == 1
    assert hits(before, after, "max_connections_per_address") == 1
    assert hits(before, after, "allowed_origins") == 1
    assert moved(before, after, "relay_handshakes_total", kind="control", outcome="refused") == 2
    assert closes(before, after, "control", "4429", "relay") == 1
    assert closes(before, after, "control", "other", "client") == 1
    assert not any(("code", "3999") in labels for _, labels in after)  # no label per client code


async def test_a_join_refused_is_counted_by_its_refusal_code(relay):
    before = await scraped(relay)
    peer = await control(relay, "asker")
    # A lobby extra that is not a lobby: refused ("invalid"), told to an ext client.
    await join(peer, "odd-lobby", ext=1, lobby={"capacity": "many"})
    answer = json.loads(await asyncio.wait_for(peer.recv(), 5))
    assert (answer["type"], answer["code"]) == ("Error", "invalid"), answer
    after = await scraped(relay)
    assert moved(before, after, "relay_joins_total", outcome="invalid") == 1
    assert moved(before, after, "relay_joins_total", outcome="joined") == 0
    await peer.close()


def test_metrics_are_shown_to_loopback_and_the_token_only(relay):
    # Loopback, the default network: shown, never cached, in Prometheus's text format, and
    # whatever Host the request names (probes and scrapers come by address).
    status, headers, text = fetch(relay, Host="10.1.2.3:9")
    assert status == 200
    assert headers["cache-control"] == "no-store"
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "relay_handshakes_total" in text
    # Another client, as a trusted proxy (loopback) names it in X-Forwarded-For: refused, and
    # told why, with nothing of the numbers.
    status, headers, text = fetch(relay, **{"X-Forwarded-For": "203.0.113.9"})
    assert status == 403
    assert "RELAY_METRICS_NETWORKS" in json.loads(text)["error"]
    assert "relay_" not in text
    # The same client with the token: shown; with another token or scheme: refused.
    behind = {"X-Forwarded-For": "203.0.113.9"}
    assert fetch(relay, Authorization=f"Bearer {TOKEN}", **behind)[0] == 200
    assert fetch(relay, Authorization=f"Bearer {TOKEN[:-1]}x", **behind)[0] == 403
    assert fetch(relay, Authorization=f"Basic {TOKEN}", **behind)[0] == 403
    assert fetch(relay, Authorization="Bearer ", **behind)[0] == 403
    # OpenMetrics for a scraper that asks for it.
    status, headers, _ = fetch(relay, Accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")


def test_metrics_answer_get_and_head_only(relay):
    request = urllib.request.Request(f"{relay.http_url}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405
    head = urllib.request.Request(f"{relay.http_url}/metrics", method="HEAD")
    with urllib.request.urlopen(head, timeout=10) as answer:
        assert answer.status == 200 and answer.read() == b""


def test_impossible_metrics_and_health_settings_are_named():
    from lobbies.conf import relay_settings, setting_errors

    sound = relay_settings()
    assert setting_errors(sound) == []
    cases = {
        "RELAY_METRICS_TOKEN must have at least 16": replace(sound, metrics_token="short"),
        "RELAY_METRICS_NETWORKS: 'loopback'": replace(sound, metrics_networks=("loopback",)),
        "RELAY_READY_TIMEOUT must be above 0": replace(sound, ready_timeout=0),
        "RELAY_READY_TIMEOUT must be at most 30": replace(sound, ready_timeout=31),
        "RELAY_DRAIN_SECONDS must be at least 0": replace(sound, drain_seconds=-1),
    }
    for message, values in cases.items():
        assert any(message in error for error in setting_errors(values)), message


# -- many workers -----------------------------------------------------------------------------


async def test_two_workers_add_up_and_relay_wide_numbers_are_not_counted_twice(make_cluster):  # noqa: F811
    cluster = make_cluster("uvicorn")
    first, second = cluster.workers
    token = _owner_token(cluster)
    lobby = api(second, token, "POST", "/lobbies", {"documentId": "arena"})
    a, b = await meet(first, second, doc="arena")  # a on the first worker, b on the second
    end_a, end_b = await paired(first, second, doc="arena")  # its ends on both: through Redis

    one, two = await scraped(first), await scraped(second)
    both = (one, two)
    # This worker's own numbers: each counts its own, and their sum is the relay's.
    for worker in both:
        assert value(worker, "relay_handshakes_total", kind="control", outcome="accepted") == 1
        assert value(worker, "relay_sockets_open", kind="control") == 1
        assert value(worker, "relay_sockets_open", kind="pipe") == 1
        assert value(worker, "relay_joins_total", outcome="joined") == 1
        # Presence in Redis, timed per call.
        assert value(worker, "relay_presence_seconds_count", operation="join") == 1
    # The pipe split across the two is one pipe: counted by one worker, not both.
    assert sum(value(w, "relay_pipes_open", how="cross_worker") for w in both) == 1
    # Relay-wide numbers from presence: the same on each worker (sum() would say 4 peers).
    assert [value(w, "relay_presence_peers_online") for w in both] == [2, 2]
    assert [value(w, "relay_presence_pipes_open") for w in both] == [1, 1]

    # The owner kicks a (on the first worker) through the second: one action, counted once.
    api(second, token, "POST", f"/lobbies/{lobby['id']}/kick", {"peerId": "a"})
    assert await close_code(end_a) == 4410
    assert await close_code(end_b) == 1000
    one = await eventually(first, lambda s: value(s, "relay_pipe_frames_total") == 1, seconds=15)
    two = await eventually(
        second, lambda s: value(s, "relay_pipes_paired_total", how="cross_worker") == 1
    )
    both = (one, two)
    assert [value(w, "relay_operator_actions_total", action="kick") for w in both] == [0, 1]
    # Each end's traffic counted by its own worker: "paired?" went from a to b, once.
    assert sum(value(w, "relay_pipe_frames_total") for w in both) == 1
    assert sum(value(w, "relay_pipes_paired_total", how="cross_worker") for w in both) == 1
    assert closes({}, one, "pipe", "4410", "relay") == 1
    await a.close()
    await b.close()


def test_the_grafana_dashboard_asks_only_for_what_a_worker_exports(relay):
    dashboard = json.loads((ROOT / "deploy" / "grafana-relay.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    asked = {name for query in queries for name in re.findall(r"\b((?:relay|process)_\w+)", query)}
    _, _, text = fetch(relay)
    families = list(text_string_to_metric_families(text))
    # A histogram's series (_bucket, _count, _sum) show once observed: its family is enough.
    exported = {f.name for f in families} | {s.name for f in families for s in f.samples}
    missing = {name for name in asked if re.sub(r"_bucket$", "", name) not in exported}
    assert asked and not missing, missing
