"""Identity on the WebSocket endpoints, tried as an attacker would: tickets (good, expired,
forged, of an inactive user), API tokens (good, revoked), the session cookie (and a page of
another site using it: cross-site WebSocket hijacking), peer-id takeover, pipes without an
introduction or in someone else's name, and bans."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from io import StringIO

import pytest
from channels.db import database_sync_to_async as db
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.core import signing
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from lobbies.auth import issue_ticket
from lobbies.models import ApiToken, Ban, Lobby
from tests.accounts import signed_in
from tests.sockets import closed_with, join, opened, received, stays_open

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]


@pytest.fixture
def alice(transactional_db) -> User:
    return User.objects.create_user("alice", password="a long password 1")


@pytest.fixture
def bob(transactional_db) -> User:
    return User.objects.create_user("bob", password="a long password 2")


async def online_and_introduced(a: WebsocketCommunicator, b: WebsocketCommunicator, doc="doc"):
    await a.send_to(text_data=join(doc))
    await b.send_to(text_data=join(doc))
    assert json.loads(await a.receive_from())["type"] == "Introduction"
    assert json.loads(await b.receive_from())["type"] == "Introduction"


async def test_a_ticket_binds_the_peer_id_to_its_user(alice, bob):
    mine = await opened(f"/t/{issue_ticket(alice)}/introduction/alice")
    assert await stays_open(mine)
    # Nobody else may take the id while alice is online: not bob, not an anonymous peer.
    for credentials in (f"/t/{issue_ticket(bob)}", ""):
        thief = await opened(f"{credentials}/introduction/alice")
        assert await closed_with(thief) == 4403
    assert await stays_open(mine)
    # Alice's own second socket replaces the first.
    again = await opened(f"/t/{issue_ticket(alice)}/introduction/alice")
    assert await closed_with(mine) == 4409
    await again.disconnect()
    # Offline, the id is free again.
    anonymous = await opened("/introduction/alice")
    assert await stays_open(anonymous)
    await anonymous.disconnect()


async def test_an_anonymous_peer_id_has_the_lf_trust_level():
    first = await opened("/introduction/someone")
    second = await opened("/introduction/someone")
    assert await closed_with(first) == 4409
    await second.disconnect()


@pytest.mark.parametrize("case", ["expired", "forged", "other key", "garbage", "empty"])
async def test_bad_tickets_are_refused_with_4401(alice, case, settings):
    ticket = {
        "expired": lambda: issue_ticket(alice, ttl=-1),
        "forged": lambda: issue_ticket(alice)[:-2] + "xx",
        "other key": lambda: signing.Signer(
            key="not the key", salt="lobbies.auth.ticket"
        ).sign_object({"u": alice.pk, "exp": 2**40}),
        "garbage": lambda: "not-a-ticket",
        "empty": lambda: "",
    }[case]()
    for endpoint in ("introduction/alice", "connection/alice/bob/doc"):
        socket = await opened(f"/t/{ticket}/{endpoint}")
        assert await closed_with(socket) == 4401


async def test_a_ticket_of_a_deactivated_user_is_refused(alice):
    ticket = issue_ticket(alice)
    alice.is_active = False
    await db(alice.save)()
    assert await closed_with(await opened(f"/t/{ticket}/introduction/alice")) == 4401


async def test_api_tokens_authenticate_until_revoked(alice):
    token, secret = await db(ApiToken.issue)(alice, "game server")
    bearer = [(b"authorization", f"Bearer {secret}".encode())]
    mine = await opened("/introduction/alice", bearer)
    thief = await opened("/introduction/alice")
    assert await closed_with(thief) == 4403
    await mine.disconnect()
    await db(token.revoke)()
    assert await closed_with(await opened("/introduction/alice", bearer)) == 4401
    wrong = [(b"authorization", b"Bearer rly_not-a-real-token")]
    assert await closed_with(await opened("/introduction/alice", wrong)) == 4401


async def test_a_ticket_also_works_as_a_bearer_credential(alice):
    bearer = [(b"authorization", f"Bearer {issue_ticket(alice)}".encode())]
    mine = await opened("/introduction/alice", bearer)
    assert await closed_with(await opened("/introduction/alice")) == 4403
    await mine.disconnect()


async def test_the_session_cookie_of_a_signed_in_browser_authenticates(alice):
    client = Client()
    await db(client.force_login)(alice)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    mine = await opened("/introduction/alice", [(b"cookie", cookie)])
    assert await closed_with(await opened("/introduction/alice")) == 4403
    await mine.disconnect()
    # A stale cookie is anonymous, not an error: browsers keep cookies after sessions end.
    stale = await opened("/introduction/alice", [(b"cookie", b"sessionid=gone")])
    assert await stays_open(stale)
    await stale.disconnect()


_rooms = itertools.count()


async def signed_in_as_seen(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the relay takes a handshake with these headers for a signed-in user: under the
    ``authenticated`` creation policy, only a signed-in peer's Join creates a lobby."""
    socket = await opened("/introduction/visitor", headers)
    await socket.send_to(text_data=join(f"room-{next(_rooms)}", ext=1))
    answer = await received(socket)
    await socket.disconnect()
    assert answer["type"] == "Joined" or answer["code"] == "forbidden", answer
    return answer["type"] == "Joined"


