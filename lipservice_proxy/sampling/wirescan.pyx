# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The compiled scan: scan.py's `scan_scope` for every scope of a protobuf ExportLogsServiceRequest,
read straight from its wire bytes.

`scan_request(raw)` walks the request's protobuf encoding (resource_logs -> scope_logs ->
log_records) and returns, per resource and per scope in wire order, the same (shapes, others,
invalid) as the reference scan of the parsed message: no message object is made, only a shape key
per record, a row per record and a str per shape. It is only called on bytes the receiver has
already parsed, and it gives up (returns None, the caller then scans the parsed message) on
anything that it cannot read exactly as the protobuf runtime did: a malformed field, a group, a
known field with another wire type than its declared one, a body that is not UTF-8. Where a field
occurs twice the last one wins, as in protobuf (for the body, a message, the last value set).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.ref cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from ..patterns.engine import KEY_CHARS
from .scan import N_LEVELS, UNKNOWN_LEVEL
from .severity import LEVEL_OF_NUMBER

cdef enum:
    MAX_FIELD = 64  # field numbers tabled; higher ones are unknown to every message read here
    VARINT = 0
    FIXED64 = 1
    LEN = 2
    FIXED32 = 5

# A message's declared wire type per field number, -1 for a number it does not declare.
ctypedef signed char WireTypes[MAX_FIELD]

cdef WireTypes _REQUEST, _RESOURCE_LOGS, _SCOPE_LOGS, _LOG_RECORD, _ANY_VALUE
cdef int _LEVELS[25]
cdef Py_ssize_t _KEY_CHARS = KEY_CHARS
cdef int _N_LEVELS = N_LEVELS
cdef int _UNKNOWN_LEVEL = UNKNOWN_LEVEL
cdef bytes _NO_ID = b""

# protobuf field types (FieldDescriptor.TYPE_*) by wire type
_FIXED64_TYPES = frozenset((1, 6, 16))
_FIXED32_TYPES = frozenset((2, 7, 15))
_LEN_TYPES = frozenset((9, 11, 12))


cdef void _table(WireTypes table, descriptor) except *:
    cdef int number
    for number in range(MAX_FIELD):
        table[number] = -1
    for field in descriptor.fields:
        if field.number >= MAX_FIELD:
            continue
        if field.type in _LEN_TYPES:
            table[field.number] = LEN
        elif field.type in _FIXED64_TYPES:
            table[field.number] = FIXED64
        elif field.type in _FIXED32_TYPES:
            table[field.number] = FIXED32
        elif field.type == 10:  # a group: never read, so never scanned
            table[field.number] = 3
        else:
            table[field.number] = VARINT


_table(_REQUEST, ExportLogsServiceRequest.DESCRIPTOR)
_table(_RESOURCE_LOGS, ResourceLogs.DESCRIPTOR)
_table(_SCOPE_LOGS, ScopeLogs.DESCRIPTOR)
_table(_LOG_RECORD, LogRecord.DESCRIPTOR)
_table(_ANY_VALUE, AnyValue.DESCRIPTOR)
for _number in range(25):
    _LEVELS[_number] = LEVEL_OF_NUMBER[_number] if _number else _UNKNOWN_LEVEL

# a key is at most KEY_CHARS characters of UTF-8, 4 bytes each at most
cdef enum:
    MAX_KEY_BYTES = 1024
if KEY_CHARS * 4 > MAX_KEY_BYTES:
    raise ImportError("wirescan: KEY_CHARS grew past MAX_KEY_BYTES / 4")


cdef struct Reader:
    const unsigned char* buf
    Py_ssize_t pos
    Py_ssize_t end


cdef inline bint _varint(Reader* r, uint64_t* value) noexcept nogil:
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef unsigned char byte
    while r.pos < r.end and shift < 64:
        byte = r.buf[r.pos]
        r.pos += 1
        result |= <uint64_t>(byte & 0x7F) << shift
        if byte < 0x80:
            value[0] = result
            return True
        shift += 7
    return False


