"""Channel presence: `herald.presence.v1.Presence/ChannelPresence` over
gRPC, the only server API that answers it. grpcio carries the bytes; the two
small messages are encoded here, so no generated code or protobuf package is
needed. grpcio is optional (`pip install herald-client[grpc]`)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from ._types import HeraldError, Member

METHOD = "/herald.presence.v1.Presence/ChannelPresence"

# gRPC status → (Herald code, HTTP status), inverting the server's one
# mapping (`herald_proto::server::status_of`).
_CODES: dict[str, tuple[int, int]] = {
    "INVALID_ARGUMENT": (100, 400),
    "UNAUTHENTICATED": (101, 401),
    "PERMISSION_DENIED": (103, 403),
    "NOT_FOUND": (104, 404),
    "RESOURCE_EXHAUSTED": (106, 413),
    "OUT_OF_RANGE": (110, 410),
    "DEADLINE_EXCEEDED": (111, 504),
    "UNAVAILABLE": (500, 503),
}


def grpc_module() -> Any:
    try:
        return importlib.import_module("grpc")
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "presence is asked over gRPC: pip install 'herald-client[grpc]' (grpcio)"
        ) from e


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_request(channel: str) -> bytes:
    """`ChannelPresenceRequest { string channel = 1; }`."""
    raw = channel.encode()
    return b"\x0a" + _varint(len(raw)) + raw


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated protobuf varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field; unknown wire types are skipped
    where they can be, so fields added to the message later do no harm."""
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
            yield number, value
        elif wire == 2:
            size, i = _read_varint(buf, i)
            yield number, buf[i : i + size]
            i += size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")


def decode_members(buf: bytes) -> list[Member]:
    """`ChannelPresenceResponse { repeated ChannelMember members = 1; }`,
    `ChannelMember { string user = 1; uint32 connections = 2; }`."""
    members = []
    for number, value in _fields(buf):
        if number != 1 or not isinstance(value, bytes):
            continue
        user, connections = "", 0
        for inner, v in _fields(value):
            if inner == 1 and isinstance(v, bytes):
                user = v.decode()
            elif inner == 2 and isinstance(v, int):
                connections = v
        members.append(Member(user=user, connections=connections))
    return members


def error_of(e: Any) -> HeraldError:
    """A `grpc.RpcError` as the one error, with the code and status the
    same error has over HTTP."""
    name = e.code().name
    code, status = _CODES.get(name, (None, 500))
    return HeraldError(code, status, f"{e.details()} (gRPC {name})")


def metadata(api_key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {api_key}")]
