"""Relay settings: read through lobbies.conf, and impossible values refused at start-up."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from lobbies.conf import relay_settings, setting_errors
from tests.conftest import ROOT


def test_the_defaults_are_sound():
    assert setting_errors(relay_settings()) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_ids_per_peer": -1}, "RELAY_MAX_IDS_PER_PEER must be at least 1"),
        ({"pair_timeout": 0}, "RELAY_PAIR_TIMEOUT must be above 0"),
        ({"close_timeout": -5}, "RELAY_CLOSE_TIMEOUT must be above 0"),
        ({"max_frame_bytes": 10, "max_held_bytes": 5}, "smaller than one frame"),
        ({"max_frame_bytes": 1000, "max_held_bytes": 1000}, "smaller than one frame"),
        ({"max_held_bytes_total": 1}, "larger than RELAY_MAX_HELD_BYTES_TOTAL"),
        ({"max_held_bytes_per_address": 1000}, "RELAY_MAX_HELD_BYTES_PER_ADDRESS is smaller"),
        ({"max_held_pipes_per_address": 0}, "RELAY_MAX_HELD_PIPES_PER_ADDRESS must be at"),
        ({"presence_backend": "no.such.Backend"}, "RELAY_PRESENCE_BACKEND cannot be imported"),
        ({"creation_policy": "everyone"}, "RELAY_CREATION_POLICY must be one of anyone,"),
        ({"ticket_ttl": 0}, "RELAY_TICKET_TTL must be above 0"),
        ({"join_rate": "fast"}, "RELAY_JOIN_RATE must be a rate such as 20/second"),
        ({"handshake_rate": "10 per sec"}, "RELAY_HANDSHAKE_RATE must be a rate"),
        ({"max_connections_per_address": -1}, "RELAY_MAX_CONNECTIONS_PER_ADDRESS must be at"),
    ],
)
def test_impossible_values_are_named(change, message):
    errors = setting_errors(dataclasses.replace(relay_settings(), **change))
    assert any(message in error for error in errors), errors


def test_keepalive_and_the_abuse_limits_can_be_switched_off():
    off = {
        "ping_interval": 0,
        "max_connections_per_address": 0,
        "handshake_rate": "",
        "join_rate": "",
        "introduction_rate": "",
        "refusal_rate": "",
        "refusal_delay": 0,
    }
    assert setting_errors(dataclasses.replace(relay_settings(), **off)) == []


def test_the_system_check_refuses_them(settings):
    settings.RELAY_MAX_FRAME_BYTES = settings.RELAY_MAX_HELD_BYTES + 1
    with pytest.raises(SystemCheckError, match="RELAY_MAX_HELD_BYTES is smaller than one frame"):
        call_command("check")


def test_the_server_does_not_start_with_them(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", "1"],
        cwd=ROOT,
        env={**os.environ, "RELAY_DATA_DIR": str(tmp_path), "RELAY_MAX_HELD_PIPES": "-3"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "RELAY_MAX_HELD_PIPES must be at least 1" in result.stderr
    assert "listening" not in result.stdout