cdef inline bint _field(Reader* r, WireTypes table, uint32_t* number, int* wire_type) noexcept nogil:
    """Read a tag; False on a malformed one or a wire type other than the field's declared one."""
    cdef uint64_t tag
    if not _varint(r, &tag) or tag >> 32:
        return False
    number[0] = <uint32_t>(tag >> 3)
    wire_type[0] = tag & 7
    if number[0] == 0 or wire_type[0] in (3, 4) or wire_type[0] > 5:
        return False
    return number[0] >= MAX_FIELD or table[number[0]] < 0 or table[number[0]] == wire_type[0]


cdef inline bint _length(Reader* r, Py_ssize_t* start, Py_ssize_t* size) noexcept nogil:
    cdef uint64_t value
    if not _varint(r, &value) or value > <uint64_t>(r.end - r.pos):
        return False
    start[0] = r.pos
    size[0] = <Py_ssize_t>value
    r.pos += size[0]
    return True


cdef inline bint _skip(Reader* r, int wire_type) noexcept nogil:
    cdef uint64_t value
    cdef Py_ssize_t start, size
    if wire_type == VARINT:
        return _varint(r, &value)
    if wire_type == LEN:
        return _length(r, &start, &size)
    size = 8 if wire_type == FIXED64 else 4
    if r.end - r.pos < size:
        return False
    r.pos += size
    return True


def scan_request(const unsigned char[::1] raw):
    """[[scope scan, ...] per resource] for a protobuf ExportLogsServiceRequest, or None (see above)."""
    cdef Reader r
    cdef uint32_t number
    cdef int wire_type
    cdef Py_ssize_t start, size
    cdef list resources = []
    if raw.shape[0] == 0:
        return resources
    r.buf = &raw[0]
    r.pos = 0
    r.end = raw.shape[0]
    while r.pos < r.end:
        if not _field(&r, _REQUEST, &number, &wire_type):
            return None
        if number == 1:
            if not _length(&r, &start, &size):
                return None
            scopes = _resource(r.buf, start, start + size)
            if scopes is None:
                return None
            resources.append(scopes)
        elif not _skip(&r, wire_type):
            return None
    return resources


cdef object _resource(const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end):
    cdef Reader r = Reader(buf, pos, end)
    cdef uint32_t number
    cdef int wire_type
    cdef Py_ssize_t start, size
    cdef list scopes = []
    while r.pos < r.end:
        if not _field(&r, _RESOURCE_LOGS, &number, &wire_type):
            return None
        if number == 2:
            if not _length(&r, &start, &size):
                return None
            scope = _scope(buf, start, start + size)
            if scope is None:
                return None
            scopes.append(scope)
        elif not _skip(&r, wire_type):
            return None
    return scopes


cdef struct Record:
    int32_t severity
    int body_kind  # 0 no value, 1 string, 2 another value
    Py_ssize_t text_start, text_size, trace_start, trace_size, span_size


cdef bint _any_value(const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end, Record* record) noexcept nogil:
    """Merge one occurrence of a record's body into `record` (the last value set wins)."""
    cdef Reader r = Reader(buf, pos, end)
    cdef uint32_t number
    cdef int wire_type
    while r.pos < r.end:
        if not _field(&r, _ANY_VALUE, &number, &wire_type):
            return False
        if number == 1:
            if not _length(&r, &record.text_start, &record.text_size):
                return False
            record.body_kind = 1
            continue
        if not _skip(&r, wire_type):
            return False
        if number < MAX_FIELD and _ANY_VALUE[number] >= 0:
            record.body_kind = 2
    return True


cdef bint _record(const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end, Record* record) noexcept nogil:
    cdef Reader r = Reader(buf, pos, end)
    cdef uint32_t number
    cdef int wire_type
    cdef uint64_t value
    cdef Py_ssize_t start, size
    record.severity = 0
    record.body_kind = 0
    record.trace_size = 0
    record.span_size = 0
    while r.pos < r.end:
        if not _field(&r, _LOG_RECORD, &number, &wire_type):
            return False
        if number == 2:
            if not _varint(&r, &value):
                return False
            record.severity = <int32_t>(<uint32_t>value)  # an int32 enum keeps the low 32 bits
        elif number == 5:
            if not _length(&r, &start, &size) or not _any_value(buf, start, start + size, record):
                return False
        elif number == 9:
            if not _length(&r, &record.trace_start, &record.trace_size):
                return False
        elif number == 10:
            if not _length(&r, &start, &record.span_size):
                return False
        elif not _skip(&r, wire_type):
            return False
    return True


