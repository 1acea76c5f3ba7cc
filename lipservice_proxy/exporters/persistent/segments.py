"""The segment log on disk: append entries, read them back in order, forget what upstream acknowledged.

One directory per exporter holds numbered segment files (`00000000000000000042.seg`), an `ack`
file and a `lock`. Entries are appended to the newest segment until it reaches `segment_bytes`;
a process never appends to a segment it found at start (its tail may be torn), it starts a new one.

The `ack` file holds the cursor, the position before which everything was acknowledged, and the
ranges after it that were acknowledged out of order (batches finish in any order: one rescheduled
batch must not make a restart send again everything delivered after it). It is rewritten (temp file
+ rename) whenever either changes; segments wholly before the cursor or inside a range are deleted,
and reading skips the ranges. A lost or stale `ack` file only means entries are sent again (at least
once), never that any are skipped. Format 2 (`LSA2`, cursor and ranges) replaced format 1 (the cursor
alone, 20 bytes), which is still read; a version that knows only format 1 replays every segment.

Everything here is synchronous file I/O on small reads and writes, except fsync: `take_sync_work`
hands the caller what to sync, to run off the event loop. A `flock` on `lock` keeps a second process out.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from ...errors import ConfigError
from . import frames

log = logging.getLogger(__name__)

Position = tuple[int, int]
"""(segment id, byte offset); positions compare in log order."""
Span = tuple[Position, Position]
"""[start, end): the entries starting in it."""

_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
_CURSOR = struct.Struct("<QQ")  # format 1: the cursor alone
_ACK_MAGIC = b"LSA2"
_ACK_HEAD = struct.Struct("<4sQQI")  # format 2: magic, cursor, number of ranges
_ACK_RANGE = struct.Struct("<QQQQ")
_CHECK_SIZE = 4


def file_reader(fd: int) -> frames.Read:
    return lambda offset, size: os.pread(fd, size, offset)


def segment_name(segment_id: int) -> str:
    return f"{segment_id:020d}.seg"


@dataclass(slots=True)
class Segment:
    id: int
    path: Path
    size: int  # bytes of whole entries (for a segment found at start: the file's size)
    found_at_start: bool
    read_fd: int | None = None


@dataclass(frozen=True, slots=True)
class ReadEntry:
    payload: bytes
    records: int
    start: Position
    end: Position


@dataclass(frozen=True, slots=True)
class SyncWork:
    """fsyncs to run off the event loop: data written before `SegmentLog.take_sync_work` is durable after
    `run`. The loop never touches `close_after` fds again, so closing them here is safe."""

    fds: tuple[int, ...]
    close_after: tuple[int, ...]
    directory: Path | None  # segments were created: their names must be durable too

    def run(self) -> None:
        try:
            for fd in self.fds:
                os.fdatasync(fd)
            if self.directory is not None:
                directory_fd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(directory_fd)
                finally:
                    os.close(directory_fd)
        finally:
            for fd in self.close_after:
                os.close(fd)


@dataclass(slots=True)
class StartReport:
    """What `open` found on disk (entries after the cursor only)."""

    segments: int = 0
    records: int = 0
    payload_bytes: int = 0
    damage: list[str] = field(default_factory=list)


class SegmentLog:
    def __init__(self, directory: Path, segment_bytes: int, on_damage: Callable[[str], None]) -> None:
        """`on_damage(description)` is called once per damaged region met while reading this run's data;
        damage in segments found at start is reported by `open` instead, so nothing is counted twice."""
        self.directory = directory
        self._segment_bytes = segment_bytes
        self._on_damage = on_damage
        self._segments: deque[Segment] = deque()
        self._active: Segment | None = None
        self._write_fd: int | None = None
        self._unsynced: list[int] = []  # fds written since the last sync (the active one, rolled ones)
        self._to_close: list[int] = []  # rolled write fds, closed after their sync
        self._new_files = False
        self._lock_fd: int | None = None
        self._acked: Position = (0, 0)
        self._acked_spans: list[Span] = []  # acknowledged out of order, after the cursor, in order
        self._skipped: list[Span] = []  # spans read from the ack file at start: never read again
        self.read_position: Position = (0, 0)
        self.disk_bytes = 0

    # ---- start and stop ----

    def open(self) -> StartReport:
        """Lock the directory, load the cursor, delete acknowledged segments, scan the rest.
        Raises ConfigError when the directory cannot be used (permissions, another process)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock()
            return self._load()
        except OSError as exc:
            raise ConfigError(f"disk queue {self.directory}: {exc.strerror or exc}") from None

    def _load(self) -> StartReport:
        self._acked, self._acked_spans = self._load_acks()
        self._skipped = list(self._acked_spans)
        report = StartReport()
        for segment_id, path in self._existing_segments():
            size = path.stat().st_size
            if segment_id < self._acked[0] or size == 0:
                path.unlink()
                continue
            segment = Segment(segment_id, path, size, found_at_start=True)
            self._segments.append(segment)
            self.disk_bytes += size
            start = self._acked[1] if segment_id == self._acked[0] else 0
            report.segments += 1
            self._scan(segment, start, report)
        first = self._segments[0].id if self._segments else self._acked[0]
        self.read_position = self._acked if first == self._acked[0] else (first, 0)
        return report

    def _lock(self) -> None:
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"disk queue {self.directory} is in use by another process") from None
        self._lock_fd = fd

    def _existing_segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.iterdir():
            match = _SEGMENT_NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def _scan(self, segment: Segment, start: int, report: StartReport) -> None:
        offset = start
        try:
            fd = os.open(segment.path, os.O_RDONLY)
            try:
                while offset < segment.size:
                    position = self._past_skipped((segment.id, offset))
                    if position != (segment.id, offset):
                        if position[0] != segment.id:
                            break  # acknowledged to the end of this segment
                        offset = position[1]
                        continue
                    found = frames.read_entry(file_reader(fd), offset, segment.size)
                    if isinstance(found, frames.Damage):
                        report.damage.append(f"{segment.path.name} at byte {offset}: {found.reason}")
                        offset = found.resume
                    else:
                        report.records += found.records
                        report.payload_bytes += len(found.payload)
                        offset = found.end
            finally:
                os.close(fd)
        except OSError as exc:
            report.damage.append(f"{segment.path.name} at byte {offset}: unreadable ({exc.strerror or exc})")

    def close(self) -> None:
        """Close every file; run the last `take_sync_work()` first. The data stays for the next start."""
        for segment in self._segments:
            self._close_reader(segment)
        if self._write_fd is not None:
            os.close(self._write_fd)
        self._write_fd = None
        self._active = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # ---- writing ----

    def append(self, entry: bytes) -> None:
        """Append one encoded entry. On a write error the segment is sealed where its last whole entry
        ended (a partial write left behind is skipped as damage at the next start) and OSError raised."""
        if self._active is None or self._active.size >= self._segment_bytes:
            self._roll()
        assert self._active is not None and self._write_fd is not None
        segment, fd = self._active, self._write_fd
        written = 0
        try:
            while written < len(entry):
                written += os.write(fd, entry[written:])
        except OSError:
            self._seal()
            raise
        segment.size += len(entry)
        self.disk_bytes += len(entry)
        if not self._unsynced or self._unsynced[-1] != fd:
            self._unsynced.append(fd)

    def _roll(self) -> None:
        self._seal()
        newest = self._segments[-1].id if self._segments else self._acked[0]
        segment_id = newest + 1
        path = self.directory / segment_name(segment_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._segments.append(Segment(segment_id, path, 0, found_at_start=False))
        self._active, self._write_fd = self._segments[-1], fd
        self._new_files = True

    def _seal(self) -> None:
        if self._write_fd is not None:
            self._to_close.append(self._write_fd)
        self._active, self._write_fd = None, None

    def take_sync_work(self) -> SyncWork:
        """What to fsync for everything appended so far; run it (in a worker thread) with `SyncWork.run`."""
        directory = self.directory if self._new_files else None
        work = SyncWork(tuple(self._unsynced), tuple(self._to_close), directory)
        self._unsynced, self._to_close, self._new_files = [], [], False
        return work

    # ---- reading ----

    def read_next(self) -> ReadEntry | None:
        """The next entry in log order, or None when everything written so far was read."""
        while True:
            self.read_position = self._past_skipped(self.read_position)
            segment = self._reading_segment()
            if segment is None:
                return None
            offset = self.read_position[1]
            if offset >= segment.size:
                if segment is self._active:
                    return None
                self._close_reader(segment)
                self.read_position = (segment.id + 1, 0)
                continue
            try:
                if segment.read_fd is None:
                    segment.read_fd = os.open(segment.path, os.O_RDONLY)
                found: frames.Entry | frames.Damage = frames.read_entry(
                    file_reader(segment.read_fd), offset, segment.size
                )
            except OSError as exc:  # the rest of this segment cannot be read: skip it, never stall
                found = frames.Damage(f"unreadable ({exc.strerror or exc})", segment.size)
            if isinstance(found, frames.Damage):
                if not segment.found_at_start:
                    self._on_damage(f"{segment.path.name} at byte {offset}: {found.reason}")
                self.read_position = (segment.id, found.resume)
                continue
            start = self.read_position
            self.read_position = (segment.id, found.end)
            return ReadEntry(found.payload, found.records, start, self.read_position)

    def _past_skipped(self, position: Position) -> Position:
        """`position`, or the end of the span acknowledged at an earlier run that holds it."""
        for start, end in self._skipped:
            if start <= position < end:
                return end
        return position

    def _reading_segment(self) -> Segment | None:
        """The segment holding the read position, moving the position past missing segments."""
        for segment in self._segments:
            if segment.id == self.read_position[0]:
                return segment
            if segment.id > self.read_position[0]:
                self.read_position = (segment.id, 0)
                return segment
        return None

    @staticmethod
    def _close_reader(segment: Segment) -> None:
        if segment.read_fd is not None:
            os.close(segment.read_fd)
            segment.read_fd = None

    # ---- acknowledging ----

    def acknowledge(self, cursor: Position, spans: Sequence[Span] = ()) -> None:
        """Everything before `cursor` and every entry starting in one of `spans` (sorted, after the
        cursor) was acknowledged: persist that, delete the segments it covers wholly.

        The spans given replace those of the last call; spans of an earlier run are kept until the
        cursor passes them. A file that cannot be written or deleted is logged, not raised: at worst
        the next start sends acknowledged entries again."""
        cursor = max(cursor, self._acked)
        self._skipped = [span for span in self._skipped if span[1] > cursor]
        acked = _merged(sorted([*self._skipped, *(span for span in spans if span[1] > cursor)]))
        if cursor == self._acked and acked == self._acked_spans:
            return
        self._acked, self._acked_spans = cursor, acked
        try:
            self._store_acks()
        except OSError as exc:
            log.warning("disk queue %s: cannot store the ack file: %s", self.directory, exc)
        for segment in list(self._segments):
            if segment is not self._active and self._wholly_acknowledged(segment):
                self._delete(segment)

    def _wholly_acknowledged(self, segment: Segment) -> bool:
        if segment.id < self._acked[0]:
            return True
        first, last = (segment.id, 0), (segment.id, segment.size)
        return any(start <= first and last <= end for start, end in self._acked_spans)

    def _delete(self, segment: Segment) -> None:
        self._segments.remove(segment)
        self._close_reader(segment)
        try:
            segment.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("disk queue %s: cannot delete %s: %s", self.directory, segment.path.name, exc)
        self.disk_bytes -= segment.size

    def _store_acks(self) -> None:
        body = _ACK_HEAD.pack(_ACK_MAGIC, *self._acked, len(self._acked_spans)) + b"".join(
            _ACK_RANGE.pack(*start, *end) for start, end in self._acked_spans
        )
        temporary = self.directory / "ack.tmp"
        temporary.write_bytes(_checked(body))
        os.replace(temporary, self.directory / "ack")

    def _load_acks(self) -> tuple[Position, list[Span]]:
        try:
            data = (self.directory / "ack").read_bytes()
        except FileNotFoundError:
            return (0, 0), []
        loaded = _parse_acks(data)
        if loaded is None:
            log.warning("disk queue %s: unreadable ack file; replaying every segment", self.directory)
            return (0, 0), []
        return loaded


def _parse_acks(data: bytes) -> tuple[Position, list[Span]] | None:
    """The cursor and spans of an ack file in format 2 or 1, or None unless it is intact."""
    if len(data) < _CHECK_SIZE or data != _checked(data[:-_CHECK_SIZE]):
        return None
    body = data[:-_CHECK_SIZE]
    if len(body) == _CURSOR.size:  # format 1
        segment_id, offset = _CURSOR.unpack(body)
        return (segment_id, offset), []
    if len(body) < _ACK_HEAD.size:
        return None
    magic, segment_id, offset, count = _ACK_HEAD.unpack_from(body)
    if magic != _ACK_MAGIC or len(body) != _ACK_HEAD.size + count * _ACK_RANGE.size:
        return None
    spans = []
    for index in range(count):
        start_id, start_offset, end_id, end_offset = _ACK_RANGE.unpack_from(
            body, _ACK_HEAD.size + index * _ACK_RANGE.size
        )
        spans.append(((start_id, start_offset), (end_id, end_offset)))
    return (segment_id, offset), spans


def _merged(spans: list[Span]) -> list[Span]:
    """Sorted spans with overlapping or touching ones joined."""
    joined: list[Span] = []
    for start, end in spans:
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(end, joined[-1][1]))
        else:
            joined.append((start, end))
    return joined


def _checked(body: bytes) -> bytes:
    """`body` followed by its xxh32, so a torn or foreign cursor file is recognised."""
    return body + xxhash.xxh32_intdigest(body).to_bytes(4, "little")
