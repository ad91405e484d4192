"""Live sockets die with their credentials.

A socket's credentials are checked once, at its handshake (``lobbies.auth``). So that taking a
credential back takes effect at once, not at the next reconnect, the changes that kill one close
the sockets it authenticated with 4401 (``lobbies.moderation.disconnect_user``):

- a user deactivated or deleted: every socket of theirs;
- a user's password changed: the sockets of their session and of their tickets (a ticket carries
  a digest of the password's session-auth hash), not those of their API tokens, which live on
  until revoked;
- an API token revoked or deleted: exactly the sockets it authenticated, and those of the
  tickets it minted.

Model receivers, run once the change is committed, in the process that made it (the relay's own
pages, API and admin), which tells every worker (``RELAY_REDIS_URL``): a change made outside the
relay's processes (``manage.py changepassword``) takes effect at the socket's next handshake.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from lobbies import moderation
from lobbies.engine.protocol import CloseCode
from lobbies.models import ApiToken

_WATCHED = ("password", "is_active")


def _close(user_id: int, reason: str, **which: Any) -> None:
    code = CloseCode.UNAUTHORIZED
    moderation.after_commit(lambda: moderation.disconnect_user(user_id, code, reason, **which))


@receiver(pre_save, sender=settings.AUTH_USER_MODEL)
def _user_saving(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    if raw or instance.pk is None:
        return
    names = [f.name for f in sender._meta.concrete_fields if f.name in _WATCHED]
    if update_fields is not None:  # e.g. last_login at every sign-in: no query
        names = [name for name in names if name in update_fields]
    if names:
        instance._credentials_before = (
            sender._default_manager.filter(pk=instance.pk).values(*names).first()
        )


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def _user_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    before = instance.__dict__.pop("_credentials_before", None)
    if not before:
        return
    if before.get("is_active", False) and not instance.is_active:
        _close(instance.pk, "the user was deactivated")
    elif "password" in before and before["password"] != instance.password:
        # Sessions and tickets (also a token's) end with the password; a bare API token does not.
        _close(instance.pk, "the password was changed", keep_tokens=True)


@receiver(post_delete, sender=settings.AUTH_USER_MODEL)
def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    _close(instance.pk, "the user was deleted")


@receiver(post_save, sender=ApiToken)
@receiver(post_delete, sender=ApiToken)
def _token_changed(sender: Any, instance: ApiToken, **kwargs: Any) -> None:
    if instance.revoked_at is None and kwargs.get("signal") is post_save:
        return
    mine = frozenset({f"token:{instance.pk}", f"ticket:{instance.pk}"})
    _close(instance.user_id, "the API token was revoked", credentials=mine)
