"""The production settings: ``manage.py check --deploy`` with the environment docs/deploy.md
documents (deploy/systemd/relay.env, the one source), and the Content-Security-Policy header of
the relay's pages (its browser side is in tests/test_csp_browser.py)."""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.accounts import signed_in
from tests.conftest import ROOT

PRODUCTION_ENV = ROOT / "deploy" / "systemd" / "relay.env"


def production_environment() -> dict[str, str]:
    """The variables of deploy/systemd/relay.env, as systemd's EnvironmentFile reads them."""
    variables = {}
    for line in PRODUCTION_ENV.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            variables[name.strip()] = value.strip()
    return variables


def _without_our_variables() -> dict[str, str]:
    ours = ("DJANGO_", "RELAY_", "DATABASE_URL")
    return {k: v for k, v in os.environ.items() if not k.startswith(ours)}


@functools.cache
def hashed_static() -> str:
    """Static files collected as relay-setup collects them in production (hashed names), once:
    the URLs are checked against their manifest."""
    root = tempfile.mkdtemp(prefix="relay-manifest-")
    production = {"DJANGO_STATIC_MANIFEST": "true", "DJANGO_STATIC_ROOT": root}
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env={**_without_our_variables(), **production, "RELAY_DATA_DIR": root},
        check=True,
        timeout=300,
    )
    return root


def check_deploy(variables: dict[str, str], data_dir: Path) -> subprocess.CompletedProcess:
    """``manage.py check --deploy`` (failing on warnings too) with only ``variables`` of the
    relay's own: nothing of the test run's environment (DJANGO_*, RELAY_*, DATABASE_URL). As in
    production, after relay-setup's collectstatic."""
    environ = _without_our_variables() | variables
    environ |= {"RELAY_DATA_DIR": str(data_dir), "DJANGO_STATIC_ROOT": hashed_static()}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_the_documented_production_environment(tmp_path):
    variables = production_environment()
    assert variables["DJANGO_SECRET_KEY"] == "CHANGE-ME"  # the file holds no real secret
    variables["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)  # as the file says to make one
    checked = check_deploy(variables, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "System check identified no issues (1 silenced)." in checked.stdout


@pytest.mark.parametrize(
    ("variable", "value", "warning"),
    [
        ("DJANGO_SECURE_COOKIES", "false", "security.W012"),  # session cookie over plain http
        ("DJANGO_SECURE_HSTS_SECONDS", "0", "security.W004"),
        ("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", "false", "security.W005"),
        ("DJANGO_SECURE_SSL_REDIRECT", "false", "security.W008"),
        ("DJANGO_SECRET_KEY", "CHANGE-ME", "security.W009"),  # the placeholder left in
        ("DJANGO_DEBUG", "true", "security.W018"),
    ],
)
def test_check_deploy_warns_without_each_production_setting(tmp_path, variable, value, warning):
    variables = production_environment() | {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}
    checked = check_deploy(variables | {variable: value}, tmp_path)
    assert checked.returncode != 0 and warning in checked.stderr, checked.stderr


def test_secure_cookies_follow_the_tls_proxy_setting(tmp_path):
    """Behind a TLS proxy cookies are https-only unless told otherwise; under `make run`'s plain
    http they are not (a browser would never send them back)."""
    code = (
        "from django.conf import settings; "
        "print(settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE)"
    )

    def shown(**variables: str) -> str:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
        run = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env={**environ, "RELAY_DATA_DIR": str(tmp_path), **variables},
            capture_output=True,
            text=True,
            check=True,
        )
        return run.stdout.strip().splitlines()[-1]

    assert shown() == "False False"
    assert shown(DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto") == "True True"
    secure_proxy_plain_cookies = {
        "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
        "DJANGO_SECURE_COOKIES": "false",
    }
    assert shown(**secure_proxy_plain_cookies) == "False False"


# -- Content-Security-Policy ---------------------------------------------------------------------


@pytest.mark.django_db
def test_every_page_carries_the_content_security_policy():
    owner = User.objects.create_user("csp-owner", password="a long password 1")
    operator = User.objects.create_superuser("csp-root", password="a long password 2")
    pages = {
        "/": Client(),
        "/demo/": Client(),
        "/accounts/login/": Client(),
        "/my/": signed_in(owner),
        "/my/access/": signed_in(owner),
        "/admin/": signed_in(operator),
        "/admin/lobbies/lobby/": signed_in(operator),
        "/api/docs": Client(),
    }
    for path, client in pages.items():
        answer = client.get(path, HTTP_HOST="localhost:8080")
        assert answer.status_code == 200, path
        directives = answer.headers["Content-Security-Policy"].split("; ")
        policy = dict(directive.partition(" ")[::2] for directive in directives)
        assert policy["script-src"] == "'self'", path  # no inline script, no eval
        assert "unsafe-inline" not in policy["style-src"], path
        assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
        # WebSockets to the page's own host (and only to it) besides fetches.
        assert policy["connect-src"] == "'self' ws://localhost:8080", path


@pytest.mark.django_db
def test_behind_tls_the_policy_names_wss(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ALLOWED_HOSTS = ["relay.example.org"]
    answer = Client().get("/", HTTP_HOST="relay.example.org", HTTP_X_FORWARDED_PROTO="https")
    assert "connect-src 'self' wss://relay.example.org" in answer.headers["Content-Security-Policy"]
    # A forged Host is refused, and never written into the policy.
    forged = Client().get("/", HTTP_HOST="evil.example")
    assert forged.status_code == 400
    assert "evil" not in forged.headers.get("Content-Security-Policy", "")


def test_templates_hold_no_inline_script_or_style():
    """What the policy would block: every script and style of the relay's pages is a static
    file (a JSON data block, json_script's, is not a script and is allowed)."""
    for template in (ROOT / "templates").rglob("*.html"):
        text = template.read_text()
        assert "<script>" not in text and "<style" not in text, template
        assert ' style="' not in text and " onclick=" not in text, template


def test_the_tls_nginx_example_is_valid_nginx(tmp_path):
    """deploy/nginx/relay-tls.conf as docs/deploy.md installs it, its certificate, log and
    static paths pointed at this test's files: nginx itself accepts it (`nginx -t`)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        pytest.skip("nginx is not installed (make test installs it)")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=relay.example.org", "-keyout", tmp_path / "key.pem", "-out", tmp_path / "cert.pem"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    site = (ROOT / "deploy" / "nginx" / "relay-tls.conf").read_text()
    site = re.sub(
        r"/etc/letsencrypt/live/relay.example.org/fullchain.pem", str(tmp_path / "cert.pem"), site
    )
    site = re.sub(
        r"/etc/letsencrypt/live/relay.example.org/privkey.pem", str(tmp_path / "key.pem"), site
    )
    site = site.replace("/var/log/nginx/", f"{tmp_path}/")
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n{site}\n}}\n"
    )
    tested = subprocess.run(
        [nginx, "-t", "-c", tmp_path / "nginx.conf", "-e", tmp_path / "error.log"],
        capture_output=True,
        text=True,
    )
    assert tested.returncode == 0, tested.stderr
    assert "test is successful" in tested.stderr
