"""The persistent queue's file format and segment log, on real files: entries read back exactly,
damage (flipped bytes, torn tails) is skipped and reported without losing the entries around it,
the ack cursor and spans acknowledged out of order survive a restart (an ack file of the previous
format too), acknowledged segments are deleted, and one process owns a directory."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from lipservice_proxy.errors import ConfigError
from lipservice_proxy.exporters.persistent import frames
from lipservice_proxy.exporters.persistent.segments import ReadEntry, SegmentLog
from tests.support.delivery import file_size_limit


def reader(data: bytes) -> frames.Read:
    return lambda offset, size: data[offset : offset + size]


def read_all(data: bytes) -> tuple[list[tuple[bytes, int]], list[str]]:
    """Every entry and every damage description, reading `data` from the start to the end."""
    entries, damage = [], []
    offset = 0
    for _ in range(len(data) + 1):  # each step moves forward, so this is more than enough
        if offset >= len(data):
            break
        found = frames.read_entry(reader(data), offset, len(data))
        if isinstance(found, frames.Damage):
            damage.append(found.reason)
            assert found.resume > offset
            offset = found.resume
        else:
            entries.append((found.payload, found.records))
            offset = found.end
    return entries, damage


PAYLOADS = [(f"payload {n} ".encode() * (n + 1), n + 1) for n in range(6)]
LOG = b"".join(frames.encode(payload, records) for payload, records in PAYLOADS)
STARTS = [sum(frames.HEADER_SIZE + len(p) for p, _ in PAYLOADS[:n]) for n in range(len(PAYLOADS))]


def test_entries_read_back_exactly() -> None:
    assert read_all(LOG) == (PAYLOADS, [])


def test_a_flipped_payload_byte_loses_that_entry_only() -> None:
    damaged = bytearray(LOG)
    damaged[STARTS[2] + frames.HEADER_SIZE + 3] ^= 0x40
    entries, damage = read_all(bytes(damaged))
    assert entries == PAYLOADS[:2] + PAYLOADS[3:]
    assert damage == ["payload checksum mismatch"]


@pytest.mark.parametrize("byte", [0, 5, 9, 13, 21])  # magic, length, records, checksum, header check
def test_a_flipped_header_byte_loses_that_entry_only(byte: int) -> None:
    damaged = bytearray(LOG)
    damaged[STARTS[3] + byte] ^= 0x01
    entries, damage = read_all(bytes(damaged))
    assert entries == PAYLOADS[:3] + PAYLOADS[4:]
    assert damage == ["bad entry header"]


@pytest.mark.parametrize("cut", [1, frames.HEADER_SIZE - 1, frames.HEADER_SIZE, frames.HEADER_SIZE + 5])
def test_a_torn_tail_is_reported_and_the_entries_before_it_kept(cut: int) -> None:
    entries, damage = read_all(LOG[: STARTS[5] + cut])
    assert entries == PAYLOADS[:5]
    assert len(damage) == 1 and damage[0].startswith("torn tail")


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=8),
    position=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_single_flip_costs_at_most_one_entry(payloads: list[bytes], position: int, mask: int) -> None:
    log = bytearray(b"".join(frames.encode(payload, index) for index, payload in enumerate(payloads)))
    log[position % len(log)] ^= mask
    entries, damage = read_all(bytes(log))
    originals = [(payload, index) for index, payload in enumerate(payloads)]
    assert len(entries) >= len(payloads) - 1
    assert all(entry in originals for entry in entries)  # never a wrong payload
    assert len(damage) <= 1


@settings(max_examples=100, deadline=None)
@given(garbage=st.binary(max_size=2000))
def test_garbage_never_crashes_the_reader(garbage: bytes) -> None:
    entries, _ = read_all(garbage + frames.encode(b"survivor", 1))
    assert entries[-1] == (b"survivor", 1)


# ---- the segment log ----


class Damaged(list[str]):
    def __call__(self, description: str) -> None:
        self.append(description)


def open_log(directory: Path, segment_bytes: int = 1024) -> tuple[SegmentLog, Damaged]:
    damaged = Damaged()
    log = SegmentLog(directory, segment_bytes, damaged)
    return log, damaged


def append(log: SegmentLog, seqs: range) -> None:
    for seq in seqs:
        log.append(frames.encode(f"entry {seq:04d} ".encode() * 10, 1))


def read_seqs(log: SegmentLog) -> list[tuple[int, ReadEntry]]:
    result: list[tuple[int, ReadEntry]] = []
    for _ in range(10_000):
        entry = log.read_next()
        if entry is None:
            return result
        result.append((int(entry.payload[6:10]), entry))
    raise AssertionError("the log did not end")


def close(log: SegmentLog) -> None:
    log.take_sync_work().run()
    log.close()


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_appends_roll_segments_and_acknowledged_ones_are_deleted(tmp_path: Path) -> None:
    log, damaged = open_log(tmp_path)
    assert log.open().segments == 0
    append(log, range(40))  # 134-byte entries, 1 KiB segments: 8 entries in each of 5 segments
    written = segment_files(tmp_path)
    assert len(written) == 5
    assert log.disk_bytes == sum(path.stat().st_size for path in written)
    read = read_seqs(log)
    assert [seq for seq, _ in read] == list(range(40))
    log.acknowledge(read[29][1].end)  # inside the 4th segment: the first three are done with
    assert segment_files(tmp_path) == written[3:]
    assert log.disk_bytes == sum(path.stat().st_size for path in written[3:])
    close(log)
    assert damaged == []


def test_a_restart_replays_from_the_ack_cursor(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    log.open()
    append(log, range(30))
    read = read_seqs(log)
    log.acknowledge(read[11][1].end)  # entries 0..11 acknowledged, 12..29 in flight
    close(log)

    again, damaged = open_log(tmp_path)
    report = again.open()
    assert report.records == 18 and report.damage == [] and damaged == []
    assert [seq for seq, _ in read_seqs(again)] == list(range(12, 30))
    append(again, range(30, 33))  # a restarted log writes to a new segment, after the old ones
    assert [seq for seq, _ in read_seqs(again)] == [30, 31, 32]
    close(again)


def test_an_unreadable_cursor_means_replaying_everything(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path, segment_bytes=1 << 20)
    log.open()
    append(log, range(5))
    log.acknowledge(read_seqs(log)[2][1].end)
    close(log)
    (tmp_path / "ack").write_bytes(b"\x00garbage")

    again, _ = open_log(tmp_path)
    assert again.open().records == 5  # duplicates rather than losses
    close(again)


def test_damage_in_segments_found_at_start_is_reported_once(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    log.open()
    append(log, range(20))
    close(log)
    first, *_, last = segment_files(tmp_path)
    data = bytearray(first.read_bytes())
    data[frames.HEADER_SIZE + 20] ^= 0xFF  # the first entry's payload
    first.write_bytes(bytes(data))
    with last.open("r+b") as handle:  # cut the last entry in half: a crash mid-write
        handle.truncate(last.stat().st_size - 40)

    again, damaged = open_log(tmp_path)
    report = again.open()
    assert len(report.damage) == 2
    assert "payload checksum mismatch" in report.damage[0] and "torn tail" in report.damage[1]
    assert report.records == 18
    assert [seq for seq, _ in read_seqs(again)] == list(range(1, 19))
    assert damaged == []  # reading met the same damage; it was reported by open already
    close(again)


def test_a_second_process_cannot_open_the_same_directory(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    log.open()
    with pytest.raises(ConfigError, match="in use by another process"):
        open_log(tmp_path)[0].open()
    close(log)
    again, _ = open_log(tmp_path)  # the lock is gone with the first log
    again.open()
    close(again)


def test_a_failed_write_seals_the_segment_and_the_next_append_starts_a_new_one(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path, segment_bytes=1 << 20)
    log.open()
    append(log, range(3))
    (first,) = segment_files(tmp_path)
    with file_size_limit(first.stat().st_size + 10), pytest.raises(OSError):
        append(log, range(3, 4))  # 10 bytes fit, then EFBIG: a real partial write
    append(log, range(4, 6))
    assert len(segment_files(tmp_path)) == 2
    assert [seq for seq, _ in read_seqs(log)] == [0, 1, 2, 4, 5]
    close(log)

    again, _ = open_log(tmp_path)
    report = again.open()  # the 10 stray bytes are a torn tail, skipped with a report
    assert report.records == 5 and len(report.damage) == 1 and "torn tail" in report.damage[0]
    close(again)


def test_spans_acknowledged_out_of_order_are_not_replayed_and_their_segments_go(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    log.open()
    append(log, range(40))  # 8 entries in each of 5 segments
    read = read_seqs(log)
    written = segment_files(tmp_path)
    # Entries 5..9 still in flight (one rescheduled batch); 10..39 and 0..4 acknowledged.
    log.acknowledge(read[5][1].start, [(read[10][1].start, read[39][1].end)])
    assert segment_files(tmp_path) == [*written[:2], written[4]]  # 3 and 4 lie in the span; 5 is active
    close(log)

    again, damaged = open_log(tmp_path)
    report = again.open()
    assert report.records == 5 and damaged == []
    assert [seq for seq, _ in read_seqs(again)] == [5, 6, 7, 8, 9]
    append(again, range(40, 42))
    read_again = read_seqs(again)
    assert [seq for seq, _ in read_again] == [40, 41]
    again.acknowledge(read_again[-1][1].end)  # everything: the span of the first run is passed too
    close(again)

    third, _ = open_log(tmp_path)
    assert third.open().records == 0
    close(third)


def test_an_ack_file_of_format_1_is_still_read(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    log.open()
    append(log, range(30))
    read = read_seqs(log)
    close(log)
    cursor = struct.pack("<QQ", *read[11][1].end)  # what the previous version wrote: the cursor alone
    (tmp_path / "ack").write_bytes(cursor + xxhash.xxh32_intdigest(cursor).to_bytes(4, "little"))

    again, _ = open_log(tmp_path)
    assert again.open().records == 18
    assert [seq for seq, _ in read_seqs(again)] == list(range(12, 30))
    close(again)