cdef inline Py_ssize_t _chars(const unsigned char* text, Py_ssize_t size) noexcept nogil:
    """Characters in UTF-8 text: the bytes that start one."""
    cdef Py_ssize_t count = 0, i
    for i in range(size):
        count += (text[i] & 0xC0) != 0x80
    return count


cdef object _scope(const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end):
    cdef Reader r = Reader(buf, pos, end)
    cdef uint32_t number
    cdef int wire_type
    cdef Py_ssize_t start, size, chars, i, index = 0
    cdef Record record
    cdef dict shapes = {}
    cdef list others = [], invalid = [], shape, levels, rows
    cdef bytes key
    cdef unsigned char byte
    cdef unsigned char runs[MAX_KEY_BYTES]
    cdef Py_ssize_t runs_size
    cdef bint in_digits
    cdef PyObject* found
    cdef int level
    while r.pos < r.end:
        if not _field(&r, _SCOPE_LOGS, &number, &wire_type):
            return None
        if number != 2:
            if not _skip(&r, wire_type):
                return None
            continue
        if not _length(&r, &start, &size) or not _record(buf, start, start + size, &record):
            return None
        chars = _chars(buf + record.text_start, record.text_size) if record.body_kind == 1 else 0
        # (valid UTF-8 of at most KEY_CHARS characters fits MAX_KEY_BYTES; invalid UTF-8 may not)
        if chars == 0 or chars > _KEY_CHARS or record.text_size > MAX_KEY_BYTES:
            others.append(index)
            index += 1
            continue
        # the digit runs key (masking.digit_runs): each run of ASCII digits becomes one "0"
        runs_size = 0
        in_digits = False
        for i in range(record.text_size):
            byte = buf[record.text_start + i]
            if 0x30 <= byte <= 0x39:
                if not in_digits:
                    runs[runs_size] = 0x30
                    runs_size += 1
                in_digits = True
            else:
                runs[runs_size] = byte
                runs_size += 1
                in_digits = False
        key = PyBytes_FromStringAndSize(<const char*>runs, runs_size)
        found = PyDict_GetItem(shapes, key)
        if found is NULL:
            try:
                text = PyUnicode_DecodeUTF8(<const char*>buf + record.text_start, record.text_size, NULL)
            except UnicodeDecodeError:
                return None
            shape = [text, 1, [None] * (_N_LEVELS + 1)]
            PyDict_SetItem(shapes, key, shape)
        else:
            shape = <list>found
            shape[1] = <Py_ssize_t>shape[1] + 1
        if (record.trace_size != 0 and record.trace_size != 16) or (
            record.span_size != 0 and record.span_size != 8
        ):
            invalid.append(index)
            index += 1
            continue
        level = _LEVELS[record.severity] if 0 < record.severity < 25 else _UNKNOWN_LEVEL
        row = (
            index,
            PyBytes_FromStringAndSize(<const char*>buf + record.trace_start, 16) if record.trace_size else _NO_ID,
            chars,
        )
        levels = <list>shape[2]
        if levels[level] is None:
            levels[level] = [row]
        else:
            (<list>levels[level]).append(row)
        index += 1
    return shapes, others, invalid


# ---- the zero-copy output: the kept records' own bytes, annotations appended, never re-encoded ----

cdef struct Output:
    unsigned char* buf
    Py_ssize_t pos
    Py_ssize_t capacity


cdef int _reserve(Output* out, Py_ssize_t size) except -1:
    cdef unsigned char* grown
    cdef Py_ssize_t capacity = out.capacity
    if out.pos + size <= capacity:
        return 0
    while out.pos + size > capacity:
        capacity *= 2
    grown = <unsigned char*>PyMem_Realloc(out.buf, capacity)
    if grown is NULL:
        raise MemoryError()
    out.buf = grown
    out.capacity = capacity
    return 0


