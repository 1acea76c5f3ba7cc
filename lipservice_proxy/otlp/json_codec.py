"""OTLP/JSON <-> protobuf messages, following the OTLP specification's JSON mapping.

The mapping is protobuf's canonical JSON with OTLP's differences: trace and span ids are hex strings
(not base64) and enums are written as integers. On input both lowerCamelCase and snake_case keys are
accepted, unknown keys and nulls are ignored, 64-bit integers may be numbers or decimal strings, enums
integers or names; on output 64-bit integers are decimal strings.

Each message descriptor gets a codec once: a table from JSON key to (field name, value decoder) and
from field descriptor to (JSON key, value encoder). Decoding turns the orjson tree into the keyword
arguments of the message constructor (protobuf builds nested messages from dicts in C); encoding walks
`ListFields()`, so only set fields cost anything. protobuf's `json_format` is far slower and gets ids
wrong for OTLP, so it is not used.

Any problem with the input raises `BadRequest` naming the field path, e.g.
`invalid ExportLogsServiceRequest at resourceLogs[0].scopeLogs[0].logRecords[3].traceId: ...`.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from ..errors import BadRequest

M = TypeVar("M", bound=Message)

MAX_NESTING = 100
"""Deepest message nesting accepted (a request is level 1): the depth protobuf's binary parser accepts,
so JSON and protobuf clients meet the same limit and every decoded message can be re-parsed upstream."""

_HEX_ID_BYTES = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}
"""OTLP's id fields, wherever they appear (LogRecord, Span, Span.Link, Exemplar): hex in JSON."""

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
    }
)
_INTEGER_TEXT = re.compile(r"-?[0-9]+")
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")

Decoder = Callable[[Any, int], Any]
"""(JSON value, nesting depth) -> constructor argument; raises _Invalid."""
Encoder = Callable[[Any], Any]
"""protobuf field value -> JSON-ready value."""


