"""OTLP/JSON codec throughput: records/s for decode (JSON -> protobuf) and encode, ours against
protobuf's json_format, on a realistic logs request built from loghub lines.

    .venv/bin/python -m bench.otlp_json [--records 20000] [--repeat 5] [--gc-threshold 50000]

Prints the best of `--repeat` runs per operation (the machine is shared, so the best run is the
least disturbed one). Decoding allocates a dict per JSON object, so CPython's cyclic GC (gen0
threshold 700 by default) costs about half of the decode time; `--gc-threshold` shows the figure
for a process that raises it, as a proxy process may.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.otlp.json_codec import json_to_message, message_to_json
from tests.support.otlp_samples import log_request


def best_seconds(operation: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        operation()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--gc-threshold", type=int, default=None, help="gen0 threshold (default: CPython's)")
    args = parser.parse_args()
    if args.gc_threshold is not None:
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])

    request = log_request("HDFS", args.records)
    ours = message_to_json(request)
    theirs = json_format.MessageToJson(request).encode()
    assert json_to_message(ours, ExportLogsServiceRequest) == request

    operations: dict[str, Callable[[], object]] = {
        "decode  otlp_json": lambda: json_to_message(ours, ExportLogsServiceRequest),
        "decode  json_format": lambda: json_format.Parse(theirs, ExportLogsServiceRequest()),
        "encode  otlp_json": lambda: message_to_json(request),
        "encode  json_format": lambda: json_format.MessageToJson(request),
        "parse   protobuf binary": lambda: ExportLogsServiceRequest.FromString(request.SerializeToString()),
    }
    print(
        f"{args.records} records, {len(ours) / args.records:.0f} JSON bytes per record, "
        f"gc thresholds {gc.get_threshold()}"
    )
    for name, operation in operations.items():
        seconds = best_seconds(operation, args.repeat)
        rate = args.records / seconds
        print(f"{name:26s} {rate:>12,.0f} records/s  {len(ours) / seconds / 2**20:8.1f} MiB/s JSON")


if __name__ == "__main__":
    main()
