"""The on-disk entry format of the persistent queue, and how to read it back without trusting it.

An entry is a 24-byte header followed by the payload (a serialized `ExportLogsServiceRequest`)::

    magic "LSQ1" | payload length u32 | record count u32 | xxh3-64 of payload | xxh32 of the 20 bytes before

The header has its own checksum, so a damaged length is never believed: when a header is bad the
reader scans forward for the next magic whose header checks out, and when only the payload is bad
it skips exactly that entry. A header whose payload runs past the end of the file is a torn tail
(the process died mid-write). Everything here works on a `read(offset, size)` function, so the same
code reads files and, in tests, plain bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import xxhash

MAGIC = b"LSQ1"
_HEAD = struct.Struct("<4sIIQ")  # magic, payload length, record count, payload checksum
_HEAD_CHECK = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _HEAD_CHECK.size
MAX_PAYLOAD = 2**32 - 1
_SCAN_CHUNK = 64 * 1024

Read = Callable[[int, int], bytes]
"""read(offset, size) -> at most `size` bytes starting at `offset`."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A whole entry: its payload, its record count and where the next one starts."""

    payload: bytes
    records: int
    end: int


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes that are not a valid entry; reading resumes at `resume`."""

    reason: str
    resume: int


def encode(payload: bytes, records: int) -> bytes:
    """One entry, ready to append."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes is too large for one disk queue entry")
    head = _HEAD.pack(MAGIC, len(payload), records, xxhash.xxh3_64_intdigest(payload))
    return head + _HEAD_CHECK.pack(xxhash.xxh32_intdigest(head)) + payload


def parse_header(header: bytes) -> tuple[int, int, int] | None:
    """(payload length, record count, payload checksum), or None unless the header is intact."""
    if len(header) != HEADER_SIZE:
        return None
    head = header[: _HEAD.size]
    magic, length, records, checksum = _HEAD.unpack(head)
    if magic != MAGIC or _HEAD_CHECK.unpack_from(header, _HEAD.size)[0] != xxhash.xxh32_intdigest(head):
        return None
    return length, records, checksum


def read_entry(read: Read, offset: int, end: int) -> Entry | Damage:
    """The entry at `offset`, for data that ends at `end`; or what is wrong there and where to go on."""
    if end - offset < HEADER_SIZE:
        return Damage(f"torn tail: {end - offset} bytes, less than a header", end)
    header = parse_header(read(offset, HEADER_SIZE))
    if header is None:
        return Damage("bad entry header", next_header(read, offset + 1, end))
    length, records, checksum = header
    start = offset + HEADER_SIZE
    if start + length > end:
        return Damage(f"torn tail: entry of {length} bytes cut off after {end - start}", end)
    payload = read(start, length)
    if len(payload) != length or xxhash.xxh3_64_intdigest(payload) != checksum:
        return Damage("payload checksum mismatch", start + length)
    return Entry(payload, records, start + length)


def next_header(read: Read, offset: int, end: int) -> int:
    """The first offset at or after `offset` holding an intact header, else `end`."""
    position = offset
    while position < end:
        chunk = read(position, min(_SCAN_CHUNK, end - position))
        found = chunk.find(MAGIC)
        while found != -1:
            candidate = position + found
            if parse_header(read(candidate, HEADER_SIZE)) is not None:
                return candidate
            found = chunk.find(MAGIC, found + 1)
        if len(chunk) < len(MAGIC) or position + len(chunk) >= end:
            return end
        position += len(chunk) - (len(MAGIC) - 1)  # a magic may straddle two chunks
    return end