class _Invalid(Exception):
    """A decoding problem; `path` collects the JSON keys from the inside out while it propagates."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def where(self) -> str:
        return "".join(part if part.startswith("[") else "." + part for part in reversed(self.path))[1:]


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    return "an array" if isinstance(value, list) else "an object"


@dataclass(slots=True)
class _Codec:
    """The precomputed field tables of one message type."""

    descriptor: Descriptor
    decoders: dict[str, tuple[str, Decoder]] = field(default_factory=dict)
    encoders: dict[FieldDescriptor, tuple[str, Encoder]] = field(default_factory=dict)
    oneof_of: dict[str, str] = field(default_factory=dict)

    def decode(self, value: Any, depth: int) -> dict[str, Any]:
        if type(value) is not dict:
            raise _Invalid(f"expected an object, got {_describe(value)}")
        if depth > MAX_NESTING:
            raise _Invalid(f"nested deeper than {MAX_NESTING} messages")
        depth += 1
        arguments: dict[str, Any] = {}
        decoders = self.decoders
        for key, item in value.items():
            spec = decoders.get(key)
            if spec is None or item is None:
                continue  # unknown keys are ignored and null means default, as protobuf's JSON
            name, decode = spec
            try:
                arguments[name] = decode(item, depth)
            except _Invalid as exc:
                exc.path.append(key)
                raise
        if len(arguments) > 1 and self.oneof_of:
            self._check_oneofs(arguments)
        return arguments

    def _check_oneofs(self, arguments: dict[str, Any]) -> None:
        seen: dict[str, str] = {}
        for name in arguments:
            group = self.oneof_of.get(name)
            if group is None:
                continue
            if group in seen:
                raise _Invalid(f"{seen[group]} and {name} are both set but only one of {group} may be")
            seen[group] = name

    def encode(self, message: Message) -> dict[str, Any]:
        encoders = self.encoders
        result: dict[str, Any] = {}
        for descriptor, value in message.ListFields():
            key, encode = encoders[descriptor]
            result[key] = encode(value)
        return result


_CODECS: dict[str, _Codec] = {}
_BUILDING = threading.Lock()


# _UPB: the protobuf stubs type Message.DESCRIPTOR as descriptor.Descriptor or its upb twin; at
# runtime they are one class (the upb backend's), so _codec takes either.
def _codec(descriptor: Descriptor) -> _Codec:
    """The codec of a message type, built on first use and shared by every thread afterwards."""
    codec = _CODECS.get(descriptor.full_name)
    if codec is None:
        with _BUILDING:
            built: dict[str, _Codec] = {}
            codec = _build(descriptor, built)
            _CODECS.update(built)  # published only when complete: lookups above take no lock
    return codec


def _build(descriptor: Descriptor, built: dict[str, _Codec]) -> _Codec:
    codec = _CODECS.get(descriptor.full_name) or built.get(descriptor.full_name)
    if codec is not None:
        return codec
    codec = built[descriptor.full_name] = _Codec(descriptor)  # before its fields: message types recurse
    for fd in descriptor.fields:
        decode, encode = _value_codec(fd, built)
        if _is_repeated(fd):
            decode, encode = _repeated_decoder(decode), _repeated_encoder(encode)
        codec.decoders[fd.json_name] = codec.decoders[fd.name] = (fd.name, decode)
        codec.encoders[fd] = (fd.json_name, encode)
        if fd.containing_oneof is not None:
            codec.oneof_of[fd.name] = fd.containing_oneof.name
    return codec


def _is_repeated(fd: FieldDescriptor) -> bool:
    # protobuf 7 removed `label`; `is_repeated` only exists from 6.31 on, and we support both.
    is_repeated = getattr(fd, "is_repeated", None)
    if is_repeated is None:
        return bool(fd.label == FieldDescriptor.LABEL_REPEATED)  # type: ignore[attr-defined]  # protobuf < 6.31
    return bool(is_repeated)


def _value_codec(fd: FieldDescriptor, built: dict[str, _Codec]) -> tuple[Decoder, Encoder]:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        message_type = fd.message_type
        assert message_type is not None  # protobuf sets it on every message-typed field
        if message_type.GetOptions().map_entry:
            raise NotImplementedError(f"{fd.full_name}: map fields do not occur in OTLP")
        codec = _build(message_type, built)
        return codec.decode, codec.encode
    if fd.type in _INT_RANGES:
        return _integer_decoder(*_INT_RANGES[fd.type]), (str if fd.type in _INT64_TYPES else _identity)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        if fd.name in _HEX_ID_BYTES:
            return _hex_id_decoder(_HEX_ID_BYTES[fd.name]), bytes.hex
        return _decode_base64, _encode_base64
    if fd.type == FieldDescriptor.TYPE_ENUM:
        enum_type = fd.enum_type
        assert enum_type is not None  # protobuf sets it on every enum-typed field
        return _enum_decoder(enum_type), _identity
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _decode_float, _encode_float
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return _decode_bool, _identity
    if fd.type == FieldDescriptor.TYPE_STRING:
        return _decode_string, _identity
    raise NotImplementedError(f"{fd.full_name}: field type {fd.type} does not occur in OTLP")


# ---- value decoders and encoders ----


def _identity(value: Any) -> Any:
    return value


def _repeated_decoder(decode: Decoder) -> Decoder:
    def decode_list(value: Any, depth: int) -> list[Any]:
        if type(value) is not list:
            raise _Invalid(f"expected an array, got {_describe(value)}")
        decoded: list[Any] = []
        append = decoded.append
        index = 0
        try:
            for index, item in enumerate(value):  # noqa: B007 - read by the handler below
                append(decode(item, depth))
        except _Invalid as exc:
            exc.path.append(f"[{index}]")
            raise
        return decoded

    return decode_list


def _repeated_encoder(encode: Encoder) -> Encoder:
    return lambda values: [encode(value) for value in values]


def _integer_decoder(low: int, high: int) -> Decoder:
    def decode_integer(value: Any, _depth: int) -> int:
        kind = type(value)
        number: int
        if kind is int:
            number = value
        elif (kind is str and _INTEGER_TEXT.fullmatch(value)) or (kind is float and value.is_integer()):
            number = int(value)
        else:
            raise _Invalid(f"expected an integer, got {_describe(value)}")
        if not low <= number <= high:
            raise _Invalid(f"{number} is out of range [{low}, {high}]")
        return number

    return decode_integer


def _decode_float(value: Any, _depth: int) -> float:
    kind = type(value)
    if kind is float or kind is int:
        return float(value)
    if kind is str:
        special = _SPECIAL_FLOATS.get(value)
        if special is not None:
            return special
        try:
            return float(value)
        except ValueError:
            pass
    raise _Invalid(f"expected a number, got {_describe(value)}")


def _encode_float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _decode_bool(value: Any, _depth: int) -> bool:
    if type(value) is not bool:
        raise _Invalid(f"expected true or false, got {_describe(value)}")
    return value


def _decode_string(value: Any, _depth: int) -> str:
    if type(value) is not str:
        raise _Invalid(f"expected a string, got {_describe(value)}")
    return value


def _enum_decoder(enum: EnumDescriptor) -> Decoder:
    numbers = {name: value.number for name, value in enum.values_by_name.items()}

    def decode_enum(value: Any, _depth: int) -> int:
        if type(value) is int and -(2**31) <= value < 2**31:
            return value
        if type(value) is str and value in numbers:
            return numbers[value]
        raise _Invalid(f"expected a {enum.name} number or name, got {_describe(value)}")

    return decode_enum


def _hex_id_decoder(size: int) -> Decoder:
    def decode_hex_id(value: Any, _depth: int) -> bytes:
        if type(value) is not str:
            raise _Invalid(f"expected a hex string, got {_describe(value)}")
        if not value:
            return b""
        if len(value) != 2 * size:
            raise _Invalid(f"expected {2 * size} hex digits ({size} bytes), got {len(value)} characters")
        try:
            decoded = bytes.fromhex(value)
        except ValueError:
            decoded = b""
        if len(decoded) != size:
            raise _Invalid(f"{value[:40]!r} is not a hex string")
        return decoded

    return decode_hex_id


def _decode_base64(value: Any, _depth: int) -> bytes:
    if type(value) is not str:
        raise _Invalid(f"expected a base64 string, got {_describe(value)}")
    # protobuf's JSON accepts the standard and the URL-safe alphabet, padded or not.
    text = value.translate(_URLSAFE_TO_STANDARD)
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _Invalid(f"{value[:40]!r} is not base64") from None


def _encode_base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


# ---- public API ----


def json_to_message(data: bytes | str, message_type: type[M]) -> M:
    """Parse OTLP/JSON into `message_type`. An empty body is an empty message. Raises BadRequest."""
    name = message_type.DESCRIPTOR.name
    if not data or data.isspace():
        return message_type()
    try:
        tree = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON in {name}: {exc}") from None
    try:
        arguments = _codec(message_type.DESCRIPTOR).decode(tree, 1)  # type: ignore[arg-type]  # see _UPB
    except _Invalid as exc:
        where = f" at {exc.where()}" if exc.path else ""
        raise BadRequest(f"invalid {name}{where}: {exc.message}") from None
    try:
        return message_type(**arguments)
    except (TypeError, ValueError) as exc:  # e.g. a string protobuf refuses (lone surrogates)
        raise BadRequest(f"invalid {name}: {exc}") from None


def message_to_json(message: Message) -> bytes:
    """Serialize `message` as OTLP/JSON on one line (UTF-8)."""
    return orjson.dumps(_codec(message.DESCRIPTOR).encode(message))  # type: ignore[arg-type]  # see _UPB
