"""The compiled scan (sampling/wirescan.pyx) against its reference (sampling/scan.py), and the sampler
with one against the sampler with the other.

Whatever protobuf parses, the compiled scan of the wire bytes either gives up (None) or equals the
reference scan of the parsed message: loghub requests, every body kind, severity numbers in and out
of range, ids of every length, fields repeated (protobuf's last-one-wins and message merging: two
encoded records concatenated are one merged record), unknown fields, and random mutations. A
sampler using it keeps, drops and annotates exactly what a sampler using the reference does.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from fuzz import payloads
from fuzz.targets import wire_scan
from lipservice_proxy.patterns import PatternEngine
from lipservice_proxy.sampling.policy import Policy
from lipservice_proxy.sampling.sampler import Sampler
from lipservice_proxy.sampling.wirescan import largest_record, scan_request
from tests.support.otlp_samples import log_request

NOW = 1_700_000_000.0


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return payloads._varint(number << 3 | 2) + payloads._varint(len(payload)) + payload


def request_bytes(resources: list[list[list[bytes]]]) -> bytes:
    """An ExportLogsServiceRequest from encoded records, per scope, per resource."""
    return b"".join(
        field(1, b"".join(field(2, b"".join(field(2, record) for record in scope)) for scope in scopes))
        for scopes in resources
    )


def agrees(raw: bytes) -> bool:
    """True when the compiled scan read `raw` (it did not give up) and equals the reference."""
    if scan_request(raw) is None:
        return False
    wire_scan(raw)  # the fuzz target's checks: the scan, the splice and the largest record
    return True


def test_loghub_requests_scan_alike() -> None:
    for system, seed in (("HDFS", 1), ("Linux", 2), ("Apache", 3), ("OpenSSH", 4)):
        request = log_request(system, 3000, services=3, seed=seed)
        raw = request.SerializeToString()
        assert agrees(raw)
        sizes = [
            record.ByteSize() for r in request.resource_logs for s in r.scope_logs for record in s.log_records
        ]
        assert largest_record(raw) == max(sizes)


texts = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[a-z ]{0,12}[0-9]{1,6}[a-z .:/]{0,12}[0-9]{0,9}", fullmatch=True),
    st.text(min_size=250, max_size=300),  # about the engine's key bound (256 characters)
    st.sampled_from(["", "é" * 256, "é" * 257, "\U0001f600" * 256, "x" * 4097]),
)
values = st.one_of(
    texts.map(lambda text: AnyValue(string_value=text)),
    st.integers(-(2**63), 2**63 - 1).map(lambda n: AnyValue(int_value=n)),
    st.binary(max_size=20).map(lambda data: AnyValue(bytes_value=data)),
    st.just(
        AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="msg", value=AnyValue(string_value="hi 1"))]))
    ),
    st.just(AnyValue()),
    st.integers(0, 9).map(lambda n: AnyValue(string_value_strindex=n)),
)
ids = st.sampled_from([b"", bytes(range(16)), bytes(range(8)), b"\x01" * 15, b"\x02" * 17, b"\xff" * 16])
records = st.builds(
    lambda body, number, text, trace_id, span_id: LogRecord(
        body=body,
        severity_number=number,
        severity_text=text,
        trace_id=trace_id,
        span_id=span_id,
    ).SerializeToString(),
    values,
    st.sampled_from([0, 1, 9, 13, 17, 24, 25, 100, -1, 2**31 - 1]),
    st.sampled_from(["", "warning", "ERR", "bogus"]),
    ids,
    ids,
)
# one record, or two encoded records concatenated: protobuf merges them into one
merged_records = st.one_of(records, st.tuples(records, records).map(b"".join))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.lists(merged_records, max_size=12), max_size=3), max_size=3))
def test_any_request_scans_alike(resources: list[list[list[bytes]]]) -> None:
    raw = request_bytes(resources)
    assert agrees(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.randoms(use_true_random=False))
def test_mutated_and_random_bytes_never_fail_and_agree_where_they_parse(
    data: bytes, rng: random.Random
) -> None:
    wire_scan(data)
    raw = bytearray(log_request("HDFS", 20, services=2, seed=rng.randrange(100)).SerializeToString())
    for _ in range(rng.randrange(1, 4)):
        raw[rng.randrange(len(raw))] = rng.randrange(256)
    wire_scan(bytes(raw))
    wire_scan(bytes(raw[: rng.randrange(len(raw))]))


def test_it_gives_up_on_what_it_cannot_read_as_protobuf_did() -> None:
    # a known field with another wire type (protobuf keeps it as an unknown field), and a group
    assert scan_request(payloads.wrong_wire_type()) is None
    assert scan_request(request_bytes([[[b"\x2b\x2c"]]])) is None  # field 5 as a group: does not parse
    # a body that is not UTF-8 (protobuf refuses it) is no crash either
    assert scan_request(payloads.invalid_utf8_protobuf()) is None
    # unknown fields, at every level, are skipped as protobuf skips them
    unknown = payloads._varint(99 << 3) + b"\x05"
    record = LogRecord(body=AnyValue(string_value="disk 7 full"), severity_number=9).SerializeToString()
    raw = unknown + field(1, unknown + field(2, unknown + field(2, record + unknown)))
    assert agrees(raw)


def run(sampler: Sampler, raws: list[bytes], *, splice: bool = False) -> list[tuple[object, ...]]:
    """What the sampler forwards (as a message) and counts for each request."""
    out = []
    for step, raw in enumerate(raws):
        request = ExportLogsServiceRequest.FromString(raw)
        outcome = sampler.process(request, raw, NOW + step, len(raw), splice=splice)
        if splice:
            assert outcome.wire is not None
            request = ExportLogsServiceRequest.FromString(outcome.wire)
        else:
            assert outcome.wire is None
        counts = (outcome.received, outcome.kept, outcome.rejected, outcome.forwarded)
        out.append((request, counts, outcome.bytes, outcome.records, outcome.rejection_message))
    return out


def test_the_sampler_forwards_the_same_bytes_with_either_scan() -> None:
    policy = Policy.model_validate(
        {
            "severity_rates": {"INFO": 0.3, "DEBUG": 0.1},
            "exemptions": [{"attribute": "audit", "equals": "true"}],
        }
    )
    systems = ("HDFS", "Linux", "HDFS", "Apache", "HDFS", "OpenSSH")
    raws = [
        log_request(system, 1500, services=2, seed=seed).SerializeToString()
        for seed, system in enumerate(systems)
    ]
    # two records merged into one, and a record with a 3-byte trace id (rejected)
    raws.append(request_bytes([[[records_of(raws[0])[0] + records_of(raws[1])[0], b"\x4a\x03abc"]]]))
    compiled, spliced = Sampler(PatternEngine(), policy), Sampler(PatternEngine(), policy)
    reference = Sampler(PatternEngine(), policy, wire_scan=False)
    expected = run(reference, raws)
    assert run(compiled, raws) == expected
    got = run(spliced, raws, splice=True)
    assert got[:-1] == expected[:-1]
    # the merged record's bytes are counted as they travel, not as protobuf would re-encode them
    (request, counts, sizes, records, message), expected_last = got[-1], expected[-1]
    assert (request, counts, records, message) == expected_last[:2] + expected_last[3:]
    assert sizes["unknown_service"][1] > expected_last[2]["unknown_service"][1]  # type: ignore[index]
    tails = reference.close_tails(NOW + 99, everything=True)
    assert compiled.close_tails(NOW + 99, everything=True) == tails
    assert spliced.close_tails(NOW + 99, everything=True) == tails


def test_a_dry_run_or_a_request_from_an_earlier_hop_is_edited_not_spliced() -> None:
    raw = log_request("HDFS", 200, services=1, seed=9).SerializeToString()
    dry = Sampler(PatternEngine(), Policy(), dry_run=True)
    assert dry.process(ExportLogsServiceRequest.FromString(raw), raw, NOW, len(raw), splice=True).wire is None
    sampler = Sampler(PatternEngine(), Policy())
    request = ExportLogsServiceRequest.FromString(raw)
    outcome = sampler.process(request, raw, NOW, len(raw), splice=True)
    hop = outcome.wire
    assert hop is not None
    again = ExportLogsServiceRequest.FromString(hop)
    assert sampler.process(again, hop, NOW + 1, len(hop), splice=True).wire is None  # weights multiply


def records_of(raw: bytes) -> list[bytes]:
    request = ExportLogsServiceRequest.FromString(raw)
    return [record.SerializeToString() for record in request.resource_logs[0].scope_logs[0].log_records]