def browser(cookie: str, origin: str | None, host: str = "relay.example") -> list:
    """A browser's handshake headers: its cookie, the page's Origin, the relay's Host."""
    headers = [(b"host", host.encode()), (b"cookie", f"sessionid={cookie}".encode())]
    return headers + ([(b"origin", origin.encode())] if origin is not None else [])


@pytest.mark.parametrize(
    ("origin", "host", "trusted"),
    [
        ("https://evil.example", "relay.example", False),  # cross-site WebSocket hijacking
        ("https://relay.example.evil.example", "relay.example", False),
        ("null", "relay.example", False),  # a sandboxed frame, a file: page
        ("https://relay.example:8443", "relay.example", False),  # another port, another site
        ("http://relay.example:8080", "relay.example:9090", False),
        ("https://relay.example", "relay.example", True),  # the relay's own pages (TLS proxy)
        ("http://Relay.Example", "relay.example", True),
        ("http://relay.example:8080", "relay.example:8080", True),
        ("http://[::1]:8080", "[::1]:8080", True),
        ("https://game.example", "relay.example", True),  # listed in RELAY_ALLOWED_ORIGINS
        (None, "relay.example", True),  # no Origin: not a page, no other site sent the cookie
    ],
)
async def test_the_session_cookie_counts_only_for_the_relays_site_and_listed_origins(
    alice, settings, origin, host, trusted
):
    settings.RELAY_CREATION_POLICY = "authenticated"
    # "*" lets any page open sockets (anonymous, ticket, token), never use the cookie.
    settings.RELAY_ALLOWED_ORIGINS = ["*", "https://game.example"]
    cookie = (await db(signed_in)(alice)).cookies["sessionid"].value
    assert await signed_in_as_seen(browser(cookie, origin, host)) is trusted


async def test_a_ticket_or_token_is_not_judged_by_origin(alice, settings):
    settings.RELAY_CREATION_POLICY = "authenticated"
    _, secret = await db(ApiToken.issue)(alice, "game server")
    evil = [(b"host", b"relay.example"), (b"origin", b"https://evil.example")]
    socket = await opened(f"/t/{issue_ticket(alice)}/introduction/alice", evil)
    await socket.send_to(text_data=join("room-by-ticket", ext=1))
    assert (await received(socket))["type"] == "Joined"
    await socket.disconnect()
    assert await signed_in_as_seen([*evil, (b"authorization", f"Bearer {secret}".encode())])


async def test_a_session_made_with_an_old_secret_key_works_while_it_is_a_fallback(alice, settings):
    settings.RELAY_CREATION_POLICY = "authenticated"
    settings.SECRET_KEY = "the old secret key, long enough for Django's checks " * 2
    cookie = (await db(signed_in)(alice)).cookies["sessionid"].value
    settings.SECRET_KEY = "the new secret key, also long enough for the checks " * 2
    assert not await signed_in_as_seen(browser(cookie, None))
    settings.SECRET_KEY_FALLBACKS = ["the old secret key, long enough for Django's checks " * 2]
    assert await signed_in_as_seen(browser(cookie, None))
    # The handshake changes nothing: the browser's next page rotates the session, not a socket.
    assert await signed_in_as_seen(browser(cookie, "https://relay.example"))


