"""Tokens minted by `mint_token` are what the edge accepts, and their
claims are what it enforces: a `websockets` client connects with one,
receives what the server client publishes, publishes where `publish`
allows and nowhere else."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import pytest
from conftest import SECRET, User, unique

from herald_client import Herald, mint_token


def test_a_minted_token_connects_and_receives_a_publication(
    herald: Herald, connect_user: Callable[[str], User]
) -> None:
    name, channel = unique("u-"), unique("chat:room-")
    user = connect_user(mint_token(SECRET, name, channels=["chat:*"]))
    assert user.connected["ok"]["user"] == name, user.connected
    assert "ok" in user.command("subscribe", {"channel": channel})
    published = herald.publish(channel, {"text": "from the backend"})
    pub = user.publication(channel)
    assert (pub["data"], pub["offset"], pub["epoch"]) == ({"text": "from the backend"}, published.offset, published.epoch)
    # the personal channel needs no pattern
    herald.send(name, {"dm": 1})
    assert user.publication(f"#{name}")["data"] == {"dm": 1}


def test_the_claims_are_what_the_edge_enforces(herald: Herald, connect_user: Callable[[str], User]) -> None:
    room, name = unique("chat:room-"), unique("u-")
    user = connect_user(mint_token(SECRET, name, channels=[room], publish=[room]))
    assert "ok" in user.command("subscribe", {"channel": room})
    assert user.command("subscribe", {"channel": room + "-other"})["error"]["code"] == 103
    assert "ok" in user.command("publish", {"channel": room, "data": {"from": "browser"}})
    assert user.command("publish", {"channel": room + "-other", "data": 1})["error"]["code"] == 103
    assert [(p.data, p.from_) for p in herald.history(room).publications] == [({"from": "browser"}, name)]

    reader = connect_user(mint_token(SECRET, unique("u-"), channels=[room]))
    assert reader.command("publish", {"channel": room, "data": 1})["error"]["code"] == 103


def test_expired_and_forged_tokens_are_refused(connect_user: Callable[[str], User]) -> None:
    expired = mint_token(SECRET, "alice", channels=["chat:*"], ttl=60, now=time.time() - 3600)
    assert connect_user(expired).connected["error"]["code"] == 109
    forged = mint_token("another-secret-of-at-least-32-bytes!", "alice", channels=["chat:*"])
    assert connect_user(forged).connected["error"]["code"] == 101


def test_the_token_says_what_was_asked() -> None:
    token = mint_token(SECRET, "alice", channels=["chat:*"], publish=("chat:lobby",), ttl=90, now=1_000_000)
    header, claims, signature = token.split(".")

    def decode(part: str) -> object:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    assert decode(header) == {"alg": "HS256", "typ": "JWT"}
    assert decode(claims) == {"sub": "alice", "exp": 1_000_090, "channels": ["chat:*"], "publish": ["chat:lobby"]}
    assert "=" not in token and len(base64.urlsafe_b64decode(signature + "=")) == 32


def test_secrets_herald_would_refuse_are_refused_here() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        mint_token("too-short", "alice")
    with pytest.raises(ValueError):
        mint_token(SECRET, "")
