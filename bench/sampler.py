"""Benchmark of the sampler: decisions per second on one core for known patterns.

    python -m bench.sampler [--records 200000] [--system HDFS] [--runs 3]

Requests of 512 loghub records (fresh numbers in every body, so bodies are mostly unique while
their shapes repeat; a third carry trace ids) go through the sampler with the default policy,
after one warm-up pass so every pattern is known, with the proxy's garbage-collector settings.
Reported per stage, in CPU seconds of this process (time.process_time):
  parse      ExportLogsServiceRequest.FromString of each request (what a receiver pays anyway)
  extract    the compiled scan (wirescan.scan_request: trace id, severity and body of each record,
             grouped by body shape) and Sampler.extract: naming each shape's pattern, grouping
  decide     Sampler.decide_extraction: the decision order over the groups, counts and tails
  process    Sampler.process(splice=True) on fresh copies: scan + extract + decide + splicing the
             request to forward (kept records' bytes, annotated), i.e. the whole per-record path as
             the proxy runs it, up to the bytes the exporter queue receives
The headline is the decide stage: decisions per second once a record's pattern is known. The
process line says what a record costs end to end in this stage of the proxy.
Timings share the machine with everything else: treat them as noisy and look at the best of runs.
"""

from __future__ import annotations

import argparse
import random
import re
import time

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.patterns import PatternEngine
from lipservice_proxy.sampling.decision import BatchOutcome
from lipservice_proxy.sampling.policy import Policy
from lipservice_proxy.sampling.sampler import Sampler
from lipservice_proxy.sampling.wirescan import scan_request
from lipservice_proxy.service import settle_heap
from tests.support.loghub import iter_lines

BATCH = 512
NOW = 1_700_000_000.0
_NUMBER = re.compile(r"\d+")
LEVELS = {"INFO": 9, "WARN": 13, "WARNING": 13, "ERROR": 17, "FATAL": 21, "DEBUG": 5}


def fresh_numbers(text: str, rng: random.Random) -> str:
    return _NUMBER.sub(lambda m: str(rng.randrange(10 ** len(m.group()))), text)


def build_requests(system: str, total: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    lines = list(iter_lines(system))
    requests = []
    for start in range(0, total, BATCH):
        request = ExportLogsServiceRequest()
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.add(key="service.name").value.string_value = system.lower()
        records = resource_logs.scope_logs.add().log_records
        for index in range(start, min(start + BATCH, total)):
            line = lines[index % len(lines)]
            record = records.add(severity_number=LEVELS.get((line.level or "INFO").upper(), 9))
            record.body.string_value = fresh_numbers(line.content, rng)
            if index % 3 == 0:
                record.trace_id = rng.randbytes(16)
                record.span_id = rng.randbytes(8)
        requests.append(request.SerializeToString())
    return requests


def measure(requests: list[bytes], sampler: Sampler, service: str) -> dict[str, float]:
    clock = time.process_time
    started = clock()
    parsed = [ExportLogsServiceRequest.FromString(raw) for raw in requests]
    parse = clock() - started
    extract = decide = 0.0
    for raw, request in zip(requests, parsed, strict=True):
        started = clock()
        scan = scan_request(raw)[0][0]
        extraction = sampler.extract(request.resource_logs[0].scope_logs[0].log_records, service, scan=scan)
        extracted = clock()
        sampler.decide_extraction(extraction, NOW, BatchOutcome())
        extract, decide = extract + extracted - started, decide + clock() - extracted
    parsed = [ExportLogsServiceRequest.FromString(raw) for raw in requests]
    started = clock()
    for raw, request in zip(requests, parsed, strict=True):
        sampler.process(request, raw, NOW, len(raw), splice=True)
    process = clock() - started
    return {"parse": parse, "extract": extract, "decide": decide, "process": process}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--system", default="HDFS")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    requests = build_requests(args.system, args.records)
    service = args.system.lower()
    sampler = Sampler(PatternEngine(), Policy())
    settle_heap()
    measure(requests, sampler, service)  # warm-up: every pattern is known from here on
    best = min(
        (
            measure(build_requests(args.system, args.records, seed=run + 2), sampler, service)
            for run in range(args.runs)
        ),
        key=lambda stages: stages["decide"],
    )
    total = args.records
    print(f"{args.system}: {total:,} records in requests of {BATCH}, best of {args.runs} runs (CPU seconds)")
    for stage, seconds in best.items():
        rate, micros = total / seconds, seconds / total * 1e6
        print(f"  {stage:<10} {seconds:7.3f} s  {rate:>12,.0f} records/s  {micros:6.2f} us/record")
    print(f"decisions per second on one core (known patterns): {total / best['decide']:,.0f}")
    print(f"whole per-record path (Sampler.process): {total / best['process']:,.0f} records/s")


if __name__ == "__main__":
    main()