cdef inline Py_ssize_t _varint_size(uint64_t value) noexcept nogil:
    cdef Py_ssize_t size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


cdef inline void _put_varint(Output* out, uint64_t value) noexcept nogil:
    while value >= 0x80:
        out.buf[out.pos] = <unsigned char>(value & 0x7F) | 0x80
        out.pos += 1
        value >>= 7
    out.buf[out.pos] = <unsigned char>value
    out.pos += 1


cdef int _put(Output* out, const unsigned char* data, Py_ssize_t size) except -1:
    _reserve(out, size)
    memcpy(out.buf + out.pos, data, size)
    out.pos += size
    return 0


# A nested message whose length is known only once its body is written: the body goes after a gap
# the widest header fits (tag + 5-byte length), then moves back against its header.
cdef enum:
    GAP = 6


cdef inline Py_ssize_t _open(Output* out) except -1:
    _reserve(out, GAP)
    out.pos += GAP
    return out.pos


cdef inline void _close(Output* out, Py_ssize_t body, unsigned char tag) noexcept nogil:
    cdef Py_ssize_t size = out.pos - body
    cdef Py_ssize_t start = body - GAP
    cdef Py_ssize_t header = 1 + _varint_size(size)
    out.pos = start
    out.buf[out.pos] = tag
    out.pos += 1
    _put_varint(out, size)
    memmove(out.buf + start + header, out.buf + body, size)
    out.pos = start + header + size


def splice(const unsigned char[::1] raw, list plan):
    """The request `raw` (a protobuf ExportLogsServiceRequest that scan_request read) with only the
    records `plan` keeps, each followed by its annotation bytes (LogRecord fields, appended as they
    are: repeated attributes append), and the scopes and resources left empty removed. `plan` holds,
    per resource, per scope, per record, the annotation bytes of a kept record or None. Everything
    else (resources, scopes, unknown fields) is copied as it came. Returns (the request's bytes,
    per resource the size of its encoding without the annotations, 0 for a removed one)."""
    cdef Reader r
    cdef uint32_t number
    cdef int wire_type
    cdef Py_ssize_t start, size, field_start, body, resource_index = 0
    cdef Py_ssize_t plain
    cdef Output out
    cdef list kept_sizes = []
    out.capacity = max(64, raw.shape[0])
    out.pos = 0
    out.buf = <unsigned char*>PyMem_Malloc(out.capacity)
    if out.buf is NULL:
        raise MemoryError()
    try:
        r.buf = &raw[0] if raw.shape[0] else NULL
        r.pos = 0
        r.end = raw.shape[0]
        while r.pos < r.end:
            field_start = r.pos
            if not _field(&r, _REQUEST, &number, &wire_type):
                raise ValueError("splice: not a request scan_request read")
            if number == 1:
                if not _length(&r, &start, &size):
                    raise ValueError("splice: not a request scan_request read")
                body = _open(&out)
                plain = 0
                if _resource_kept(&out, r.buf, start, start + size, <list>plan[resource_index], &plain):
                    _close(&out, body, 0x0A)
                    kept_sizes.append(plain)
                else:
                    out.pos = body - GAP
                    kept_sizes.append(0)
                resource_index += 1
            else:
                if not _skip(&r, wire_type):
                    raise ValueError("splice: not a request scan_request read")
                _put(&out, r.buf + field_start, r.pos - field_start)
        return PyBytes_FromStringAndSize(<const char*>out.buf, out.pos), kept_sizes
    finally:
        PyMem_Free(out.buf)


