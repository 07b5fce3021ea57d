"""Every method of the sync client against a real standalone, checked by
what a user of it would see: the history, a connected WebSocket client,
the device registry, the push worker's statuses."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from conftest import SECRET, User, eventually, unique
from websockets.exceptions import ConnectionClosed

from herald_client import Herald, HeraldError, mint_token



def apns_token() -> str:
    """64 hex characters, as APNs tokens are; a new one each time (a token
    registered again moves to its new user)."""
    return uuid.uuid4().hex * 2


def online_user(
    connect_user: Callable[[str], User], herald: Herald, channel: str, name: str | None = None
) -> tuple[str, User]:
    """A user (`name`, or a new one) connected and subscribed to `channel`,
    once presence knows."""
    user_id = name or unique("u-")
    user = connect_user(mint_token(SECRET, user_id, channels=[channel]))
    assert "ok" in user.connected, user.connected
    assert "ok" in user.command("subscribe", {"channel": channel})
    eventually(lambda: user_id in herald.presence(channel), f"{user_id} in {channel}")
    return user_id, user


def test_publications_come_back_from_history_after_any_position(herald: Herald) -> None:
    channel = unique("api:feed-")
    answers = [herald.publish(channel, {"n": n}) for n in (1, 2, 3)]
    assert [a.offset for a in answers] == [1, 2, 3]
    epoch = answers[0].epoch
    assert epoch and all(a.epoch == epoch for a in answers)
    assert all(a.notify is None for a in answers)

    everything = herald.history(channel)
    assert everything.recovered
    assert [(p.offset, p.data) for p in everything.publications] == [(1, {"n": 1}), (2, {"n": 2}), (3, {"n": 3})]
    assert (everything.offset, everything.epoch) == (3, epoch)
    assert all(p.from_ is None and p.ts > 0 for p in everything.publications)

    after_one = herald.history(channel, since=1, epoch=epoch)
    assert [p.offset for p in after_one.publications] == [2, 3] and after_one.recovered
    page = herald.history(channel, since=1, limit=1)
    assert [p.offset for p in page.publications] == [2]
    assert page.offset == 3, "the answer names the channel's latest position, not the page's"
    assert herald.history(channel, since=3).publications == []


def test_a_position_no_longer_kept_is_an_answer_with_where_the_channel_is(herald: Herald) -> None:
    # namespace `short` keeps two publications
    channel = unique("short:feed-")
    for n in range(1, 5):
        last = herald.publish(channel, n)
    gone = herald.history(channel, since=1, epoch=last.epoch)
    assert not gone.recovered
    assert gone.publications == []
    assert (gone.offset, gone.epoch) == (4, last.epoch)
    # another epoch (the server restarted on memory history) likewise
    other = herald.history(channel, since=1, epoch="not-this-epoch")
    assert (other.recovered, other.offset) == (False, 4)
    # what is still kept is recovered
    kept = herald.history(channel, since=2, epoch=last.epoch)
    assert kept.recovered and [p.data for p in kept.publications] == [3, 4]


def test_an_idempotency_key_stores_a_publication_once(herald: Herald) -> None:
    channel = unique("api:orders-")
    first = herald.publish(channel, {"order": 17}, idempotency_key="order-17")
    again = herald.publish(channel, {"order": 17}, idempotency_key="order-17")
    assert again == first
    assert len(herald.history(channel).publications) == 1
    other = herald.publish(channel, {"order": 18}, idempotency_key="order-18")
    assert other.offset == first.offset + 1


def test_broadcast_stores_in_every_channel(herald: Herald) -> None:
    channels = [unique("api:b-") for _ in range(3)]
    herald.publish(channels[1], "earlier")
    results = herald.broadcast(channels, {"n": 1}, idempotency_key=unique("k-"))
    assert [(r.channel, r.offset) for r in results] == [(channels[0], 1), (channels[1], 2), (channels[2], 1)]
    for r in results:
        history = herald.history(r.channel)
        assert history.publications[-1].data == {"n": 1} and history.epoch == r.epoch


def test_a_publication_reaches_a_subscribed_websocket_client(
    herald: Herald, connect_user: Callable[[str], User]
) -> None:
    channel = unique("chat:room-")
    _, user = online_user(connect_user, herald, channel)
    published = herald.publish(channel, {"text": "hello"})
    pub = user.publication(channel)
    assert (pub["data"], pub["offset"], pub["epoch"]) == ({"text": "hello"}, published.offset, published.epoch)


def test_send_reaches_a_connected_user_and_pushes_to_an_offline_one(
    herald: Herald, connect_user: Callable[[str], User]
) -> None:
    name, user = online_user(connect_user, herald, unique("chat:room-"))
    sent = herald.send(name, {"dm": "hi"}, notification={"title": "Hi", "body": "there"})
    assert sent.result == "online"
    assert user.publication(f"#{name}")["data"] == {"dm": "hi"}

    offline = unique("u-")
    assert herald.send(offline, {"dm": 1}, notification={"title": "Hi", "body": "x"}).result == "no_devices"
    herald.register_device(offline, "apns", apns_token())
    assert herald.send(offline, {"dm": 2}, notification={"title": "Hi", "body": "y"}).result == "pushed"
    # both are kept in the user's personal channel for when they connect
    assert [p.data for p in herald.history(f"#{offline}").publications] == [{"dm": 1}, {"dm": 2}]


def test_publish_says_who_of_notify_offline_got_what(
    herald: Herald, connect_user: Callable[[str], User]
) -> None:
    channel = unique("chat:room-")
    online, _ = online_user(connect_user, herald, channel)
    with_device, without = unique("u-"), unique("u-")
    herald.register_device(with_device, "fcm", unique("fcm-token-"))
    answer = herald.publish(
        channel,
        {"text": "ping"},
        notify_offline=[online, with_device, without],
        notification={"title": "New message", "body": "ping", "collapse_key": channel},
    )
    assert answer.notify is not None
    assert (answer.notify.online, answer.notify.pushed, answer.notify.no_devices, answer.notify.unknown) == (
        [online],
        [with_device],
        [without],
        [],
    )


def test_presence_follows_who_is_subscribed(herald: Herald, connect_user: Callable[[str], User]) -> None:
    channel = unique("chat:room-")
    assert herald.presence(channel) == []
    suffix = unique("")
    # "u-b…" joins first, with two connections: the answer is sorted and
    # names each user once
    later, first = online_user(connect_user, herald, channel, f"u-b-{suffix}")
    _, second = online_user(connect_user, herald, channel, later)
    earlier, other = online_user(connect_user, herald, channel, f"u-a-{suffix}")
    assert herald.presence(channel) == [earlier, later]
    # leaving: one of two connections closed keeps the user in
    first.ws.close()
    other.ws.close()
    eventually(lambda: herald.presence(channel) == [later], f"{earlier} gone from {channel}")
    second.ws.close()
    eventually(lambda: herald.presence(channel) == [], f"{later} gone from {channel}")


def test_disconnect_closes_every_connection_of_the_user(
    herald: Herald, connect_user: Callable[[str], User]
) -> None:
    channel = unique("chat:room-")
    name, first = online_user(connect_user, herald, channel)
    second = connect_user(mint_token(SECRET, name, channels=[channel]))
    assert "ok" in second.connected
    herald.disconnect(name)
    for user in (first, second):
        with pytest.raises(ConnectionClosed) as closed:
            user.frame(lambda f: False)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4503
    # nobody left: still answered
    herald.disconnect(name)


def test_devices_are_registered_listed_and_unregistered(herald: Herald) -> None:
    user = unique("u-")
    token = apns_token()
    assert herald.devices(user) == []
    phone = herald.register_device(
        user, "apns", token, app="com.example.chat", environment="sandbox", locale="en-US"
    )
    tablet = herald.register_device(user, "fcm", unique("fcm-token-"))
    devices = {d.id: d for d in herald.devices(user)}
    assert set(devices) == {phone, tablet}
    apns = devices[phone]
    assert (apns.user, apns.platform, apns.token, apns.app, apns.environment, apns.locale) == (
        user,
        "apns",
        token,
        "com.example.chat",
        "sandbox",
        "en-US",
    )
    assert apns.created_ms > 0 and apns.last_seen_ms >= apns.created_ms
    assert (devices[tablet].app, devices[tablet].environment, devices[tablet].locale) == ("default", "production", None)
    # the same token registered again keeps its id
    assert herald.register_device(user, "apns", token, app="com.example.chat") == phone

    assert herald.unregister_device(phone) is True
    assert herald.unregister_device(phone) is False
    assert [d.id for d in herald.devices(user)] == [tablet]
    assert herald.unregister_device(tablet)
    assert herald.devices(user) == []


def test_a_notification_has_a_status_per_device(herald: Herald) -> None:
    user = unique("u-")
    device = herald.register_device(user, "fcm", unique("fcm-token-"))
    sent = herald.notify(user, notification={"title": "Hi", "body": "there"}, data={"thread": 7})
    assert sent
    # standalone here has no push credentials: the worker settles it as failed
    statuses = eventually(
        lambda: [s for s in herald.notification_status(sent) if s.state not in ("pending", "retrying")],
        "the push settled",
    )
    assert [(s.device_id, s.platform, s.state) for s in statuses] == [(device, "fcm", "failed")]
    assert "credentials" in statuses[0].reason and statuses[0].attempts >= 1 and statuses[0].updated_ms > 0

    to_device = herald.notify(device_id=device)
    eventually(lambda: herald.notification_status(to_device), "a status for the silent push to the device")
    with pytest.raises(HeraldError) as unknown:
        herald.notify(device_id="no-such-device")
    assert (unknown.value.status, unknown.value.code) == (404, 104)
    with pytest.raises(ValueError):
        herald.notify()
