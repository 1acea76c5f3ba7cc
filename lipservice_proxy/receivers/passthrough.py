"""Traces and metrics pass through untouched: bytes in, the same bytes out over OTLP/gRPC.

The upstream's answer (response bytes, or its status with details and RetryInfo) goes back to the
client as it came, so retry decisions stay with the client, as if it talked to the upstream itself.
"""

from __future__ import annotations

import grpc

from ..config import PassthroughConfig
from ..errors import PassthroughError
from ..otlp.grpc_channel import open_channel
from ..otlp.retry_info import STATUS_TRAILERS, retry_info_delay
from ..telemetry import Telemetry

EXPORT_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}


class Passthrough:
    def __init__(self, config: PassthroughConfig, telemetry: Telemetry) -> None:
        self._config = config
        self._telemetry = telemetry
        self._endpoints = {"traces": config.traces, "metrics": config.metrics}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        self._metadata = tuple((key.lower(), value) for key, value in config.headers.items())

    def enabled(self, signal: str) -> bool:
        return bool(self._endpoints.get(signal))

    async def start(self) -> None:
        for signal, endpoint in self._endpoints.items():
            if not endpoint:
                continue
            if endpoint not in self._channels:
                self._channels[endpoint] = open_channel(endpoint, self._config.tls)
            self._calls[signal] = self._channels[endpoint].unary_unary(
                EXPORT_METHODS[signal], request_serializer=None, response_deserializer=None
            )

    async def shutdown(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._calls.clear()

    async def forward(self, signal: str, body: bytes) -> bytes:
        call = self._calls[signal]
        try:
            response: bytes = await call(body, timeout=self._config.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            self._telemetry.passthrough_requests.labels(signal, exc.code().name.lower()).inc()
            # The upstream's status details travel back to the client: its retry decision is the upstream's.
            trailers = tuple(
                (key, value) for key, value in (exc.trailing_metadata() or ()) if key in STATUS_TRAILERS
            )
            raise PassthroughError(
                exc.code().value[0],
                exc.details() or exc.code().name,
                trailers,
                retry_after=retry_info_delay(trailers),
            ) from None
        self._telemetry.passthrough_requests.labels(signal, "success").inc()
        return response
