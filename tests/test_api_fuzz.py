"""The owners' JSON API fuzzed from its own OpenAPI schema (schemathesis): every operation, called
anonymously and with a signed-in user's Bearer API token, with valid and invalid input, answers
no 5xx and only what the schema documents (status codes, content types, bodies).

The schema is read from the app in-process (its WSGI application, no server), and the calls go
to the real app and database. Path ids are drawn partly from real rows (the token's owner has a
public, an unlisted and a private lobby, a grant and a spare token; another user and a group
to grant roles to), so that cases reach past the 404s into the handlers; what a case deletes or
revokes is put back before the next. (A kick that succeeds needs a peer's live socket: that is
tests/test_api.py's.)

Each operation gets ``RELAY_FUZZ_EXAMPLES`` examples per caller (default 25, deterministic, for
CI); to search longer locally::

    RELAY_FUZZ_EXAMPLES=1000 .venv/bin/python -m pytest tests/test_api_fuzz.py -q
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import Group, User
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from lobbies.models import ApiToken, Lobby, LobbyGrant

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]

EXAMPLES = int(os.environ.get("RELAY_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# Real rows' ids, fixed so that the strategies below can name them before the rows exist.
LOBBIES = {"public": "fuzzPublic01", "unlisted": "fuzzUnlisted", "private": "fuzzPrivate1"}
GRANT_ID = 7001
SPARE_TOKEN_ID = 7002

schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    """Half the cases name real rows instead of the generated ids (still often random text)."""
    real = {
        "lobby_id": st.sampled_from(sorted(LOBBIES.values())),
        "grant_id": st.just(GRANT_ID),
        "token_id": st.just(SPARE_TOKEN_ID),
    }
    named = {name: real[name] for name in path_parameters or {} if name in real}
    if not named:
        return st.just(path_parameters)
    return st.one_of(
        st.just(path_parameters), st.fixed_dictionaries({**path_parameters, **named})
    ).map(lambda chosen: {**path_parameters, **chosen})


@schema.hook
def flatmap_body(context: Any, body: Any) -> Any:
    """Some grant bodies name a real user or group."""
    if context.operation is None or not context.operation.path.endswith("/grants"):
        return st.just(body)
    who = st.sampled_from([{"username": "other"}, {"group": "players"}])
    real = st.tuples(who, st.sampled_from(["member", "host", "moderator"])).map(
        lambda chosen: {**chosen[0], "role": chosen[1]}
    )
    return st.one_of(st.just(body), real)


@dataclass
class World:
    """The rows the fuzzer's cases act on, and the token that signs them in."""

    owner: User
    secret: str

    def restore(self) -> None:
        """Put back what an earlier case deleted or revoked (the state it changed may stay)."""
        for visibility, public_id in LOBBIES.items():
            Lobby.objects.get_or_create(
                public_id=public_id,
                defaults={
                    "document_id": f"fuzz-{visibility}",
                    "owner": self.owner,
                    "visibility": visibility,
                },
            )
        LobbyGrant.objects.get_or_create(
            pk=GRANT_ID,
            defaults={"lobby": Lobby.objects.get(public_id=LOBBIES["private"]), "user": self.owner},
        )
        ApiToken.objects.filter(user=self.owner).update(revoked_at=None)

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"} if who == "token" else {}


@pytest.fixture
def world() -> World:
    owner = User.objects.create_user("fuzz-owner", password="a long password 1")
    User.objects.create_user("other", password="a long password 2")
    Group.objects.create(name="players")
    _, secret = ApiToken.issue(owner, "fuzzing")
    ApiToken.objects.create(
        pk=SPARE_TOKEN_ID, user=owner, name="spare", prefix="rly_spare", digest="-"
    )
    found = World(owner, secret)
    found.restore()
    return found


@pytest.mark.parametrize("who", ["anonymous", "token"])
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case, who: str, world: World) -> None:
    world.restore()
    case.call_and_validate(headers=world.headers(who), checks=CHECKS)
