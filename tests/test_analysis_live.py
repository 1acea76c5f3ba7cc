"""The analysis loop left on in a real proxy, time-compressed: four unseen Loghub systems sent over
OTLP/HTTP at a fixed rate to a proxy exporting to a real OTLP sink, the loop running on its own
timer. Every duration of the cold start is divided by a compression factor (the analysis interval
of 10 s, the first-per-window window, the boost durations) and the rate multiplied by it, so each
interval sees the records it would at full length. Asserts the keep ratio over the last third of
the run, from the proxy's own counters, and that every ERROR+ record was kept. bench/coldstart.py
gives the full-length figures on a virtual clock.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from bench.coldstart import DEFAULT_SYSTEMS, request_of
from bench.workloads import loghub_lines
from lipservice_proxy.config import ProxyConfig
from lipservice_proxy.service import Proxy

from .support.proxy import loopback_config, sink_exporter
from .support.sink import OtlpSink

pytestmark = pytest.mark.loghub

REQUESTS_PER_SECOND = 10


def compressed_policy(path: Path, compression: int) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "generated_by": "manual",
                "first_per_window": {"count": 1, "window": 60 / compression},
                "anomaly_boost": {
                    "rate": 1.0,
                    "duration": 600 / compression,
                    "new_pattern_duration": 60 / compression,
                },
            }
        )
    )
    return path


def counted(proxy: Proxy, kind: str, severities: tuple[str, ...] | None = None) -> float:
    name = f"lipservice_log_records_{kind}_total"
    return sum(
        sample.value
        for family in proxy.telemetry.registry.collect()
        for sample in family.samples
        if sample.name == name and (severities is None or sample.labels.get("severity") in severities)
    )


@pytest.mark.parametrize(
    ("rate", "seconds", "compression", "target"),
    [(50, 150, 5, 0.30), (1000, 90, 5, 0.15)],
    ids=["50-per-second", "1000-per-second"],
)
def test_a_live_cold_start_settles_within_target(
    tmp_path: Path, rate: int, seconds: int, compression: int, target: float
) -> None:
    corpus = loghub_lines()
    streams = [itertools.cycle([(s.lower(), line) for line in corpus[s]]) for s in DEFAULT_SYSTEMS]
    lines = (next(stream) for stream in itertools.cycle(streams))
    per_request = rate * compression // REQUESTS_PER_SECOND
    requests = [
        request_of([next(lines) for _ in range(per_request)]).SerializeToString()
        for _ in range(seconds // compression * REQUESTS_PER_SECOND)
    ]

    async def scenario() -> None:
        async with OtlpSink() as sink:
            config = loopback_config(
                {
                    "sampler": {
                        "policy_file": str(compressed_policy(tmp_path / "operator.yaml", compression))
                    },
                    "analysis": {
                        "enabled": True,
                        "interval": 10 / compression,
                        "policy_file": str(tmp_path / "generated.yaml"),
                    },
                    "exporters": [sink_exporter(sink.grpc_endpoint)],
                }
            )
            proxy = Proxy(ProxyConfig.model_validate(config))
            await proxy.start()
            try:
                url = f"http://127.0.0.1:{proxy.ports['http']}/v1/logs"
                last_third = len(requests) - len(requests) // 3
                start = time.monotonic()
                async with aiohttp.ClientSession() as session:
                    for number, body in enumerate(requests):
                        if number == last_third:
                            received, kept = counted(proxy, "received"), counted(proxy, "kept")
                        # paced on a fixed schedule: the load generator's clock, not a wait for the proxy
                        await asyncio.sleep(max(0.0, start + number / REQUESTS_PER_SECOND - time.monotonic()))
                        async with session.post(
                            url, data=body, headers={"Content-Type": "application/x-protobuf"}
                        ) as response:
                            assert response.status == 200
                ratio = (counted(proxy, "kept") - kept) / (counted(proxy, "received") - received)
                errors = ("ERROR", "FATAL")
                runs = proxy.telemetry.registry.get_sample_value(
                    "lipservice_analysis_runs_total", {"outcome": "heuristic"}
                )
            finally:
                await proxy.shutdown(drain_seconds=5.0)
            assert runs is not None and runs >= 3, runs  # fewer than planned on a busy machine
            assert ratio <= target, (runs, ratio)
            assert counted(proxy, "kept", errors) == counted(proxy, "received", errors) > 0

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))
