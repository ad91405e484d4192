"""The owners' page forms. Lobby metadata is validated by the same schema as a Join's ``lobby``
extra and the API (``lobbies.schemas.LobbySpec``), so the three never disagree."""

from __future__ import annotations

from typing import Any

from django import forms
from django.forms.fields import InvalidJSONInput
from pydantic import ValidationError

from lobbies.conf import relay_settings
from lobbies.engine.protocol import is_valid_id
from lobbies.models import Lobby
from lobbies.policy import LobbyState, Role
from lobbies.schemas import FIELDS, MAX_DATA_BYTES, MAX_DATA_DEPTH, LobbySpec, depth, field_named


class LobbyDataField(forms.JSONField):
    """A lobby's free-form data as typed in a form: JSON within ``LobbySpec``'s bounds, so that
    neither parsing it nor showing it again can exhaust the stack."""

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and len(value) > MAX_DATA_BYTES:
            raise forms.ValidationError(f"larger than {MAX_DATA_BYTES} bytes as JSON")
        try:
            data = super().to_python(value)
        except RecursionError:
            raise forms.ValidationError(f"nested deeper than {MAX_DATA_DEPTH} levels") from None
        if depth(data, MAX_DATA_DEPTH) > MAX_DATA_DEPTH:
            raise forms.ValidationError(f"nested deeper than {MAX_DATA_DEPTH} levels")
        return data

    def bound_data(self, data: Any, initial: Any) -> Any:
        # Shown again as typed when it cannot be parsed (Django parses it once more for that).
        try:
            return super().bound_data(data, initial)
        except RecursionError:
            return InvalidJSONInput(data)


# A lobby's ``max_peers`` as the owners' pages and the admin both name it.
CAPACITY_LABEL = "Capacity"
CAPACITY_HELP = "The most peers in the lobby at once; empty for no limit."


class LobbyForm(forms.ModelForm):
    """A lobby's metadata; its document id only when it is created. Validated by
    ``LobbySpec`` too (:attr:`spec`), and saved through ``lobbies.owners`` by the caller: the
    form itself never writes."""

    class Meta:
        model = Lobby
        fields = ["document_id", "title", "game", "max_peers", "topology", "visibility"]
        fields += ["host_transferable", "data"]
        labels = {"document_id": "Document id", "max_peers": CAPACITY_LABEL}
        help_texts = {"max_peers": CAPACITY_HELP}
        field_classes = {"data": LobbyDataField}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["data"].required = False
        self.spec: LobbySpec | None = None
        if self.instance.pk is not None:
            del self.fields["document_id"]

    def clean_document_id(self) -> str:
        value = self.cleaned_data["document_id"]
        if not is_valid_id(value, relay_settings().max_id_length):
            raise forms.ValidationError("Not a valid document id.")
        return value

    def validate_unique(self) -> None:
        # A taken document id is answered by lobbies.owners.create, as the API answers it.
        pass

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        values = {
            name: value
            for name, value in cleaned.items()
            if name in FIELDS and not (name == "data" and value is None)
        }
        try:
            self.spec = LobbySpec.model_validate(values)
        except ValidationError as exc:
            for error in exc.errors():
                where = field_named(str(error["loc"][0])) if error["loc"] else None
                self.add_error(where if where in self.fields else None, error["msg"])
        return cleaned

    def _post_clean(self) -> None:
        # The instance is not touched: lobbies.owners applies the changes (and only them).
        pass


class StateForm(forms.Form):
    state = forms.ChoiceField(choices=[(s.value, s.name.title()) for s in LobbyState])


class GrantForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="The user to invite.")
    role = forms.ChoiceField(choices=[(r.value, r.name.title()) for r in Role])


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What will use it, e.g. “game server”.")


class TicketForm(forms.Form):
    ttl = forms.FloatField(
        required=False, min_value=1, label="Seconds valid", help_text="Empty: the longest allowed."
    )


# How long an operator's ban from the lobby page lasts: minutes, or "" for until lifted.
BAN_DURATIONS = [
    ("15", "15 minutes"),
    ("60", "1 hour"),
    ("1440", "1 day"),
    ("10080", "1 week"),
    ("", "until lifted"),
]


def ban_minutes(choice: str) -> int | None:
    """A ban's length as chosen from :data:`BAN_DURATIONS` (validated): minutes, or None
    for until lifted."""
    return int(choice) if choice else None


class PeerActionForm(forms.Form):
    """A Kick or a Ban of one peer from a lobby's live view on the owners' lobby page
    (``lobbies.pages``), with the fields of the admin's (:class:`LiveActionForm`). A ban lasts
    one of :data:`BAN_DURATIONS`, nothing else: no ban of made-up length."""

    action = forms.ChoiceField(choices=[("kick", "kick"), ("ban", "ban")])
    # As the peer joined: an id is not trimmed (" a" and "a" are two peers).
    peer_id = forms.CharField(max_length=256, strip=False)
    minutes = forms.ChoiceField(required=False, choices=BAN_DURATIONS)
    reason = forms.CharField(required=False, max_length=500)


class LiveActionForm(forms.Form):
    """An operator's action on a live lobby, from its admin page (``lobbies.admin``)."""

    action = forms.ChoiceField(
        choices=[(a, a) for a in ("kick", "ban", "lock", "open", "close", "transfer")]
    )
    peer_id = forms.CharField(required=False, max_length=256, strip=False)
    minutes = forms.ChoiceField(required=False, choices=BAN_DURATIONS)
    reason = forms.CharField(required=False, max_length=500)
    owner = forms.CharField(required=False, max_length=150, label="New owner (username)")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        action = data.get("action")
        if action in ("kick", "ban") and not data.get("peer_id"):
            raise forms.ValidationError(f"{action}: which peer?")
        if action == "transfer" and not data.get("owner"):
            raise forms.ValidationError("transfer: to whom?")
        return data
