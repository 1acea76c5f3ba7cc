"""Per-record limits (`receivers.limits`): which records of a request are over them, found cheaply.

Reading a record's attribute count from protobuf costs a Python wrapper per record (measured at
~0.6 us, a quarter of the sampler's per-record path), so records are not all asked. A record with
more than `max_attributes_per_record` attributes takes at least two bytes per attribute on the wire,
and one over a size limit is at least that large, so only records of at least `threshold` bytes can
be over any limit. For protobuf requests each record's size comes from one C-level parse of the
request as a skeleton (resources, scopes, records as bytes; ~0.1 us per record), and only the rare
large records are looked at. JSON requests have no wire sizes to read: each record is measured
(a C-level walk), which costs little next to decoding JSON. A request smaller than `threshold` (its
JSON is never smaller than its protobuf) holds no such record and is not looked at at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from ..config import RecordLimits

MIN_ATTRIBUTE_BYTES = 2  # an empty KeyValue: its tag and a zero length


def _skeleton_type() -> type[Message]:
    """ExportLogsServiceRequest with each log record left as its bytes (the same field numbers)."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="lipservice/record_sizes.proto", package="lipservice.sizes", syntax="proto3"
    )
    for name, number, kind, type_name in (
        ("Request", 1, field.TYPE_MESSAGE, ".lipservice.sizes.ResourceLogs"),  # resource_logs
        ("ResourceLogs", 2, field.TYPE_MESSAGE, ".lipservice.sizes.ScopeLogs"),  # scope_logs
        ("ScopeLogs", 2, field.TYPE_BYTES, ""),  # log_records
    ):
        entry = proto.message_type.add(name=name).field.add(
            name="items", number=number, label=field.LABEL_REPEATED, type=kind
        )
        if type_name:
            entry.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("lipservice.sizes.Request"))


_SKELETON = _skeleton_type()


class RecordLimiter:
    def __init__(self, limits: RecordLimits) -> None:
        self.limits = limits
        self.message = (
            f"records over receivers.limits are rejected: at most {limits.max_attributes_per_record} "
            f"attributes, attribute values of at most {limits.max_attribute_value_bytes} bytes and "
            f"bodies of at most {limits.max_body_bytes} bytes"
        )
        # the smallest a record over any limit can be on the wire
        self.threshold = min(
            MIN_ATTRIBUTE_BYTES * (limits.max_attributes_per_record + 1),
            limits.max_attribute_value_bytes,
            limits.max_body_bytes,
        )

    def might_hold_any(self, raw: bytes) -> bool:
        """Whether a request of `raw` can hold a record over a limit (no raw at hand: it can)."""
        return not raw or len(raw) >= self.threshold

    def record_sizes(self, raw: bytes) -> list[list[Sequence[int]]]:
        """Each record's size on the wire, by resource and scope, for the protobuf request `raw`."""
        skeleton = _SKELETON.FromString(raw)
        return [
            [list(map(len, scope.items)) for scope in resource.items]
            for resource in skeleton.items  # type: ignore[attr-defined]  # a class built at run time
        ]

    def over(self, records: Sequence[LogRecord], sizes: Sequence[int] | None) -> frozenset[int]:
        """The indices of the records over a limit. `sizes`: their wire sizes, or None for unknown."""
        threshold = self.threshold
        if sizes is None:
            sizes = [record.ByteSize() for record in records]
        if not sizes or max(sizes) < threshold:
            return frozenset()
        candidates = [index for index, size in enumerate(sizes) if size >= threshold]
        return frozenset(index for index in candidates if self.exceeds(records[index]))

    def exceeds(self, record: LogRecord) -> bool:
        limits = self.limits
        if len(record.attributes) > limits.max_attributes_per_record:
            return True
        if record.body.ByteSize() > limits.max_body_bytes:
            return True
        limit = limits.max_attribute_value_bytes
        return any(attribute.value.ByteSize() > limit for attribute in record.attributes)
