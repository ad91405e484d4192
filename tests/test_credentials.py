"""Credentials that can be taken back, tried as an attacker holding one would: a ticket after its
user's password changed or the user was deactivated, a ticket minted by an API token after the
token was revoked (the sockets they hold are closed at once, nothing else of the user's); and a
ticket never shown in a log line, by the relay, the servers (access logs included) or relayclient.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from channels.db import database_sync_to_async as db
from channels.testing import HttpCommunicator
from django.contrib.auth.models import Permission, User
from django.test import Client as HttpClient
from django.test import RequestFactory
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from lobbies.auth import issue_ticket
from lobbies.models import ApiToken
from lobbies.views import relay_url
from relayclient import Client, Refused
from relayproject.asgi import application
from tests.accounts import signed_in
from tests.conftest import ROOT, collected_static, free_port, relay_environ
from tests.sockets import closed_with, met, opened, stays_open

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]


@pytest.fixture
def alice(transactional_db) -> User:
    return User.objects.create_user("alice", password="a long password 1")


def bearer(secret: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {secret}".encode())]


def cookie_of(client: HttpClient) -> list[tuple[bytes, bytes]]:
    return [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]


async def change_password(user: User, password: str) -> None:
    user.set_password(password)
    await db(user.save)()


async def test_a_password_change_ends_the_tickets_and_sessions_sockets_at_once(alice):
    ticket = issue_ticket(alice)
    by_ticket = await opened(f"/t/{ticket}/introduction/alice-game")
    by_session = await opened("/introduction/alice-page", cookie_of(await db(signed_in)(alice)))
    _, secret = await db(ApiToken.issue)(alice, "game server")
    by_token = await opened("/introduction/alice-server", bearer(secret))
    await change_password(alice, "a new long password")
    assert await closed_with(by_ticket) == 4401
    assert await closed_with(by_session) == 4401
    # An API token is a credential of its own: it lives on until it is revoked.
    assert await stays_open(by_token)
    await by_token.disconnect()
    # The stolen ticket is dead for good; a ticket issued now works.
    assert await closed_with(await opened(f"/t/{ticket}/introduction/alice-game")) == 4401
    fresh = await opened(f"/t/{issue_ticket(alice)}/introduction/alice-game")
    assert await stays_open(fresh)
    await fresh.disconnect()


async def test_deactivating_a_user_closes_their_control_socket_and_pipes_at_once(alice):
    ticket = issue_ticket(alice)
    mine, other = await met("doc", "alice", "bob", prefix=f"/t/{ticket}")
    my_end = await opened(f"/t/{ticket}/connection/alice/bob/doc")
    their_end = await opened("/connection/bob/alice/doc")
    await my_end.send_to(text_data="paired")
    assert await their_end.receive_from() == "paired"
    alice.is_active = False
    await db(alice.save)()
    assert await closed_with(mine) == 4401
    assert await closed_with(my_end) == 4401
    assert await closed_with(their_end) == 1000  # the other side of the pipe, as for a ban
    assert await stays_open(other)
    assert await closed_with(await opened(f"/t/{ticket}/introduction/alice")) == 4401
    await other.disconnect()


async def test_revoking_a_token_closes_exactly_its_sockets_and_its_tickets(alice):
    revoked, revoked_secret = await db(ApiToken.issue)(alice, "leaked")
    _, kept_secret = await db(ApiToken.issue)(alice, "still good")
    # A ticket minted through the API with the token that leaks.
    answer = await db(HttpClient().post)(
        "/api/tickets",
        {"ttl": 600},
        content_type="application/json",
        headers={"Authorization": f"Bearer {revoked_secret}"},
    )
    assert answer.status_code == 201, answer.content
    minted = answer.json()["ticket"]
    doomed = [
        await opened("/introduction/by-token", bearer(revoked_secret)),
        await opened(f"/t/{minted}/introduction/by-minted-ticket"),
        await opened("/introduction/by-minted-bearer", bearer(minted)),
    ]
    spared = [
        await opened("/introduction/by-other-token", bearer(kept_secret)),
        await opened(f"/t/{issue_ticket(alice)}/introduction/by-own-ticket"),
        await opened("/introduction/by-session", cookie_of(await db(signed_in)(alice))),
    ]
    # Revoked by its owner through the API, with the other token.
    gone = await db(HttpClient().delete)(
        f"/api/tokens/{revoked.pk}", headers={"Authorization": f"Bearer {kept_secret}"}
    )
    assert gone.status_code == 204
    for socket in doomed:
        assert await closed_with(socket) == 4401
    for socket in spared:
        assert await stays_open(socket)
        await socket.disconnect()
    for credentials in ([], bearer(minted)):
        path = "/introduction/again" if credentials else f"/t/{minted}/introduction/again"
        assert await closed_with(await opened(path, credentials)) == 4401
    assert await closed_with(await opened("/introduction/again", bearer(revoked_secret))) == 4401


async def test_the_admins_bulk_revoke_closes_the_tokens_sockets(alice):
    token, secret = await db(ApiToken.issue)(alice, "game server")
    socket = await opened("/introduction/alice", bearer(secret))
    assert await stays_open(socket)  # online (a socket still opening takes no orders)

    def revoke_in_the_admin() -> int:
        operator = User.objects.create_user("op", password="a long password 9", is_staff=True)
        operator.user_permissions.add(Permission.objects.get(codename="change_apitoken"))
        answer = signed_in(operator).post(
            "/admin/lobbies/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}
        )
        return answer.status_code

    assert await db(revoke_in_the_admin)() == 302
    assert await closed_with(socket) == 4401


# -- tickets in logs ------------------------------------------------------------------------------


async def test_the_relays_log_never_shows_a_ticket(alice, caplog):
    caplog.set_level(logging.DEBUG)
    ticket = issue_ticket(alice)
    good = await opened(f"/t/{ticket}/introduction/alice")
    bad = await opened(f"/t/{ticket}x/introduction/alice-2")
    assert await closed_with(bad) == 4401
    assert await closed_with(await opened(f"/t/{ticket}/nowhere")) == 4400
    await good.disconnect()
    # A plain HTTP request for a ticket's URL: Django's "Not Found" warning names the path.
    answer = await HttpCommunicator(
        application, "GET", f"/t/{ticket}/introduction/x", headers=[(b"host", b"localhost")]
    ).get_response()
    assert answer["status"] == 404
    assert "/introduction/alice opened as alice" in caplog.text
    assert ticket not in caplog.text


async def test_uvicorn_and_relayclient_at_debug_never_log_a_ticket(alice, caplog, uvicorn_server):
    _, url = uvicorn_server
    # uvicorn's own lines (its "WebSocket /path" [accepted]) and websockets' handshake lines.
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="uvicorn.error")
    ticket = await db(issue_ticket)(alice)
    client = Client("alice", f"{url}/t/{ticket}", reconnect=False)
    await client.connect()
    await client.join("doc")
    await client.disconnect()
    refused = Client("bob", f"{url}/t/{ticket}x", reconnect=False)
    with pytest.raises(Refused) as refusal:  # as connect() returns, or a moment later
        await refused.connect()
        await refused.join_lobby("doc")
    assert refusal.value.code == 4401 and ticket not in str(refusal.value)
    await refused.disconnect()
    assert "refused: 4401" in caplog.text
    assert "[accepted]" in caplog.text and "> GET /t/" in caplog.text
    assert ticket not in caplog.text


def _served(command: list[str], data_dir: Path, **env: str) -> tuple[subprocess.Popen, int, Path]:
    """A relay server started by ``command`` (``{port}`` filled in), its output in a file."""
    port = free_port()
    log_path = data_dir / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [part.format(port=port) for part in command],
            cwd=ROOT,
            env=relay_environ(data_dir, DJANGO_STATIC_ROOT=collected_static(), **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return process, port, log_path
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not start: {log_path.read_text(errors='replace')[-2000:]}")


MANAGE = [sys.executable, "manage.py"]
SERVERS = {
    # uvicorn as any ASGI deployment runs it, its access log and debug lines on.
    "uvicorn": [
        sys.executable,
        "-m",
        "uvicorn",
        "relayproject.asgi:application",
        "--port",
        "{port}",
        "--log-level",
        "debug",
    ],
    # daphne as `make run` runs it, every log at DEBUG.
    "daphne": [*MANAGE, "serve", "--host", "127.0.0.1", "--port", "{port}", "--server", "daphne"],
}


def _ticket_of_a_new_user(env: dict[str, str]) -> str:
    """A ticket of user alice, made in the database of the relay run with ``env``."""
    subprocess.run(
        [*MANAGE, "createsuperuser", "--noinput", "--username", "alice", "--email", "a@x.org"],
        cwd=ROOT,
        env={**env, "DJANGO_SUPERUSER_PASSWORD": "a long password 3"},
        check=True,
        capture_output=True,
    )
    issued = subprocess.run(
        [*MANAGE, "issue_ticket", "alice"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    return issued.stdout.decode().strip().splitlines()[-1]


async def _use_and_misuse(base: str, ticket: str) -> None:
    async with connect(f"{base}/t/{ticket}/introduction/alice") as socket:
        await socket.send('{"type": "Join", "documentIds": ["doc"]}')
    with pytest.raises(ConnectionClosed):  # 4401
        async with connect(f"{base}/t/{ticket}x/introduction/bob") as socket:
            await socket.recv()


@pytest.mark.parametrize("server", SERVERS)
def test_a_real_servers_output_never_shows_a_ticket(server, tmp_path):
    environ = {"DJANGO_LOG_LEVEL": "DEBUG", "RELAY_LOG_LEVEL": "DEBUG"}
    ticket = _ticket_of_a_new_user(relay_environ(tmp_path, **environ))
    process, port, log_path = _served(SERVERS[server], tmp_path, **environ)
    try:
        asyncio.run(_use_and_misuse(f"ws://127.0.0.1:{port}", ticket))
        # A plain HTTP request for a ticket's URL: 404, and Django's warning names the path.
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/t/{ticket}/introduction/x")
    finally:
        process.terminate()
        process.wait(timeout=10)
    log = log_path.read_text(errors="replace")
    assert "/introduction/alice opened as alice" in log, log  # the log was on
    assert "Not Found: /introduction/x" in log, log
    assert ticket not in log


# -- URLs handed out ------------------------------------------------------------------------------


def test_pages_behind_a_tls_proxy_hand_out_wss_urls(settings):
    settings.ALLOWED_HOSTS = ["relay.example"]
    request = RequestFactory().get("/", HTTP_HOST="relay.example", HTTP_X_FORWARDED_PROTO="https")
    assert relay_url(request) == "ws://relay.example"  # the header is trusted only when told
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert relay_url(request) == "wss://relay.example"


def test_the_proxy_header_setting_reads_its_environment_variable():
    code = "from django.conf import settings; print(settings.SECURE_PROXY_SSL_HEADER)"
    env = {**os.environ, "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}
    shown = subprocess.run(
        [*MANAGE, "shell", "-c", code], cwd=ROOT, env=env, check=True, capture_output=True
    )
    assert shown.stdout.decode().strip().splitlines()[-1] == "('HTTP_X_FORWARDED_PROTO', 'https')"


async def test_credentials_past_the_handshake_rate_are_not_even_looked_up(alice, settings):
    # Counted before the database is asked: junk (or good) credentials buy no extra handshakes.
    settings.RELAY_HANDSHAKE_RATE = "1/minute"
    token, secret = await db(ApiToken.issue)(alice, "game server")
    first = await opened("/introduction/a", headers=bearer(secret))
    assert await stays_open(first)
    await db(ApiToken.objects.update)(last_used_at=None)
    second = await opened("/introduction/b", headers=bearer(secret))
    assert await closed_with(second) == 4429
    assert (await db(ApiToken.objects.get)(pk=token.pk)).last_used_at is None  # never resolved
    await first.disconnect()