cdef bint _resource_kept(
    Output* out, const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end, list scopes, Py_ssize_t* plain
) except -1:
    """Write the resource's body with its kept records; False (nothing to keep) when no scope keeps any.
    Adds to `plain` the size its body has without the annotations."""
    cdef Reader r = Reader(buf, pos, end)
    cdef uint32_t number
    cdef int wire_type
    cdef Py_ssize_t start, size, field_start, body, scope_index = 0, scope_plain
    cdef bint any_kept = False
    while r.pos < r.end:
        field_start = r.pos
        if not _field(&r, _RESOURCE_LOGS, &number, &wire_type):
            raise ValueError("splice: not a request scan_request read")
        if number == 2:
            if not _length(&r, &start, &size):
                raise ValueError("splice: not a request scan_request read")
            body = _open(out)
            scope_plain = 0
            if _scope_kept(out, buf, start, start + size, <list>scopes[scope_index], &scope_plain):
                _close(out, body, 0x12)
                plain[0] += 1 + _varint_size(scope_plain) + scope_plain
                any_kept = True
            else:
                out.pos = body - GAP
            scope_index += 1
        else:
            if not _skip(&r, wire_type):
                raise ValueError("splice: not a request scan_request read")
            _put(out, buf + field_start, r.pos - field_start)
            plain[0] += r.pos - field_start
    return any_kept


cdef bint _scope_kept(
    Output* out, const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end, list annotations, Py_ssize_t* plain
) except -1:
    cdef Reader r = Reader(buf, pos, end)
    cdef uint32_t number
    cdef int wire_type
    cdef Py_ssize_t start, size, field_start, index = 0, extra
    cdef bint any_kept = False
    cdef object annotation
    while r.pos < r.end:
        field_start = r.pos
        if not _field(&r, _SCOPE_LOGS, &number, &wire_type):
            raise ValueError("splice: not a request scan_request read")
        if number == 2:
            if not _length(&r, &start, &size):
                raise ValueError("splice: not a request scan_request read")
            annotation = annotations[index]
            index += 1
            if annotation is None:
                continue
            extra = len(<bytes>annotation)
            _reserve(out, 1 + 10 + size + extra)
            out.buf[out.pos] = 0x12
            out.pos += 1
            _put_varint(out, size + extra)
            memcpy(out.buf + out.pos, buf + start, size)
            out.pos += size
            memcpy(out.buf + out.pos, PyBytes_AS_STRING(<bytes>annotation), extra)
            out.pos += extra
            plain[0] += 1 + _varint_size(size) + size
            any_kept = True
        else:
            if not _skip(&r, wire_type):
                raise ValueError("splice: not a request scan_request read")
            _put(out, buf + field_start, r.pos - field_start)
            plain[0] += r.pos - field_start
    return any_kept


def largest_record(const unsigned char[::1] raw):
    """The size of the largest log record in the protobuf request `raw` as it is on the wire (at
    least its encoded size: a record sent in parts is all its parts), or None where scan_request
    would give up. A cheap first look for the per-record limits (limits.py)."""
    cdef Reader r
    cdef uint32_t number
    cdef int wire_type
    cdef Py_ssize_t start, size, largest = 0
    if raw.shape[0] == 0:
        return 0
    r.buf = &raw[0]
    r.pos = 0
    r.end = raw.shape[0]
    while r.pos < r.end:
        if not _field(&r, _REQUEST, &number, &wire_type):
            return None
        if number == 1:
            if not _length(&r, &start, &size) or not _largest_in(r.buf, start, start + size, 0, &largest):
                return None
        elif not _skip(&r, wire_type):
            return None
    return largest


cdef bint _largest_in(
    const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end, int depth, Py_ssize_t* largest
) noexcept nogil:
    """Walk a ResourceLogs (depth 0) or a ScopeLogs (depth 1): field 2 holds scopes, then records."""
    cdef Reader r = Reader(buf, pos, end)
    cdef uint32_t number
    cdef int wire_type
    cdef Py_ssize_t start, size
    cdef signed char* table = _SCOPE_LOGS
    if depth == 0:
        table = _RESOURCE_LOGS
    while r.pos < r.end:
        if not _field(&r, table, &number, &wire_type):
            return False
        if number == 2:
            if not _length(&r, &start, &size):
                return False
            if depth == 0:
                if not _largest_in(buf, start, start + size, 1, largest):
                    return False
            elif size > largest[0]:
                largest[0] = size
        elif not _skip(&r, wire_type):
            return False
    return True
