"""Becoming an owner: ``manage.py create_owner`` and its one-time sign-in link (followed with
Django's test client, and once in Chromium), and self sign-up behind ``RELAY_SIGNUP``, tried as
an attacker would (a used, expired or forged link, a deactivated user, look-alike names, a
script making accounts, a form posted without its CSRF token)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from lobbies.conf import relay_settings, setting_errors
from lobbies.models import Lobby
from tests.accounts import owner_link
from tests.conftest import ROOT, LiveRelay, start_relay, stop_relay

PASSWORD = "a long password 7"
ATTACKER, ELSEWHERE = "203.0.113.5", "198.51.100.7"
LOBBY_FORM = {"document_id": "race", "topology": "mesh", "visibility": "public", "data": "{}"}


def pages(test):
    """For the tests that create lobbies through the owners' pages (which commit, and ask
    presence how many peers each lobby has)."""
    return pytest.mark.django_db(transaction=True)(pytest.mark.usefixtures("fresh_presence")(test))


def create_owner(*args: str) -> tuple[str, str]:
    """Run ``create_owner``: its last line (the link) and what it told the operator."""
    out, err = io.StringIO(), io.StringIO()
    call_command("create_owner", *args, stdout=out, stderr=err)
    return out.getvalue().strip().splitlines()[-1], err.getvalue()


def path_of(link: str) -> str:
    return urlsplit(link).path


def can_sign_in(username: str, password: str) -> bool:
    """Whether the sign-in page takes this password (a fresh browser)."""
    client = Client()
    client.post("/accounts/login/", {"username": username, "password": password})
    return client.get("/my/").status_code == 200


def set_password(client: Client, link: str, password: str = PASSWORD):
    """Open the link and choose ``password``, as the owner's browser would; the last answer."""
    opened = client.get(path_of(link), follow=True)
    assert opened.status_code == 200, opened.content
    form_path = opened.redirect_chain[-1][0]  # the token moved into the session
    answer = {"new_password1": password, "new_password2": password}
    return client.post(form_path, answer, follow=True)


# --- create_owner ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_owner_makes_an_owner_without_a_password_and_prints_a_link():
    link, told = create_owner("alice", "--email", "alice@example.org")
    alice = User.objects.get(username="alice")
    assert alice.is_active and not alice.is_staff and not alice.is_superuser
    assert alice.email == "alice@example.org"
    assert not alice.has_usable_password()  # nobody can sign in as her before she chooses one
    assert alice.has_perm("lobbies.create_lobby")
    assert link.startswith("http://127.0.0.1:8080/accounts/welcome/")
    assert "created" in told and "24 hours" in told


@pages
def test_the_link_sets_a_password_signs_in_and_the_owner_creates_a_lobby(settings):
    settings.RELAY_CREATION_POLICY = "permission"  # only owners may create lobbies
    link, _told = create_owner("alice")
    browser = Client()
    landed = set_password(browser, link)
    assert landed.redirect_chain[-1][0] == "/my/"
    assert b"My lobbies" in landed.content and b"you are signed in" in landed.content
    created = browser.post("/my/", LOBBY_FORM, follow=True)
    assert created.status_code == 200
    assert Lobby.objects.get(document_id="race").owner.username == "alice"
    assert can_sign_in("alice", PASSWORD)  # the password she chose is hers from now on


@pytest.mark.django_db
def test_the_link_is_dead_once_used():
    link, _told = create_owner("alice")
    set_password(Client(), link)
    for client in (Client(), Client(REMOTE_ADDR=ATTACKER)):
        dead = client.get(path_of(link), follow=True)
        assert dead.status_code == 404
        assert b"This sign-in link is not valid" in dead.content
        # Nor can its form be posted to choose another password.
        posted = client.post(path_of(link), {"new_password1": "x" * 20, "new_password2": "x" * 20})
        assert posted.status_code == 404
    assert can_sign_in("alice", PASSWORD)  # the password she chose stayed hers


