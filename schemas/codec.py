"""JSON encoding of messages, with one cached decoder per type."""

from typing import Any, TypeVar, cast

import msgspec

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def encode(message: msgspec.Struct) -> bytes:
    """Serialise one message to JSON bytes."""
    return _encoder.encode(message)


def decoder_for(type_: type[T] | Any) -> msgspec.json.Decoder[T]:
    """A (cached) decoder for a Struct type or a union of them."""
    dec = _decoders.get(type_)
    if dec is None:
        dec = msgspec.json.Decoder(type_)
        _decoders[type_] = dec
    return cast("msgspec.json.Decoder[T]", dec)


def decode(data: bytes, type_: type[T] | Any) -> T:
    """Decode and validate; raises ``msgspec.DecodeError`` / ``ValidationError``."""
    return cast("T", decoder_for(type_).decode(data))


def type_name(type_: Any) -> str:
    """A readable name for a type or union, for logs and dead letters."""
    return getattr(type_, "__name__", None) or str(type_)
