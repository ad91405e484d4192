"""discovery: who is introduced to whom."""

from lobbies.engine.discovery import introductions


def test_joiner_meets_every_other_member_with_the_ids_they_share():
    members = {"a": ["p1", "p2", "me"], "b": ["p2"], "c": []}
    assert introductions("me", ["a", "b", "c"], members) == {"p1": ["a"], "p2": ["a", "b"]}


def test_a_peer_is_never_introduced_to_itself():
    assert introductions("me", ["a"], {"a": ["me"]}) == {}


def test_ids_without_members_introduce_nobody():
    assert introductions("me", ["a"], {}) == {}