@pytest.mark.django_db
def test_an_expired_or_forged_link_is_refused():
    _link, _told = create_owner("alice")
    alice = User.objects.get(username="alice")

    class Yesterday(PasswordResetTokenGenerator):
        """A link printed longer ago than RELAY_SIGNIN_LINK_TTL."""

        def _now(self) -> datetime:
            return datetime.now() - timedelta(seconds=django_settings.PASSWORD_RESET_TIMEOUT + 60)

    uid = urlsafe_base64_encode(force_bytes(alice.pk))
    for path in (
        f"/accounts/welcome/{uid}/{Yesterday().make_token(alice)}/",
        f"/accounts/welcome/{uid}/cafe-0123456789abcdef0123/",
        f"/accounts/welcome/{uid}/set-password/",  # without a token in the session
        "/accounts/welcome/not-base64!/x/",
        f"/accounts/welcome/{urlsafe_base64_encode(b'999999')}/cafe-0123/",
    ):
        response = Client().get(path, follow=True)
        assert response.status_code == 404, path
        assert b"This sign-in link is not valid" in response.content
    assert not User.objects.get(username="alice").has_usable_password()


@pytest.mark.django_db
def test_a_deactivated_owners_link_signs_nobody_in():
    link, _told = create_owner("alice")
    User.objects.filter(username="alice").update(is_active=False)
    assert Client().get(path_of(link), follow=True).status_code == 404
    with pytest.raises(CommandError, match="deactivated"):
        create_owner("alice")


@pytest.mark.django_db
def test_a_password_the_validators_refuse_is_a_400_with_the_reason():
    link, _told = create_owner("alice")
    client = Client()
    opened = client.get(path_of(link), follow=True)
    form_path = opened.redirect_chain[-1][0]
    for first, second in (("password", "password"), (PASSWORD, PASSWORD + "x")):
        refused = client.post(form_path, {"new_password1": first, "new_password2": second})
        assert refused.status_code == 400
        assert refused.context["form"].errors["new_password2"]
    assert client.get("/my/").status_code == 302  # not signed in
    assert set_password(client, link).redirect_chain[-1][0] == "/my/"  # still usable


@pytest.mark.django_db
def test_create_owner_for_an_existing_user_grants_the_permission_and_a_fresh_link():
    User.objects.create_user("bob", password=PASSWORD)
    link, told = create_owner("bob", "--url", "https://relay.example.org")
    assert "exists" in told
    bob = User.objects.get(username="bob")
    assert bob.has_perm("lobbies.create_lobby")
    assert bob.check_password(PASSWORD)  # his password stays until he uses the link
    assert link.startswith("https://relay.example.org/accounts/welcome/")
    # A name that is bob's once normalised as Django stores names (NFKC) is bob.
    assert "exists" in create_owner("\uff42ob")[1] and User.objects.count() == 1
    set_password(Client(), link, "another long password 9")
    assert can_sign_in("bob", "another long password 9")
    assert not can_sign_in("bob", PASSWORD)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bad name"], "Enter a valid username"),
        (["x" * 151], "at most 150 characters"),
        ([""], "cannot be empty"),
        (["(sign-up)"], "Enter a valid username"),
        (["Carol"], "names that differ only in case"),
        (["dave", "--email", "not an address"], "not an e-mail address"),
        (["dave", "--email", "d" * 250 + "@example.org"], "at most 254 characters"),
        (["dave", "--url", "ftp://relay.example.org"], "must be an http:// or https://"),
        (["dave", "--url", "https://relay.example.org/x?y"], "without a path"),
        (["dave", "--url", "relay.example.org"], "must be an http:// or https://"),
    ],
)
def test_bad_input_to_create_owner_is_a_clear_error(args, message):
    User.objects.create_user("carol", password=PASSWORD)
    with pytest.raises(CommandError, match=message):
        create_owner(*args)
    assert not User.objects.exclude(username="carol").exists()


