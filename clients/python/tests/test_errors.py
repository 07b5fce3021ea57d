"""The refusals a user of the client meets, from a real server: each is one
`HeraldError` with Herald's code and the HTTP status, and nothing is
stored."""

from __future__ import annotations

import pytest
from conftest import Server, unique

from herald_client import Herald, HeraldError


def refused(call: object) -> HeraldError:
    assert callable(call)
    with pytest.raises(HeraldError) as e:
        call()
    return e.value


def test_a_wrong_api_key_is_401_code_101_on_every_api(server: Server) -> None:
    with Herald(server.http, "wrong-key-1") as wrong:
        for call in (
            lambda: wrong.publish("api:x", 1),
            lambda: wrong.history("api:x"),
            lambda: wrong.devices("alice"),  # notify's HTTP API
            lambda: wrong.presence("api:x"),
        ):
            e = refused(call)
            assert (e.status, e.code) == (401, 101), e
            assert "API key" in e.message and e.retry_after is None


def test_bad_requests_answer_their_code_and_store_nothing(herald: Herald) -> None:
    channel = unique("api:guarded-")
    before = herald.publish(channel, "first").offset
    cases = {
        "unknown namespace (strict_namespaces)": (lambda: herald.publish(unique("nope:x-"), 1), 404, 104),
        "data over max_message_bytes": (lambda: herald.publish(channel, "x" * 5000), 413, 106),
        "invalid channel": (lambda: herald.publish("api guarded", 1), 400, 100),
        "one unknown namespace in a broadcast": (lambda: herald.broadcast([channel, "nope:x"], 1), 404, 104),
        "an invalid user": (lambda: herald.send("bad user", 1), 400, 100),
        "an empty idempotency key": (lambda: herald.publish(channel, 1, idempotency_key=""), 400, 100),
        "history of an invalid channel": (lambda: herald.history("api guarded"), 400, 100),
        "presence of an invalid channel": (lambda: herald.presence("api guarded"), 400, 100),
        "presence in an unknown namespace": (lambda: herald.presence(unique("nope:x-")), 404, 104),
        "an invalid device token": (lambda: herald.register_device(unique("u-"), "apns", "not-hex"), 400, 100),
        "an oversized notification": (
            lambda: herald.notify(unique("u-"), notification={"title": "t" * 2000, "body": ""}),
            413,
            106,
        ),
    }
    for name, (call, status, code) in cases.items():
        e = refused(call)
        assert (e.status, e.code) == (status, code), f"{name}: {e}"
        assert e.message and e.message in str(e), name
    assert herald.history(channel).offset == before, "a refusal stored something"
