"""The client behind a proxy (``RELAY_TRUSTED_PROXIES``): from a trusted proxy, ``X-Forwarded-For``
names the client that logs, per-address limits and sign-in throttling see, under uvicorn and
daphne alike; from anyone else it is ignored. The tests' own connections come from 127.0.0.1,
a trusted proxy by default."""

from __future__ import annotations

import asyncio
import http.cookiejar
import ipaddress
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from lobbies.proxies import MAX_FORWARDED_ENTRIES, ForwardedClient, forwarded_client
from tests.conftest import SERVERS, LiveRelay, start_relay, stop_relay

CLIENT, OTHER_CLIENT = "203.0.113.7", "203.0.113.8"
NETWORKS = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


# --- The rule itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "client"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        # What the client sent itself is to the left of what the proxy appended.
        ("198.51.100.1, 203.0.113.7", "203.0.113.7"),
        # Trusted proxies along the way are skipped, from the right.
        ("203.0.113.7, 10.1.2.3, 127.0.0.1", "203.0.113.7"),
        ("198.51.100.1, 203.0.113.7, 10.1.2.3", "203.0.113.7"),
        # Only trusted proxies: the farthest is the client.
        ("10.1.2.3, 127.0.0.1", "10.1.2.3"),
        # IPv6, written any way, comes out in one spelling.
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("::ffff:127.0.0.1, 2001:db8::1", "2001:db8::1"),
        ("2001:db8::1, ::ffff:10.0.0.9", "2001:db8::1"),  # an IPv4-mapped proxy is trusted too
        # Unreadable: the proxy's own address stays.
        ("", None),
        ("   ", None),
        ("unknown", None),
        ("203.0.113.7, garbage", None),
        ("garbage, 203.0.113.7", None),  # one bad entry and nothing in the header is believed
        ("203.0.113.7,, 10.1.2.3", None),
        ("203.0.113.7:4000", None),
        ("[2001:db8::1]", None),
        ("fe80::1%eth0", None),
        ("203.0.113.256", None),
        ("203.0.113.7/24", None),
        ("203.0.113.7\x00", None),
    ],
)
def test_the_client_a_header_names(header, client):
    assert forwarded_client(header, NETWORKS) == client


def test_a_header_of_too_many_entries_is_not_read():
    chain = ["203.0.113.7"] + ["10.0.0.1"] * (MAX_FORWARDED_ENTRIES - 1)
    assert forwarded_client(", ".join(chain), NETWORKS) == "203.0.113.7"
    assert forwarded_client(", ".join(["203.0.113.7", *chain]), NETWORKS) is None
    assert forwarded_client("," * 1_000_000, NETWORKS) is None


async def scope_seen(client: tuple[str, int] | None, headers: list[tuple[bytes, bytes]]) -> Any:
    """The client the application behind :class:`ForwardedClient` sees for a WebSocket from
    ``client`` with ``headers`` (default settings: loopback is trusted)."""
    seen = {}

    async def application(scope, receive, send) -> None:
        seen["client"] = scope["client"]

    await ForwardedClient(application)(
        {"type": "websocket", "path": "/", "client": client, "headers": headers}, None, None
    )
    return seen["client"]


@pytest.mark.parametrize(
    ("client", "headers", "seen"),
    [
        (("127.0.0.1", 5000), [(b"x-forwarded-for", b"203.0.113.7")], ("203.0.113.7", 0)),
        (("::1", 5000), [(b"x-forwarded-for", b"2001:db8::7")], ("2001:db8::7", 0)),
        # Two fields are one list: the second proxy's entry is the rightmost.
        (
            ("127.0.0.1", 5000),
            [(b"x-forwarded-for", b"198.51.100.1"), (b"x-forwarded-for", b"203.0.113.7")],
            ("203.0.113.7", 0),
        ),
        # From a trusted proxy, a header that cannot be read, or none: the proxy's address.
        (("127.0.0.1", 5000), [(b"x-forwarded-for", b"garbage")], ("127.0.0.1", 5000)),
        (("127.0.0.1", 5000), [], ("127.0.0.1", 5000)),
        # From anyone else the header is ignored.
        (("198.51.100.9", 5000), [(b"x-forwarded-for", b"203.0.113.7")], ("198.51.100.9", 5000)),
        (None, [(b"x-forwarded-for", b"203.0.113.7")], None),  # a Unix socket: no address
    ],
)
async def test_the_client_the_relay_sees(client, headers, seen):
    assert await scope_seen(client, headers) == seen


async def test_the_trusted_networks_follow_the_setting(settings):
    headers = [(b"x-forwarded-for", b"203.0.113.7")]
    settings.RELAY_TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert await scope_seen(("10.20.30.40", 5000), headers) == ("203.0.113.7", 0)
    assert await scope_seen(("127.0.0.1", 5000), headers) == ("127.0.0.1", 5000)
    settings.RELAY_TRUSTED_PROXIES = []
    assert await scope_seen(("10.20.30.40", 5000), headers) == ("10.20.30.40", 5000)


# --- Through the real servers ------------------------------------------------------------------


