"""The relay's log lines (lobbies/logs.py) as an operator reads them: a live relay with
``RELAY_LOG_FORMAT=json`` writes one JSON object a line, with the facts of each connection event
and operator action as fields; ``RELAY_LOG_IDS=hashed`` never shows a peer id, document id or
username, yet one id's lines can be followed; and in-process, the same lines' fields."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from lobbies.conf import relay_settings, setting_errors
from lobbies.logs import hashed_id
from lobbies.models import Lobby
from tests.accounts import signed_in
from tests.conftest import ROOT, LiveRelay, relay_environ, start_relay, stop_relay
from tests.sockets import closed_with, join, opened

# Distinctive ids: any of them found in a hashed log is a leak.
OWNER, HOST, GUEST, STRANGER = "owner-zoe-4417", "peer-alice-7f3", "peer-bob-9c1", "peer-eve-55"
DOCUMENT = "doc-secret-plans"
FRAMES = 5


def _manage(data_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=relay_environ(data_dir),
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def _an_owner_with_a_lobby(data_dir: Path) -> tuple[str, str, str, int]:
    """An owner of DOCUMENT's lobby in the relay's database: a ticket, an API token, the
    lobby's public id and the owner's user id."""
    script = (
        "from django.contrib.auth.models import User; from lobbies.auth import issue_ticket; "
        "from lobbies.models import ApiToken, Lobby; "
        f"user = User.objects.create_user({OWNER!r}); "
        f"lobby = Lobby.objects.create(document_id={DOCUMENT!r}, owner=user); "
        "print(issue_ticket(user, 600), ApiToken.issue(user, 'logs')[1], lobby.public_id, user.pk)"
    )
    printed = _manage(data_dir, "shell", "-c", script).splitlines()[-1]
    ticket, token, public_id, user_id = printed.split()
    return ticket, token, public_id, int(user_id)


async def _one_of_each(relay: LiveRelay, ticket: str, token: str, public_id: str) -> None:
    """What the log should record: a signed-in host and a guest meeting in the lobby, a pipe
    between them carrying FRAMES frames, a refused socket (a bad ticket), the guest kicked by
    the owner through the API, everyone leaving."""
    url = relay.ws_url
    host = await connect(f"{url}/t/{ticket}/introduction/{HOST}")
    guest = await connect(f"{url}/introduction/{GUEST}")
    for socket in (host, guest):
        await socket.send(json.dumps({"type": "Join", "documentIds": [DOCUMENT]}))
    for socket in (host, guest):
        assert json.loads(await asyncio.wait_for(socket.recv(), 5))["type"] == "Introduction"
    a = await connect(f"{url}/t/{ticket}/connection/{HOST}/{GUEST}/{DOCUMENT}")
    b = await connect(f"{url}/connection/{GUEST}/{HOST}/{DOCUMENT}")
    for _ in range(FRAMES):
        await a.send(b"12345678")
    for _ in range(FRAMES):
        await asyncio.wait_for(b.recv(), 5)
    with pytest.raises(ConnectionClosed) as refused:
        async with connect(f"{url}/t/{ticket}x/introduction/{STRANGER}") as stranger:
            await asyncio.wait_for(stranger.recv(), 5)
    assert refused.value.rcvd.code == 4401

    def kick() -> int:
        request = urllib.request.Request(
            f"{relay.http_url}/api/lobbies/{public_id}/kick",
            data=json.dumps({"peerId": GUEST}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status

    assert await asyncio.to_thread(kick) == 204
    await asyncio.wait_for(b.wait_closed(), 5)  # the kick closed the guest's pipe (4410)
    for socket in (a, host, guest):
        await socket.close()


def _records(relay: LiveRelay) -> list[dict[str, Any]]:
    """Every line of the relay's log as JSON (all of them must be), once the lines of the
    scenario are all there: six sockets closed and one operator action."""
    for _ in range(100):
        lines = [line for line in relay.log().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]
        events = [record.get("event") for record in records]
        if events.count("connection.closed") >= 4 and "operator.action" in events:
            return records
        time.sleep(0.1)  # the relay writes a socket's line as it closes it
    raise AssertionError(relay.log()[-3000:])


def _one(records: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    found = [r for r in records if all(r.get(k) == v for k, v in fields.items())]
    assert len(found) == 1, (fields, found)
    return found[0]


@pytest.fixture
def json_relay(tmp_path, request) -> Any:
    """A live relay (uvicorn) logging JSON, its ids as ``request.param`` says, with an owner."""
    owner = _an_owner_with_a_lobby(tmp_path)
    relay = start_relay("uvicorn", tmp_path, RELAY_LOG_FORMAT="json", RELAY_LOG_IDS=request.param)
    try:
        asyncio.run(_one_of_each(relay, *owner[:3]))
        yield relay, owner
    finally:
        stop_relay(relay)


@pytest.mark.live
@pytest.mark.parametrize("json_relay", ["plain"], indirect=True)
def test_json_lines_carry_each_connection_event_and_operator_action(json_relay):
    relay, (ticket, _, _, user_id) = json_relay
    records = _records(relay)
    for record in records:  # the common keys of every line, the relay's own and Django's
        assert {"timestamp", "level", "logger", "message"} <= record.keys(), record
    log = relay.log()
    assert ticket not in log  # nor in any field

    opened = _one(records, event="connection.opened", endpoint="introduction", peer_id=HOST)
    assert opened["logger"] == "lobbies.engine.connections" and opened["level"] == "INFO"
    assert opened["user"] == OWNER and opened["user_id"] == user_id
    assert opened["client"].startswith("127.0.0.1:") and opened["path"] == f"/introduction/{HOST}"
    assert opened["connection_id"].startswith(opened["worker"] + ".")
    assert "T" in opened["timestamp"]  # ISO 8601

    # The pipe end that sent the frames: its counts, its code (it closed first: 1000), its
    # duration, and the same connection id as its opened line.
    pipe = {"endpoint": "connection", "peer_id": HOST, "partner_id": GUEST}
    sent = _one(records, event="connection.closed", **pipe)
    assert sent["document_id"] == DOCUMENT and sent["frames_in"] == FRAMES
    assert sent["bytes_in"] >= FRAMES * 8 and sent["close_code"] == 1000
    assert isinstance(sent["duration_s"], float) and sent["duration_s"] >= 0
    assert (
        sent["connection_id"] == _one(records, event="connection.opened", **pipe)["connection_id"]
    )
    # The guest's pipe end, closed by the kick.
    kicked = _one(records, event="connection.closed", endpoint="connection", peer_id=GUEST)
    assert kicked["close_code"] == 4410 and kicked["close_reason"]
    control = _one(records, event="connection.closed", endpoint="introduction", peer_id=HOST)
    assert control["control_frames_in"] == 1 and control["ids_joined"] == 1

    refused = _one(records, event="connection.refused")
    assert refused["close_code"] == 4401 and refused["peer_id"] == STRANGER
    assert refused["close_reason"] and refused["path"] == f"/introduction/{STRANGER}"

    action = _one(records, event="operator.action")
    assert action["logger"] == "lobbies.operators"
    assert (action["action"], action["peer_id"], action["document_id"]) == ("kick", GUEST, DOCUMENT)
    assert action["by_user_id"] == user_id
    assert not [r for r in records if "frame" in r["message"] and "closed" not in r["message"]]


@pytest.mark.live
@pytest.mark.parametrize("json_relay", ["hashed"], indirect=True)
def test_hashed_ids_never_show_an_id_and_follow_one_peer(json_relay, tmp_path):
    relay, (ticket, _, _, user_id) = json_relay
    records = _records(relay)
    log = relay.log()
    for plain in (OWNER, HOST, GUEST, STRANGER, DOCUMENT, ticket):
        assert plain not in log
    # The operator's command gives the hash the relay wrote (same secret key), so an id's
    # lines can be found; the same id has the same hash in every line.
    ids = (HOST, GUEST, DOCUMENT, OWNER)
    shown = dict(zip(ids, _manage(tmp_path, "log_id", *ids).split(), strict=True))
    assert len(set(shown.values())) == 4 and all(h.startswith("#") for h in shown.values())
    host_lines = [r for r in records if r.get("peer_id") == shown[HOST]]
    assert {r["event"] for r in host_lines} == {"connection.opened", "connection.closed"}
    assert len(host_lines) == 4  # its control socket and its pipe end, each opened and closed
    assert all(r["user"] == shown[OWNER] for r in host_lines if r["endpoint"] == "introduction")
    action = _one(records, event="operator.action")
    assert (action["peer_id"], action["document_id"]) == (shown[GUEST], shown[DOCUMENT])
    pipe = _one(records, event="connection.closed", endpoint="connection", peer_id=shown[HOST])
    assert pipe["path"] == f"/connection/{shown[HOST]}/{shown[GUEST]}/{shown[DOCUMENT]}"
    assert pipe["frames_in"] == FRAMES and action["by_user_id"] == user_id


# -- in-process ---------------------------------------------------------------------------------


@pytest.fixture
def hashed(settings) -> None:
    settings.RELAY_LOG_IDS = "hashed"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_presence")
async def test_hashed_lines_of_sockets_and_refusals_in_process(hashed, caplog, settings):
    caplog.set_level("INFO", logger="lobbies")
    secret = "mallory@example.org"
    socket = await opened(f"/introduction/{secret}")
    await socket.send_to(text_data=join("mallorys-diary"))
    await socket.disconnect()
    bad = await opened("/introduction/bad%00id-of-mallory")  # an invalid id, quoted in the reason
    assert await closed_with(bad) == 4400
    nowhere = await opened("/mallory/nowhere")
    assert await closed_with(nowhere) == 4400
    assert "mallory" not in caplog.text and "diary" not in caplog.text
    for record in caplog.records:
        assert "mallory" not in json.dumps(record.__dict__, default=str)
    lines = [r for r in caplog.records if getattr(r, "peer_id", None) == hashed_id(secret)]
    opened_line, closed_line = lines
    assert (opened_line.event, closed_line.event) == ("connection.opened", "connection.closed")
    assert opened_line.connection_id == closed_line.connection_id
    refusals = [r for r in caplog.records if getattr(r, "event", "") == "connection.refused"]
    assert [r.close_code for r in refusals] == [4400, 4400]
    # Another secret key, another hash: nobody without the key can check a guess.
    first = hashed_id(secret)
    settings.SECRET_KEY = "another key " * 5
    assert hashed_id(secret) != first


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_presence")
def test_an_operator_action_on_the_owners_page_is_one_line(caplog, hashed):
    caplog.set_level("INFO", logger="lobbies")
    owner = User.objects.create_user("owner-mallory", password="a long password 1")
    lobby = Lobby.objects.create(document_id="team-mallory", owner=owner)
    page = f"/my/lobbies/{lobby.public_id}/"
    assert signed_in(owner).post(page, {"action": "state", "state": "closed"}).status_code == 302
    (line,) = [r for r in caplog.records if getattr(r, "event", "") == "operator.action"]
    assert (line.action, line.document_id, line.by_user_id) == (
        "close",
        hashed_id("team-mallory"),
        owner.pk,
    )
    assert line.name == "lobbies.operators" and "mallory" not in caplog.text


def test_log_settings_are_checked(settings):
    assert setting_errors(relay_settings()) == []
    settings.RELAY_LOG_FORMAT, settings.RELAY_LOG_IDS = "xml", "sha1"
    assert setting_errors(relay_settings()) == [
        "RELAY_LOG_FORMAT must be plain or json",
        "RELAY_LOG_IDS must be plain or hashed",
    ]