async def test_a_pipe_needs_an_introduction_on_that_document():
    # Nobody online: no pipe.
    assert await closed_with(await opened("/connection/alice/bob/doc")) == 4403
    alice, bob = await opened("/introduction/alice"), await opened("/introduction/bob")
    await online_and_introduced(alice, bob, "doc")
    # Introduced on "doc" only.
    assert await closed_with(await opened("/connection/alice/bob/other")) == 4403
    # Online, but never introduced to carol.
    carol = await opened("/introduction/carol")
    await carol.send_to(text_data=join("elsewhere"))
    assert await closed_with(await opened("/connection/alice/carol/doc")) == 4403
    pipe = await opened("/connection/alice/bob/doc")
    assert await stays_open(pipe)
    for socket in (alice, bob, carol, pipe):
        await socket.disconnect()


async def test_nobody_opens_a_pipe_in_an_authenticated_peers_name(alice, bob):
    ticket = issue_ticket(alice)
    mine = await opened(f"/t/{ticket}/introduction/alice")
    other = await opened("/introduction/bob")
    await online_and_introduced(mine, other)
    for credentials in ("", f"/t/{issue_ticket(bob)}"):
        forged = await opened(f"{credentials}/connection/alice/bob/doc")
        assert await closed_with(forged) == 4403
    real = await opened(f"/t/{ticket}/connection/alice/bob/doc")
    answer = await opened("/connection/bob/alice/doc")
    await real.send_to(text_data="hello bob")
    assert await answer.receive_from() == "hello bob"
    for socket in (mine, other, real, answer):
        await socket.disconnect()


async def test_bans_keep_users_and_peer_ids_out(alice):
    await db(Ban.objects.create)(user=alice, reason="cheating")
    banned_user = await opened(f"/t/{issue_ticket(alice)}/introduction/any-name")
    assert await closed_with(banned_user) == 4403
    await db(Ban.objects.create)(peer_id="spammer", expires_at=timezone.now() + timedelta(hours=1))
    assert await closed_with(await opened("/introduction/spammer")) == 4403
    await db(Ban.objects.create)(
        peer_id="reformed", expires_at=timezone.now() - timedelta(seconds=1)
    )
    expired = await opened("/introduction/reformed")
    assert await stays_open(expired)
    await expired.disconnect()


async def test_a_ban_from_one_lobby_refuses_only_that_lobby():
    arena = await db(Lobby.objects.create)(document_id="arena")
    await db(Ban.objects.create)(lobby=arena, peer_id="troll")
    troll = await opened("/introduction/troll")
    await troll.send_to(text_data=json.dumps({"type": "Join", "documentIds": ["arena"], "ext": 1}))
    error = json.loads(await troll.receive_from())
    assert (error["type"], error["code"], error["documentId"]) == ("Error", "forbidden", "arena")
    await troll.send_to(text_data=join("garden"))
    joined = json.loads(await troll.receive_from())
    assert (joined["type"], joined["documentId"]) == ("Joined", "garden")
    await troll.disconnect()


def test_issue_ticket_prints_a_ticket_alone_on_its_last_line(alice):
    out = StringIO()
    call_command("issue_ticket", "alice", "--ttl", "60", stdout=out, stderr=StringIO())
    ticket = out.getvalue().strip().splitlines()[-1]
    claims = signing.Signer(salt="lobbies.auth.ticket").unsign_object(ticket)
    assert claims["u"] == alice.pk
    assert 50 < claims["exp"] - timezone.now().timestamp() <= 60
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("issue_ticket", "nobody", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match="--ttl must be above 0"):
        call_command("issue_ticket", "alice", "--ttl", "0", stdout=StringIO(), stderr=StringIO())