def test_the_help_of_create_owner_is_plain_text():
    done = subprocess.run(
        [sys.executable, "manage.py", "create_owner", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--url" in done.stdout and "``" not in done.stdout


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"public_url": "relay.example.org"}, "RELAY_PUBLIC_URL must be an http:// or https://"),
        ({"public_url": "http://relay.example.org/x"}, "RELAY_PUBLIC_URL must be the relay's"),
        ({"signin_link_ttl": 0}, "RELAY_SIGNIN_LINK_TTL must be above 0"),
        ({"signups_per_address": 0}, "RELAY_SIGNUPS_PER_ADDRESS must be at least 1"),
    ],
)
def test_impossible_onboarding_settings_are_refused(change, error):
    errors = setting_errors(dataclasses.replace(relay_settings(), **change))
    assert any(e.startswith(error) for e in errors), errors


def test_the_link_lives_as_long_as_the_setting_says():
    assert django_settings.PASSWORD_RESET_TIMEOUT == relay_settings().signin_link_ttl == 86400


# --- The sign-in page -----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_sign_in_page_says_how_to_get_an_account(settings):
    page = Client().get("/accounts/login/").content.decode()
    assert "create_owner" in page and "/accounts/signup/" not in page
    assert "createsuperuser" not in page and "Users page" not in page
    settings.RELAY_SIGNUP = True
    page = Client().get("/accounts/login/").content.decode()
    assert 'href="/accounts/signup/"' in page


# --- Signing up -----------------------------------------------------------------------------


def sign_up(username: str, password: str = PASSWORD, address: str = "127.0.0.1"):
    """A fresh browser at ``address`` posts the sign-up form."""
    form = {"username": username, "password1": password, "password2": password}
    return Client(REMOTE_ADDR=address).post("/accounts/signup/", form, follow=True)


@pytest.mark.django_db
def test_signing_up_is_not_there_unless_turned_on():
    assert Client().get("/accounts/signup/").status_code == 404
    assert sign_up("mallory").status_code == 404
    assert not User.objects.exists()


@pages
def test_signing_up_makes_an_owner_who_creates_a_lobby(settings):
    settings.RELAY_SIGNUP = True
    settings.RELAY_CREATION_POLICY = "permission"
    browser = Client()
    assert b"Sign up" in browser.get("/accounts/signup/").content
    form = {"username": "erin", "password1": PASSWORD, "password2": PASSWORD}
    landed = browser.post("/accounts/signup/", form, follow=True)
    assert landed.redirect_chain[-1][0] == "/my/" and b"My lobbies" in landed.content
    erin = User.objects.get(username="erin")
    assert erin.has_perm("lobbies.create_lobby") and not erin.is_staff
    browser.post("/my/", LOBBY_FORM)
    assert Lobby.objects.get(document_id="race").owner == erin


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("username", "password1", "password2", "field"),
    [
        ("Frank", PASSWORD, PASSWORD, "username"),  # "frank" exists: taken whatever the case
        ("bad name", PASSWORD, PASSWORD, "username"),
        ("(sign-up)", PASSWORD, PASSWORD, "username"),
        ("grace", "password", "password", "password2"),  # too common, too short
        ("grace", "12345678901", "12345678901", "password2"),  # entirely numeric
        ("grace", PASSWORD, PASSWORD + "x", "password2"),
        ("grace", "grace2026", "grace2026", "password2"),  # like the username
    ],
)
def test_bad_sign_up_forms_are_a_400_with_the_error(
    settings, username, password1, password2, field
):
    settings.RELAY_SIGNUP = True
    User.objects.create_user("frank", password=PASSWORD)
    form = {"username": username, "password1": password1, "password2": password2}
    response = Client().post("/accounts/signup/", form)
    assert response.status_code == 400
    assert response.context["form"].errors[field]
    assert list(User.objects.values_list("username", flat=True)) == ["frank"]


