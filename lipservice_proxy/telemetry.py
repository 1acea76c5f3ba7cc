"""Every self-metric of the proxy, declared in one place.

Each running proxy owns one `Telemetry` (its own registry), so several proxies can live in one
process (tests) without sharing counters. Hot-path code never touches a metric per record: it
aggregates per batch and calls the `observe_*` helpers once per batch.

With `run --workers N` every process writes its values to files under PROMETHEUS_MULTIPROC_DIR
(prometheus_client's multiprocess mode, switched on before prometheus_client is first imported) and
the parent's admin endpoint serves their sum: counters and histograms add up, each gauge declares
how its per-process values combine (`multiprocess_mode`: queue depths and template counts add up,
the policy version is the highest any live process holds). Without that variable nothing changes:
each `Telemetry` keeps its values in memory, in its own registry.

Label values are bounded: `severity` is one of six names, `service` and `pattern` go through a
`TopN` that maps anything beyond its capacity to "other". Patterns are bounded as (service, pattern)
pairs, so `lipservice_pattern_records_total` holds at most (max_patterns + max_services + 1) x 6
series, not max_services x max_patterns x 6. Every other label comes from the config (`exporter`)
or a fixed set of outcomes and kinds.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from . import __version__
from .metricsdir import MULTIPROCESS_DIR_ENV

if TYPE_CHECKING:
    from .sampling.decision import BatchOutcome

OTHER = "other"


class TopN:
    """Admits at most `capacity` distinct keys; label values beyond them become "other".

    A key keeps the answer it was first given (counters must stay monotonic per series), so the
    first `capacity` distinct keys seen are the ones named. This bounds series; the analysis loop
    decides which patterns matter, the metrics only have to stay bounded and add up.
    """

    __slots__ = ("_capacity", "_lock", "_named")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._named: set[Hashable] = set()
        self._lock = threading.Lock()

    def admits(self, key: Hashable) -> bool:
        if key in self._named:
            return True
        with self._lock:
            if len(self._named) < self._capacity:
                self._named.add(key)
                return True
        return False

    def label(self, value: str) -> str:
        return value if self.admits(value) else OTHER

    def __len__(self) -> int:
        return len(self._named)


class Telemetry:
    """The proxy's metrics. Names and labels are a contract (README.md's metrics list, the Helm
    dashboard and alert rules)."""

    def __init__(self, *, max_services: int = 100, max_patterns: int = 200) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.services = TopN(max_services)
        self.patterns = TopN(max_patterns)
        # The labelled children observe_outcome increments, by their label values: `labels()` costs
        # ~1.7 us (label checks, a lock, a dict) and a batch touches dozens. Children are never
        # removed, and the labels are bounded by the TopN above, so this is as bounded as the series.
        self._outcome_children: dict[tuple[str, ...], tuple[Counter, ...]] = {}
        r = self.registry

        self.build_info = Info("lipservice_build", "Version of lipservice-proxy.", registry=r)
        self.build_info.info({"version": __version__})

        # records and bytes through the sampler
        labels = ["service", "severity"]
        self.records_received = Counter(
            "lipservice_log_records_received_total", "Log records received.", labels, registry=r
        )
        self.records_kept = Counter(
            "lipservice_log_records_kept_total", "Log records kept (forwarded).", labels, registry=r
        )
        self.records_dropped = Counter(
            "lipservice_log_records_dropped_total", "Log records dropped by policy.", labels, registry=r
        )
        self.records_unaccounted = Gauge(
            "lipservice_log_records_unaccounted",
            "Dropped log records no lipservice.count has accounted for yet (open tails).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.summary_records = Counter(
            "lipservice_log_tail_records_total",
            "Summary records sent, each carrying an open tail's dropped records as lipservice.count.",
            registry=r,
        )
        self.bytes_received = Counter(
            "lipservice_log_bytes_received_total",
            "Serialized size of log records received.",
            ["service"],
            registry=r,
        )
        self.bytes_kept = Counter(
            "lipservice_log_bytes_kept_total", "Serialized size of log records kept.", ["service"], registry=r
        )
        self.bytes_dropped = Counter(
            "lipservice_log_bytes_dropped_total",
            "Serialized size of log records dropped.",
            ["service"],
            registry=r,
        )
        self.pattern_records = Counter(
            "lipservice_pattern_records_total",
            'Log records per pattern and decision (top patterns; the rest as pattern="other").',
            ["service", "pattern", "decision"],
            registry=r,
        )
        self.patterns_active = Gauge(
            "lipservice_patterns_active",
            "Templates the pattern engine currently holds.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pattern_cache_entries = Gauge(
            "lipservice_pattern_cache_entries",
            "Entries in the pattern engine's lookup cache.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pattern_evictions = Counter(
            "lipservice_pattern_evictions_total", "Templates or cache entries evicted.", ["kind"], registry=r
        )
        self.pattern_merges = Counter(
            "lipservice_pattern_merges_total",
            "Templates merged into another (their pattern id now resolves to the survivor's).",
            registry=r,
        )
        self.pattern_shed_lines = Counter(
            "lipservice_pattern_shed_lines_total",
            "New log bodies not mined during a flood of new ones (pattern <UNMINED>).",
            registry=r,
        )
        self.pattern_state_saves = Counter(
            "lipservice_pattern_state_saves_total",
            "Writes of patterns.state_file by outcome (success, error).",
            ["outcome"],
            registry=r,
        )

        # receivers
        self.receiver_requests = Counter(
            "lipservice_receiver_requests_total",
            "Export requests received, by protocol (grpc, http) and outcome "
            "(success, partial, invalid, too_large, unsupported, timeout, refused, unauthenticated, "
            "not_accepted, error; "
            "connections cut: header_timeout, connection_limit).",
            ["protocol", "outcome"],
            registry=r,
        )
        self.receiver_connections = Gauge(
            "lipservice_receiver_connections",
            "Connections open on a receiver (http).",
            ["protocol"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.receiver_rejected_records = Counter(
            "lipservice_receiver_rejected_records_total",
            "Log records rejected as invalid (reported to the client as partial success).",
            ["protocol"],
            registry=r,
        )
        self.passthrough_requests = Counter(
            "lipservice_passthrough_requests_total",
            "Trace and metric requests forwarded untouched, by signal and outcome.",
            ["signal", "outcome"],
            registry=r,
        )

        # exporters and their queues
        self.export_requests = Counter(
            "lipservice_export_requests_total",
            "Send attempts upstream by outcome (success, retryable_error, permanent_error).",
            ["exporter", "outcome"],
            registry=r,
        )
        self.export_records = Counter(
            "lipservice_export_records_total",
            "Log records by final outcome upstream (sent, rejected by partial success, failed permanently "
            "or after retries ran out).",
            ["exporter", "outcome"],
            registry=r,
        )
        self.export_shutdown_dropped = Counter(
            "lipservice_export_shutdown_dropped_records_total",
            "Acknowledged records a memory queue still held at the shutdown deadline, lost (also counted "
            "as failed). With `run --workers N` the parent sums its workers' for its exit status.",
            ["exporter"],
            registry=r,
        )
        self.export_retries = Counter(
            "lipservice_export_retries_total",
            "Retries of a batch after a retryable error.",
            ["exporter"],
            registry=r,
        )
        self.export_latency = Histogram(
            "lipservice_export_latency_seconds",
            "Duration of one send attempt upstream.",
            ["exporter"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.export_queue_records = Gauge(
            "lipservice_export_queue_records",
            "Log records waiting in an exporter's queue.",
            ["exporter"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.export_queue_bytes = Gauge(
            "lipservice_export_queue_bytes",
            "Bytes waiting in an exporter's queue.",
            ["exporter"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.export_enqueue_refusals = Counter(
            "lipservice_export_enqueue_refusals_total",
            "Requests refused because an exporter queue was full (the client retries).",
            ["exporter"],
            registry=r,
        )
        self.export_disk_queue_bytes = Gauge(
            "lipservice_export_disk_queue_bytes",
            "Bytes held by an exporter's disk queue.",
            ["exporter"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.export_segments_replayed = Counter(
            "lipservice_export_segments_replayed_total",
            "Disk queue segments replayed after a restart.",
            ["exporter"],
            registry=r,
        )
        self.export_corrupt_entries = Counter(
            "lipservice_export_corrupt_entries_total",
            "Disk queue entries skipped because their checksum or framing was wrong.",
            ["exporter"],
            registry=r,
        )
        self.memory_limiter_refusals = Counter(
            "lipservice_memory_limiter_refusals_total",
            "Requests refused because the process was over its memory limit.",
            registry=r,
        )

        # policy and analysis
        self.policy_version = Gauge(
            "lipservice_policy_version",
            "Version of the policy in force.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.policy_reloads = Counter(
            "lipservice_policy_reloads_total",
            "Policy file reloads by outcome (success, error).",
            ["outcome"],
            registry=r,
        )
        self.analysis_runs = Counter(
            "lipservice_analysis_runs_total",
            "Analysis passes by outcome (llm, heuristic, fallback, error, skipped).",
            ["outcome"],
            registry=r,
        )
        self.llm_requests = Counter(
            "lipservice_llm_requests_total",
            "LLM calls by outcome (success, invalid, timeout, error, rate_limited, budget_exhausted).",
            ["outcome"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "lipservice_llm_tokens_total",
            "LLM tokens used, by kind (prompt, completion).",
            ["kind"],
            registry=r,
        )
        self.anomalies = Counter(
            "lipservice_anomalies_total",
            "Anomalies detected, by kind (spike, error_surge, new_pattern).",
            ["kind"],
            registry=r,
        )
        self.proposals = Counter(
            "lipservice_proposals_total",
            "Proposals of analysis.mode propose, by event (proposed, applied, rejected, superseded).",
            ["event"],
            registry=r,
        )
        self.boosts_declined = Counter(
            "lipservice_boosts_declined_total",
            "Anomaly boosts declined or ended early because anomaly_boost.max_share was spent, by kind.",
            ["kind"],
            registry=r,
        )

        # fleet mode and worker processes (lipservice_proxy/fleet)
        self.fleet_reports_sent = Counter(
            "lipservice_fleet_reports_sent_total",
            "Pattern reports a sampler sent to the analyzer, by outcome (success, failed: dropped, "
            "statistics are best effort).",
            ["outcome"],
            registry=r,
        )
        self.fleet_reports_received = Counter(
            "lipservice_fleet_reports_received_total",
            "Pattern reports the analyzer received, by outcome (accepted, invalid, unauthenticated).",
            ["outcome"],
            registry=r,
        )
        self.fleet_reported_records = Counter(
            "lipservice_fleet_reported_records_total",
            "Records in the reports the analyzer accepted, by kind (pattern: named in the report; other: "
            "summed over the patterns beyond a report's size limit).",
            ["kind"],
            registry=r,
        )
        self.fleet_connected = Gauge(
            "lipservice_fleet_connected",
            "1 while this sampler's policy stream from the analyzer is open (with --workers: open streams).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.fleet_samplers = Gauge(
            "lipservice_fleet_samplers",
            "Samplers whose policy stream this analyzer is serving.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.worker_restarts = Counter(
            "lipservice_worker_restarts_total",
            "Worker processes of `run --workers N` restarted after they exited unexpectedly.",
            registry=r,
        )

        directory = os.environ.get(MULTIPROCESS_DIR_ENV)
        self._exposed = r if directory is None else _every_process(directory, self.build_info)

    # ---- batch-level helpers ----

    def service_label(self, service: str) -> str:
        return self.services.label(service or "unknown")

    def pattern_label(self, service_label: str, pattern_id: str) -> str:
        return pattern_id if self.patterns.admits((service_label, pattern_id)) else OTHER

    def observe_outcome(self, outcome: BatchOutcome) -> None:
        """Add one batch's decisions to the record, byte and pattern counters."""
        for (service, severity), (received, kept) in outcome.records.items():
            counted, forwarded, dropped = self._children(
                ("records", self.service_label(service), severity),
                (self.records_received, self.records_kept, self.records_dropped),
            )
            if received:
                counted.inc(received)
            if kept:
                forwarded.inc(kept)
            if received > kept:
                dropped.inc(received - kept)
        for service, (bytes_received, bytes_kept) in outcome.bytes.items():
            counted, forwarded, dropped = self._children(
                ("bytes", self.service_label(service)),
                (self.bytes_received, self.bytes_kept, self.bytes_dropped),
            )
            counted.inc(bytes_received)
            forwarded.inc(bytes_kept)
            dropped.inc(bytes_received - bytes_kept)
        for (service, pattern_id, _severity), tally in outcome.patterns.items():
            label = self.service_label(service)
            pattern = self.pattern_label(label, pattern_id)
            for reason, count in tally.reasons.items():
                (records,) = self._children(("pattern", label, pattern, reason), (self.pattern_records,))
                records.inc(count)

    def _children(self, key: tuple[str, ...], counters: tuple[Counter, ...]) -> tuple[Counter, ...]:
        """The children of `counters` for the label values `key[1:]` (`key[0]` names the group),
        made by `labels()` once and kept."""
        children = self._outcome_children.get(key)
        if children is None:
            children = self._outcome_children[key] = tuple(counter.labels(*key[1:]) for counter in counters)
        return children

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric (of every process, in multiprocess mode)."""
        return generate_latest(self._exposed)


def _every_process(directory: str, build_info: Info) -> CollectorRegistry:
    """The values every process wrote under `directory`, plus the build info, which multiprocess
    mode cannot carry (an Info lives in its own process only)."""
    registry = CollectorRegistry(auto_describe=True)
    MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]  # prometheus_client
    registry.register(build_info)
    return registry
