"""Making owners: accounts that may create lobbies and use the owners' pages (``/my/``).

An **owner** is an active user holding the permission ``lobbies.create_lobby`` ("Can create
lobbies"), so that they may create lobbies whatever ``RELAY_CREATION_POLICY`` says. There are
three ways to make one:

- an operator, in the admin: add a user, give it "Can create lobbies";
- an operator, with ``manage.py create_owner USERNAME`` (:func:`make_owner`): the account, with
  an unusable password, and a one-time **sign-in link** (:func:`signin_link`) that the owner
  opens to choose a password, landing signed in on ``/my/``;
- the owner themselves at ``/accounts/signup/`` (:func:`signup`), when ``RELAY_SIGNUP`` is on.

The sign-in link is Django's password-reset confirmation (:class:`SigninLinkView`): a token from
``default_token_generator``, an HMAC with the secret key over the user's password hash, last
sign-in and the moment it was made. Nothing is stored, and the link dies once used (the password
and the last sign-in change) or after ``PASSWORD_RESET_TIMEOUT`` (``RELAY_SIGNIN_LINK_TTL``).
There is deliberately no page that *sends* such links: an e-mail would carry a link built on a
request's Host header, which a client chooses. The operator's command builds it on
``RELAY_PUBLIC_URL`` (or ``--url``) instead.

Sign-ups go through the sign-in throttling (``relayproject.signin``): every attempt, good or
bad, is recorded as a failure of the pseudo-account :data:`SIGNUP_ATTEMPT` from the client's
address, so a script cannot make accounts (or spray passwords) faster from there.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_lockout_response
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import Permission
from django.contrib.auth.tokens import default_token_generator
from django.contrib.auth.views import LoginView, PasswordResetConfirmView
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from lobbies.conf import relay_settings
from lobbies.policy import CREATE_PERMISSION

# The name sign-up attempts are recorded under in the sign-in throttling. No user can be called
# so: usernames are letters, digits and @.+-_ (the model's validator, which sign-up and
# create_owner apply), so no sign-in can clear or share its count.
SIGNUP_ATTEMPT = "(sign-up)"

# The backend a new owner is signed in with: several are configured (axes' first), so Django
# must be told which one vouches for the session.
_BACKEND = "django.contrib.auth.backends.ModelBackend"


class OwnerError(Exception):
    """An owner cannot be made as asked (the message says why, for the operator)."""


def _creation_permission() -> Permission:
    app_label, codename = CREATE_PERMISSION.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def grant_creation(user: Any) -> bool:
    """Give ``user`` the permission to create lobbies; whether they lacked it."""
    permission = _creation_permission()
    if user.user_permissions.filter(pk=permission.pk).exists():
        return False
    user.user_permissions.add(permission)
    return True


def username_problem(username: str) -> str | None:
    """What is wrong with ``username`` as a new account's name, or None (the rules of Django's
    user model, as the admin and the sign-up form apply them)."""
    model = get_user_model()
    if not username:
        return "a username cannot be empty"
    try:
        # The field's own validators: its length and its characters.
        model._meta.get_field(model.USERNAME_FIELD).run_validators(username)
    except ValidationError as exc:
        return " ".join(exc.messages)
    return None


def make_owner(username: str, email: str = "") -> tuple[Any, bool]:
    """The owner named ``username``, and whether they were created now.

    A new one is active, not staff, holds the permission to create lobbies and has an unusable
    password (they choose one through :func:`signin_link`). An existing user keeps their
    password and is given the permission (and ``email``, when given). Raises
    :class:`OwnerError` for a name or address that cannot be used, a name that differs from an
    existing one only in case (two look-alike accounts), and a deactivated user (an operator
    deactivated them: reactivate them in the admin, on purpose).
    """
    model = get_user_model()
    # As create_user and the sign-up form store it (NFKC): a full-width letter is the letter.
    username = model.normalize_username(username)
    if problem := username_problem(username):
        raise OwnerError(f"{username!r}: {problem}")
    if email:
        try:
            validate_email(email)
            model._meta.get_field(model.EMAIL_FIELD).run_validators(email)  # (its length)
        except ValidationError as exc:
            reason = " ".join(exc.messages)
            raise OwnerError(f"{email!r} is not an e-mail address: {reason}") from exc
    name_field = model.USERNAME_FIELD
    with transaction.atomic():
        user = model._default_manager.filter(**{name_field: username}).first()
        created = user is None
        if created:
            lookalike = model._default_manager.filter(**{f"{name_field}__iexact": username})
            if other := lookalike.first():
                raise OwnerError(
                    f"a user named {other.get_username()!r} exists: names that differ only in "
                    "case would be mistaken for each other"
                )
            # No password given: an unusable one, until the owner chooses theirs.
            user = model._default_manager.create_user(username, email=email)
        elif not user.is_active:
            raise OwnerError(
                f"{username!r} is deactivated: reactivate them in the admin first if you mean to"
            )
        elif email and email != user.email:
            user.email = email
            user.save(update_fields=["email"])
        grant_creation(user)
    return user, created


def signin_link(user: Any, base_url: str) -> str:
    """A one-time link, on ``base_url`` (``http(s)://host[:port]``), with which ``user`` sets
    their password and is signed in. It dies once used and after ``PASSWORD_RESET_TIMEOUT``."""
    path = reverse(
        "signin-link",
        kwargs={
            "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": default_token_generator.make_token(user),
        },
    )
    return urljoin(base_url, path)


class SigninLinkView(PasswordResetConfirmView):
    """``/accounts/welcome/<uidb64>/<token>/``: the page a sign-in link opens. Django's own
    password-reset confirmation (the token moves into the session and out of the address bar
    at once, so it never leaks in a Referer), which then signs the owner in and shows ``/my/``.

    A link that is not valid (used, expired, mistyped, or its user deactivated) is a 404 that
    says so; a password the validators refuse is the form again with its errors, a 400.
    """

    template_name = "registration/signin_link.html"
    post_reset_login = True
    post_reset_login_backend = _BACKEND
    success_url = reverse_lazy("my-lobbies")

    def dispatch(self, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().dispatch(*args, **kwargs)
        if not self.validlink and response.status_code == 200:  # (not the redirect of a good one)
            response.status_code = 404
        return response

    def get_user(self, uidb64: str) -> Any:
        user = super().get_user(uidb64)
        # Django's token does not look at is_active: a deactivated user's link must not sign
        # them in again.
        return user if user is not None and user.is_active else None

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        messages.success(self.request, "Your password is set and you are signed in.")
        return response

    def form_invalid(self, form: Any) -> HttpResponse:
        return self.render_to_response(self.get_context_data(form=form), status=400)


class SignInView(LoginView):
    """Django's sign-in page, which also says whether visitors may sign up here."""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["signup_open"] = relay_settings().signup
        return context


class SignupForm(UserCreationForm):
    """Django's own: a username (unique whatever its case) and a password twice, checked by the
    password validators."""


def signup(request: HttpRequest) -> HttpResponse:
    """``/accounts/signup/`` (404 unless ``RELAY_SIGNUP``): make an owner, sign them in, show
    ``/my/``. Each attempt counts in the sign-in throttling before it is judged; past the
    address's budget the locked-out page (429), and nothing is made."""
    if not relay_settings().signup:
        raise Http404("signing up is not open on this relay")
    if request.user.is_authenticated:
        return redirect("my-lobbies")
    credentials = {"username": SIGNUP_ATTEMPT}
    if request.method == "POST":
        # Counted first, good or bad: a script making accounts is stopped as one guessing.
        AxesProxyHandler.user_login_failed(__name__, credentials, request)
    if not AxesProxyHandler.is_allowed(request, credentials):
        return get_lockout_response(request, None, credentials)
    form = SignupForm(request.POST or None)
    if request.method != "POST":
        return render(request, "registration/signup.html", {"form": form})
    if form.is_valid():
        try:
            with transaction.atomic():
                user = form.save()
                grant_creation(user)
        except IntegrityError:
            # The same name taken by a sign-up racing this one since the form looked.
            form.add_error("username", "A user with that username already exists.")
        else:
            login(request, user, backend=_BACKEND)
            messages.success(request, f"Welcome, {user.get_username()}: create your first lobby.")
            return redirect("my-lobbies")
    return render(request, "registration/signup.html", {"form": form}, status=400)