@pytest.mark.django_db
def test_a_sign_up_posted_without_its_csrf_token_is_refused(settings):
    settings.RELAY_SIGNUP = True
    form = {"username": "mallory", "password1": PASSWORD, "password2": PASSWORD}
    response = Client(enforce_csrf_checks=True).post("/accounts/signup/", form)
    assert response.status_code == 403 and not User.objects.exists()


@pytest.mark.django_db
def test_a_script_signing_up_from_one_address_is_stopped(settings):
    settings.RELAY_SIGNUP = True
    settings.RELAY_SIGNUPS_PER_ADDRESS = 3
    # Failed attempts count as much as successful ones.
    assert sign_up("bot-0", "password").status_code == 400
    for i in (1, 2):
        assert sign_up(f"bot-{i}", address="127.0.0.1").redirect_chain[-1][0] == "/my/"
    refused = sign_up("bot-3")
    assert refused.status_code == 429
    assert b"Too many sign-ups" in refused.content and b"0:15:00" in refused.content
    assert Client().get("/accounts/signup/").status_code == 429  # said before typing anything
    assert sorted(User.objects.values_list("username", flat=True)) == ["bot-1", "bot-2"]
    # Another address signs up; the operator lifts the lock as for sign-ins.
    assert sign_up("someone", address=ELSEWHERE).redirect_chain[-1][0] == "/my/"
    call_command("axes_reset", verbosity=0)
    assert sign_up("bot-3").redirect_chain[-1][0] == "/my/"


@pytest.mark.django_db
def test_sign_ups_and_failed_sign_ins_share_the_address_budget(settings):
    settings.RELAY_SIGNUP = True
    settings.RELAY_SIGNIN_FAILURES_PER_ADDRESS = 6
    User.objects.create_user("owner", password=PASSWORD)
    # A sprayer locked out of signing in cannot switch to signing up...
    for i in range(6):
        Client(REMOTE_ADDR=ATTACKER).post(
            "/accounts/login/", {"username": f"u{i}", "password": "x"}
        )
    assert sign_up("sprayer", address=ATTACKER).status_code == 429
    assert not User.objects.filter(username="sprayer").exists()
    # ...and sign-ups count against the address like failed sign-ins.
    for i in range(5):
        sign_up(f"new-{i}", address=ELSEWHERE)
    login = {"username": "owner", "password": "typo"}
    assert Client(REMOTE_ADDR=ELSEWHERE).post("/accounts/login/", login).status_code == 429


@pytest.mark.django_db
def test_a_signed_in_visitor_is_sent_to_their_lobbies(settings):
    settings.RELAY_SIGNUP = True
    client = Client()
    client.force_login(User.objects.create_user("owner", password=PASSWORD))
    assert client.get("/accounts/signup/")["Location"] == "/my/"


# --- In a real browser ----------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def relay(tmp_path) -> Iterator[LiveRelay]:
    relay = start_relay("uvicorn", tmp_path)
    yield relay
    stop_relay(relay)


@pytest.fixture
async def chromium() -> AsyncIterator:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        yield browser
        await browser.close()


@pytest.mark.live
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Chromium is not installed")
async def test_an_owner_opens_the_printed_link_in_a_browser(relay, chromium, tmp_path):
    link = await asyncio.to_thread(owner_link, tmp_path, "heidi", relay.http_url)
    page = await chromium.new_page()
    await page.goto(link)
    await page.wait_for_selector("h1:has-text('Choose your password')")
    assert "/welcome/" in page.url and link.rsplit("/", 2)[-2] not in page.url  # token hidden
    await page.fill("#id_new_password1", PASSWORD)
    await page.fill("#id_new_password2", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("h1:has-text('My lobbies')")
    assert "heidi" in await page.inner_text("nav")
    # The same link a second time: dead.
    other = await chromium.new_page()
    answer = await other.goto(link)
    assert answer is not None and answer.status == 404
    assert "not valid" in await other.inner_text("h1")
