"""Sign-in throttling: django-axes' database handler, with one limit per account and address and
a higher one per address.

Axes counts failed sign-ins (the admin's and the owners' login pages both go through
``authenticate``) for each entry of ``AXES_LOCKOUT_PARAMETERS`` and compares the largest count
with one limit. The relay wants two limits: ``RELAY_SIGNIN_FAILURES`` for one account from one
address (someone guessing a password), and ``RELAY_SIGNIN_FAILURES_PER_ADDRESS`` for one address
whatever the accounts (a password spray), higher so that people behind one NAT who mistype do not
lock each other out. Never by account alone: anyone could then lock an operator out.

Sign-ups (``lobbies.onboarding``, when ``RELAY_SIGNUP`` is on) are counted here too: each attempt
is recorded as a failure of the pseudo-account ``SIGNUP_ATTEMPT`` from the client's address, so
it counts against the address's limit as a failed sign-in does, and the sign-up page is refused
to an address past ``RELAY_SIGNUPS_PER_ADDRESS`` attempts, or locked out from signing in.

A successful sign-in forgets only that account's failures from that address
(``AXES_RESET_ON_SUCCESS``): a spray's count is not wiped by its author signing in to an account
of their own.
"""

from __future__ import annotations

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_failure_limit
from django.db.models import QuerySet, Sum
from django.http import HttpRequest

from lobbies.conf import relay_settings
from lobbies.onboarding import SIGNUP_ATTEMPT


def _failures(attempts: QuerySet) -> int:
    return attempts.aggregate(n=Sum("failures_since_start"))["n"] or 0


class SigninHandler(AxesDatabaseHandler):
    """Axes' database handler with a per-address limit beside the per-account one."""

    def get_failures(self, request: HttpRequest, credentials: dict | None = None) -> int:
        """The failures that count against ``AXES_FAILURE_LIMIT``: the account's from this
        address, or the limit itself once the address is past its own."""
        # In the order of AXES_LOCKOUT_PARAMETERS: [["username", "ip_address"], "ip_address"].
        account, address = self.get_user_attempts(request, credentials)
        limits = relay_settings()
        if _failures(address) >= limits.signin_failures_per_address:
            return get_failure_limit(request, credentials)
        if (credentials or {}).get("username") == SIGNUP_ATTEMPT:
            # A sign-up is recorded before it is judged (lobbies.onboarding): the attempt past
            # the budget is the first refused, and not a successful one.
            refused = _failures(account) > limits.signups_per_address
            return get_failure_limit(request, credentials) if refused else 0
        return _failures(account)

    def reset_user_attempts(self, request: HttpRequest, credentials: dict | None = None) -> int:
        """Forget the signed-in account's failures from this address, and no one else's."""
        # (Axes' own would also forget every failure of the address.)
        account, _address = self.filter_user_attempts(request, credentials)
        count, _ = account.delete()
        return count