@pytest.fixture(scope="module", params=SERVERS)
def behind_proxy(request, tmp_path_factory) -> Iterator[LiveRelay]:
    """A relay with the default trusted proxies (loopback: these tests' own connections), two
    sockets per address and two failed sign-ins per address."""
    relay = start_relay(
        request.param,
        tmp_path_factory.mktemp(f"trusted-{request.param}"),
        RELAY_MAX_CONNECTIONS_PER_ADDRESS="2",
        RELAY_SIGNIN_FAILURES_PER_ADDRESS="2",
    )
    yield relay
    stop_relay(relay)


@pytest.fixture(scope="module", params=SERVERS)
def not_behind_proxy(request, tmp_path_factory) -> Iterator[LiveRelay]:
    """A relay that trusts only a proxy at 10.0.0.1: these tests' connections are not from it."""
    relay = start_relay(
        request.param,
        tmp_path_factory.mktemp(f"untrusted-{request.param}"),
        RELAY_TRUSTED_PROXIES="10.0.0.1",
        RELAY_MAX_CONNECTIONS_PER_ADDRESS="2",
    )
    yield relay
    stop_relay(relay)


async def online(relay: LiveRelay, peer: str, forwarded_for: str) -> ClientConnection:
    """A control socket of ``peer`` with ``X-Forwarded-For: forwarded_for``, accepted by the
    relay (its Join answered)."""
    socket = await connect(
        f"{relay.ws_url}/introduction/{peer}", additional_headers={"X-Forwarded-For": forwarded_for}
    )
    await socket.send(json.dumps({"type": "Join", "documentIds": [f"{peer}-doc"], "ext": 1}))
    answer = json.loads(await asyncio.wait_for(socket.recv(), 10))
    assert answer["type"] == "Joined", answer
    return socket


async def refused_code(relay: LiveRelay, peer: str, forwarded_for: str) -> int | None:
    """The close code of a control socket of ``peer`` the relay closes as it opens."""
    async with connect(
        f"{relay.ws_url}/introduction/{peer}", additional_headers={"X-Forwarded-For": forwarded_for}
    ) as socket:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(socket.recv(), 10)
        return socket.close_code


@pytest.mark.live
async def test_a_trusted_proxys_client_is_logged_and_limited_as_itself(behind_proxy):
    first = await online(behind_proxy, "fwd-a", CLIENT)
    second = await online(behind_proxy, "fwd-b", f"198.51.100.1, {CLIENT}")
    try:
        assert f" {CLIENT}:0 /introduction/fwd-a opened" in behind_proxy.log()
        assert f" {CLIENT}:0 /introduction/fwd-b opened" in behind_proxy.log()
        # Two sockets per address: the client's third is refused, another client is let in.
        assert await refused_code(behind_proxy, "fwd-c", CLIENT) == 4429
        other = await online(behind_proxy, "fwd-d", OTHER_CLIENT)
        await other.close()
        assert f" {OTHER_CLIENT}:0 /introduction/fwd-d opened" in behind_proxy.log()
    finally:
        await first.close()
        await second.close()


@pytest.mark.live
async def test_an_untrusted_senders_header_is_ignored(not_behind_proxy):
    first = await online(not_behind_proxy, "raw-a", CLIENT)
    second = await online(not_behind_proxy, "raw-b", OTHER_CLIENT)
    try:
        log = not_behind_proxy.log()
        assert re.search(r" 127\.0\.0\.1:[1-9]\d* /introduction/raw-a opened", log), log[-2000:]
        assert CLIENT not in log and OTHER_CLIENT not in log
        # All three come from 127.0.0.1, whatever their header says.
        assert await refused_code(not_behind_proxy, "raw-c", "203.0.113.99") == 4429
    finally:
        await first.close()
        await second.close()


class Browser:
    """A browser at ``address`` behind the proxy: its own cookies, every request forwarded for
    it."""

    def __init__(self, relay: LiveRelay, address: str) -> None:
        self.relay, self.address = relay, address
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def request(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        """The status and page of a GET (or, with ``form``, a POST) of ``path``."""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(
            self.relay.http_url + path, data=data, headers={"X-Forwarded-For": self.address}
        )
        try:
            with self.opener.open(request, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def sign_in(self, username: str, password: str) -> int:
        """Post the owners' sign-in form as a browser would (its CSRF token included)."""
        _, page = self.request("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page[:500]
        form = {"csrfmiddlewaretoken": token[1], "username": username, "password": password}
        return self.request("/accounts/login/", form)[0]


@pytest.mark.live
def test_sign_in_throttling_counts_a_trusted_proxys_client(behind_proxy):
    """Django's REMOTE_ADDR is the client from X-Forwarded-For: a password spray through the
    proxy locks out its author's address (at its second failure here), not everyone behind the
    proxy."""
    sprayer = Browser(behind_proxy, "198.51.100.66")
    assert [sprayer.sign_in(f"user-{i}", "Summer2026!") for i in range(3)] == [200, 429, 429]
    assert Browser(behind_proxy, "198.51.100.67").sign_in("user-3", "Summer2026!") == 200
