"""Signing in, tried as an attacker would: password guessing and spraying on the admin's and the
owners' sign-in pages (locked out with a 429 page), the password pages Django would otherwise
expose, and a forged Host header."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db.models import F
from django.test import Client

from lobbies.conf import relay_settings, setting_errors

pytestmark = pytest.mark.django_db

PASSWORD = "a long password 7"
ATTACKER, ELSEWHERE = "203.0.113.5", "198.51.100.7"


@pytest.fixture
def operator() -> User:
    return User.objects.create_superuser("operator", password=PASSWORD)


@pytest.fixture
def owner() -> User:
    return User.objects.create_user("owner", password=PASSWORD)


def sign_in(page: str, username: str, password: str, address: str) -> tuple[Client, int]:
    """A fresh browser at ``address`` posts the sign-in form of ``page``: the client and the
    status of the answer."""
    client = Client(REMOTE_ADDR=address)
    response = client.post(page, {"username": username, "password": password, "next": "/my/"})
    return client, response.status_code


def signed_in(client: Client) -> bool:
    return client.get("/my/").status_code == 200


@pytest.mark.parametrize("page", ["/admin/login/", "/accounts/login/"])
def test_guessing_a_password_locks_that_account_out_from_that_address(page, operator):
    for _ in range(60):
        _client, status = sign_in(page, "operator", "guess", ATTACKER)
    assert status == 429
    client, status = sign_in(page, "operator", PASSWORD, ATTACKER)  # the right one, too late
    assert status == 429 and not signed_in(client)
    page_shown = client.post(page, {"username": "operator", "password": PASSWORD})
    assert b"Too many sign-in attempts" in page_shown.content
    assert b"0:15:00" in page_shown.content  # the cool-off, RELAY_SIGNIN_LOCKOUT minutes
    # The operator, elsewhere, is not locked out by someone else's guesses.
    client, status = sign_in(page, "operator", PASSWORD, ELSEWHERE)
    assert status == 302 and signed_in(client)


def test_the_lock_starts_at_the_fifth_failure_and_spares_other_accounts(operator, owner):
    for _ in range(4):
        assert sign_in("/accounts/login/", "operator", "guess", ATTACKER)[1] == 200
    assert sign_in("/accounts/login/", "operator", "guess", ATTACKER)[1] == 429
    assert sign_in("/accounts/login/", "operator", PASSWORD, ATTACKER)[1] == 429
    # Another account from the same address (under the per-address limit) still signs in.
    client, status = sign_in("/accounts/login/", "owner", PASSWORD, ATTACKER)
    assert status == 302 and signed_in(client)


def test_a_password_spray_from_one_address_is_locked_out(settings, owner):
    settings.RELAY_SIGNIN_FAILURES_PER_ADDRESS = 8
    for i in range(8):  # one try each: never the per-account limit
        sign_in("/admin/login/", f"user-{i}", "Summer2026!", ATTACKER)
    client, status = sign_in("/accounts/login/", "owner", PASSWORD, ATTACKER)
    assert status == 429 and not signed_in(client)
    assert sign_in("/accounts/login/", "owner", PASSWORD, ELSEWHERE)[1] == 302


def test_signing_in_forgets_the_accounts_failures_but_not_a_spray(settings, owner):
    settings.RELAY_SIGNIN_FAILURES_PER_ADDRESS = 8
    for _ in range(4):
        sign_in("/accounts/login/", "owner", "typo", ATTACKER)
    assert sign_in("/accounts/login/", "owner", PASSWORD, ATTACKER)[1] == 302
    for _ in range(4):  # four more typos: the first four were forgotten
        sign_in("/accounts/login/", "owner", "typo", ATTACKER)
    assert sign_in("/accounts/login/", "owner", PASSWORD, ATTACKER)[1] == 302
    # A sprayer with an account of their own: signing into it does not wipe the spray's count.
    for i in range(7):
        sign_in("/accounts/login/", f"user-{i}", "Summer2026!", ATTACKER)
    assert sign_in("/accounts/login/", "owner", PASSWORD, ATTACKER)[1] == 302
    sign_in("/accounts/login/", "user-7", "Summer2026!", ATTACKER)
    assert sign_in("/accounts/login/", "owner", PASSWORD, ATTACKER)[1] == 429


def test_after_the_cool_off_signing_in_works_again(operator):
    for _ in range(5):
        sign_in("/admin/login/", "operator", "guess", ATTACKER)
    assert sign_in("/admin/login/", "operator", PASSWORD, ATTACKER)[1] == 429
    # Sixteen minutes on: the failures are older than RELAY_SIGNIN_LOCKOUT (15).
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=16))
    client, status = sign_in("/admin/login/", "operator", PASSWORD, ATTACKER)
    assert status == 302 and client.get("/admin/").status_code == 200


def test_an_operator_lifts_a_lockout_with_axes_reset(operator):
    for _ in range(5):
        sign_in("/admin/login/", "operator", "guess", ATTACKER)
    assert sign_in("/admin/login/", "operator", PASSWORD, ATTACKER)[1] == 429
    call_command("axes_reset", verbosity=0)
    assert sign_in("/admin/login/", "operator", PASSWORD, ATTACKER)[1] == 302


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/password_reset/",
        "/accounts/password_reset/done/",
        "/accounts/reset/MQ/set-password/",
        "/accounts/password_change/",
    ],
)
def test_only_signing_in_and_out_are_exposed(path, owner):
    client = Client()
    client.force_login(owner)
    assert client.get(path).status_code == 404
    assert client.post(path, {"email": "owner@example.com"}).status_code == 404


def test_a_forged_host_is_refused():
    client = Client()
    assert client.get("/", headers={"host": "evil.example"}).status_code == 400
    for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080"):
        assert client.get("/", headers={"host": host}).status_code == 200, host


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"signin_lockout": 0}, "RELAY_SIGNIN_LOCKOUT must be above 0"),  # 0: locked for ever
        ({"signin_failures": 0}, "RELAY_SIGNIN_FAILURES must be at least 1"),
        ({"signin_failures_per_address": 0}, "RELAY_SIGNIN_FAILURES_PER_ADDRESS must be at"),
    ],
)
def test_impossible_sign_in_settings_are_refused(change, error):
    errors = setting_errors(dataclasses.replace(relay_settings(), **change))
    assert any(e.startswith(error) for e in errors), errors
