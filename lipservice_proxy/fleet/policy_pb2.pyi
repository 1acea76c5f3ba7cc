from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SeverityCounts(_message.Message):
    __slots__ = ("received", "kept")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    received: _containers.RepeatedScalarFieldContainer[int]
    kept: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, received: _Optional[_Iterable[int]] = ..., kept: _Optional[_Iterable[int]] = ...) -> None: ...

class PatternCount(_message.Message):
    __slots__ = ("service", "pattern_id", "template", "counts", "bytes", "bytes_kept")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PATTERN_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    BYTES_KEPT_FIELD_NUMBER: _ClassVar[int]
    service: str
    pattern_id: str
    template: str
    counts: SeverityCounts
    bytes: int
    bytes_kept: int
    def __init__(self, service: _Optional[str] = ..., pattern_id: _Optional[str] = ..., template: _Optional[str] = ..., counts: _Optional[_Union[SeverityCounts, _Mapping]] = ..., bytes: _Optional[int] = ..., bytes_kept: _Optional[int] = ...) -> None: ...

class ReportPatternsRequest(_message.Message):
    __slots__ = ("sampler_id", "sequence", "window_start_unix_nano", "window_end_unix_nano", "patterns", "other", "policy_version")
    SAMPLER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    OTHER_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    sampler_id: str
    sequence: int
    window_start_unix_nano: int
    window_end_unix_nano: int
    patterns: _containers.RepeatedCompositeFieldContainer[PatternCount]
    other: SeverityCounts
    policy_version: int
    def __init__(self, sampler_id: _Optional[str] = ..., sequence: _Optional[int] = ..., window_start_unix_nano: _Optional[int] = ..., window_end_unix_nano: _Optional[int] = ..., patterns: _Optional[_Iterable[_Union[PatternCount, _Mapping]]] = ..., other: _Optional[_Union[SeverityCounts, _Mapping]] = ..., policy_version: _Optional[int] = ...) -> None: ...

class ReportPatternsResponse(_message.Message):
    __slots__ = ("accepted_patterns",)
    ACCEPTED_PATTERNS_FIELD_NUMBER: _ClassVar[int]
    accepted_patterns: int
    def __init__(self, accepted_patterns: _Optional[int] = ...) -> None: ...

class WatchPolicyRequest(_message.Message):
    __slots__ = ("sampler_id", "known_version")
    SAMPLER_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    sampler_id: str
    known_version: int
    def __init__(self, sampler_id: _Optional[str] = ..., known_version: _Optional[int] = ...) -> None: ...

class Boost(_message.Message):
    __slots__ = ("pattern_id", "rate", "remaining_seconds", "reason")
    PATTERN_ID_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    REMAINING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    pattern_id: str
    rate: float
    remaining_seconds: float
    reason: str
    def __init__(self, pattern_id: _Optional[str] = ..., rate: _Optional[float] = ..., remaining_seconds: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class PolicySnapshot(_message.Message):
    __slots__ = ("version", "policy_json", "boosts", "revision")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    BOOSTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    version: int
    policy_json: bytes
    boosts: _containers.RepeatedCompositeFieldContainer[Boost]
    revision: int
    def __init__(self, version: _Optional[int] = ..., policy_json: _Optional[bytes] = ..., boosts: _Optional[_Iterable[_Union[Boost, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...
