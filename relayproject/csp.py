"""The Content-Security-Policy header of the relay's pages: django-csp's middleware, with the
page's own WebSocket origin added to ``connect-src``.

The policy itself is ``CONTENT_SECURITY_POLICY`` in ``relayproject/settings.py``. Its
``connect-src 'self'`` lets a page fetch from the relay; whether it also lets the page open a
WebSocket to the relay (``ws://`` and ``wss://`` are other schemes than the page's) depends on the
browser (CSP Level 3 says yes, older ones said no), so ``ws://<host>`` (``wss://`` on a page
served over https) is named as well: the demo page connects to it.

The relay's own templates hold no inline script or style. Django's admin has one inline style
(its change list without actions, as a user without the delete permission sees it): its hash is
allowed in ``style-src`` on the admin's pages, computed from the installed admin's template, so
an upgraded Django brings its own.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

import django.contrib.admin
from csp.middleware import CSPMiddleware, PolicyParts
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase


@cache
def admin_inline_styles() -> list[str]:
    """The CSP hash sources (``'sha256-...'``) of the inline styles of Django's admin templates
    that the relay's admin pages render."""
    templates = Path(django.contrib.admin.__file__).parent / "templates" / "admin"
    styles = re.findall(r"<style>(.*?)</style>", (templates / "change_list.html").read_text(), re.S)
    digests = (hashlib.sha256(style.encode()).digest() for style in styles)
    return [f"'sha256-{base64.b64encode(digest).decode()}'" for digest in digests]


class RelayCSPMiddleware(CSPMiddleware):
    """django-csp's middleware, whose ``connect-src`` also names this page's WebSocket origin
    and whose ``style-src`` on the admin's pages allows the admin's one inline style."""

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        update = dict(parts.update or {})
        if request.path_info.startswith("/admin/"):
            update["style-src"] = [*update.get("style-src", []), *admin_inline_styles()]
        try:
            # The Host header, once Django has checked it against ALLOWED_HOSTS: a forged one
            # is never written into the header (that request was answered 400 already).
            host = request.get_host()
        except DisallowedHost:
            host = None
        if host is not None:
            scheme = "wss" if request.is_secure() else "ws"
            update["connect-src"] = [*update.get("connect-src", []), f"{scheme}://{host}"]
        parts.update = update
        return parts
