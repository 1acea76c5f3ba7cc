"""TLS on both receivers (certificate and key files, optional client certificates) and toward upstreams
(a private CA, plaintext only when the endpoint or `tls.insecure` says so), with the real OTel SDK
exporters as clients and a real TLS sink as the upstream."""

from __future__ import annotations

import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.sdk._logs import Logger, LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from .support.certs import self_signed_certificate
from .support.otlp_samples import log_request
from .support.proxy import ProxyThread, sink_exporter
from .support.sdk import emit
from .support.sink import SinkThread
from .support.waiting import wait_until

LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
ERRORS = [{"body": f"payment {i} declined", "severity": "ERROR"} for i in range(10)]  # always kept


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("server-tls"))


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("client-tls"))


@pytest.fixture(scope="module")
def sink() -> Iterator[SinkThread]:
    with SinkThread() as running:
        yield running


@contextmanager
def sdk_logger_with(exporter: Any) -> Iterator[Logger]:
    provider = LoggerProvider(resource=Resource.create({"service.name": "tls-test"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    try:
        yield provider.get_logger("tests.tls")
    finally:
        provider.shutdown()


def raw_grpc_export(endpoint: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = grpc.secure_channel(endpoint, credentials) if credentials else grpc.insecure_channel(endpoint)
    with channel:
        call = channel.unary_unary(LOGS_METHOD, request_serializer=None, response_deserializer=None)
        try:
            call(log_request(records=1, services=1).SerializeToString(), timeout=5)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def https_post(url: str, context: ssl.SSLContext | None) -> int:
    request = urllib.request.Request(
        url,
        data=log_request(records=1, services=1).SerializeToString(),
        method="POST",
        headers={"Content-Type": "application/x-protobuf"},
    )
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return int(response.status)


def tls_proxy_config(sink: SinkThread, cert: tuple[Path, Path], **tls: Any) -> dict[str, Any]:
    return {
        "receivers": {"tls": {"cert_file": str(cert[0]), "key_file": str(cert[1]), **tls}},
        "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
    }


# ---- receivers ----


@pytest.mark.openssl
def test_grpc_receiver_over_tls_with_the_sdk_exporter(
    sink: SinkThread, server_cert: tuple[Path, Path]
) -> None:
    sink.sink.reset()
    with ProxyThread(tls_proxy_config(sink, server_cert)) as proxy:
        port = proxy.running.ports["grpc"]
        credentials = grpc.ssl_channel_credentials(root_certificates=server_cert[0].read_bytes())
        exporter = GrpcLogExporter(endpoint=f"https://localhost:{port}", credentials=credentials, timeout=5)
        with sdk_logger_with(exporter) as logger:
            emit(logger, ERRORS)
        assert len(sink.wait_for_records(len(ERRORS))) == len(ERRORS)
        # a plaintext client cannot talk to it, and one that does not trust the certificate neither
        assert raw_grpc_export(f"127.0.0.1:{port}", None) == grpc.StatusCode.UNAVAILABLE
        assert (
            raw_grpc_export(f"localhost:{port}", grpc.ssl_channel_credentials())
            == grpc.StatusCode.UNAVAILABLE
        )
    assert sink.sink.log_record_count == len(ERRORS)


@pytest.mark.openssl
def test_http_receiver_over_tls_with_the_sdk_exporter(
    sink: SinkThread, server_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests lets these variables override a session's own `verify`, i.e. the SDK's certificate_file
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    sink.sink.reset()
    with ProxyThread(tls_proxy_config(sink, server_cert)) as proxy:
        url = f"https://127.0.0.1:{proxy.running.ports['http']}/v1/logs"
        exporter = HttpLogExporter(endpoint=url, certificate_file=str(server_cert[0]), timeout=5)
        with sdk_logger_with(exporter) as logger:
            emit(logger, ERRORS)
        assert len(sink.wait_for_records(len(ERRORS))) == len(ERRORS)
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plaintext to the TLS port
            https_post(url.replace("https://", "http://"), None)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            https_post(url, ssl.create_default_context())  # the system CAs do not vouch for it


@pytest.mark.openssl
def test_client_certificates_are_required_when_a_client_ca_is_set(
    sink: SinkThread, server_cert: tuple[Path, Path], client_cert: tuple[Path, Path]
) -> None:
    config = tls_proxy_config(sink, server_cert, client_ca_file=str(client_cert[0]))
    with ProxyThread(config) as proxy:
        grpc_endpoint = f"localhost:{proxy.running.ports['grpc']}"
        trust = server_cert[0].read_bytes()
        anonymous = grpc.ssl_channel_credentials(root_certificates=trust)
        assert raw_grpc_export(grpc_endpoint, anonymous) == grpc.StatusCode.UNAVAILABLE
        identified = grpc.ssl_channel_credentials(
            root_certificates=trust,
            private_key=client_cert[1].read_bytes(),
            certificate_chain=client_cert[0].read_bytes(),
        )
        assert raw_grpc_export(grpc_endpoint, identified) == grpc.StatusCode.OK

        url = f"https://localhost:{proxy.running.ports['http']}/v1/logs"
        context = ssl.create_default_context(cafile=server_cert[0])
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            https_post(url, context)
        context.load_cert_chain(client_cert[0], client_cert[1])
        assert https_post(url, context) == 200


def start_failure(tmp_path: Path, config_text: str) -> str:
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    result = subprocess.run(
        [sys.executable, "-m", "lipservice_proxy.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.openssl
def test_bad_certificate_files_stop_the_proxy_with_a_clear_error(
    tmp_path: Path, server_cert: tuple[Path, Path], client_cert: tuple[Path, Path]
) -> None:
    ports = "receivers: {grpc: {endpoint: '127.0.0.1:0'}, http: {endpoint: '127.0.0.1:0'}, "
    cert, key = server_cert
    missing = start_failure(tmp_path, ports + f"tls: {{cert_file: {tmp_path}/nope.crt, key_file: {key}}}}}\n")
    assert "receivers.tls.cert_file" in missing and "nope.crt" in missing and "cannot read" in missing
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    malformed = start_failure(tmp_path, ports + f"tls: {{cert_file: {garbage}, key_file: {key}}}}}\n")
    assert "are not a PEM certificate and its private key" in malformed
    mismatched = start_failure(
        tmp_path, ports + f"tls: {{cert_file: {cert}, key_file: {client_cert[1]}}}}}\n"
    )
    assert "are not a PEM certificate and its private key" in mismatched
    assert key.read_text() not in mismatched  # never echo key material


# ---- exporters ----


@pytest.mark.openssl
def test_exporter_reaches_a_tls_upstream_through_its_private_ca(server_cert: tuple[Path, Path]) -> None:
    with SinkThread(tls=server_cert) as tls_sink:
        port = tls_sink.sink.grpc_endpoint.rpartition(":")[2]
        exporter = sink_exporter(f"localhost:{port}", tls={"ca_file": str(server_cert[0])})
        exporter["endpoint"] = f"https://localhost:{port}"
        with ProxyThread({"exporters": [exporter]}) as proxy:
            with sdk_logger_with(
                GrpcLogExporter(endpoint=f"http://{proxy.grpc_endpoint}", insecure=True)
            ) as log:
                emit(log, ERRORS)
            assert len(tls_sink.wait_for_records(len(ERRORS))) == len(ERRORS)


def test_plaintext_upstreams_need_an_explicit_http_scheme_or_insecure_flag(sink: SinkThread) -> None:
    address = sink.sink.grpc_endpoint  # a plaintext gRPC upstream
    sink.sink.reset()
    explicit = sink_exporter(address, name="explicit", tls={"insecure": True})
    explicit["endpoint"] = address  # bare host:port: TLS unless tls.insecure
    assumed_tls = sink_exporter(address, name="assumed_tls")
    assumed_tls["endpoint"] = address
    assumed_tls["retry"] = {"initial_interval": "50ms", "max_interval": "100ms", "max_elapsed": "2s"}
    with ProxyThread({"exporters": [explicit, assumed_tls]}) as proxy:
        with sdk_logger_with(GrpcLogExporter(endpoint=f"http://{proxy.grpc_endpoint}", insecure=True)) as log:
            emit(log, ERRORS)
        assert len(sink.wait_for_records(len(ERRORS))) == len(ERRORS)  # delivered once: by `explicit`
        wait_until(
            lambda: (
                proxy.metric(
                    "lipservice_export_requests_total",
                    {"exporter": "assumed_tls", "outcome": "retryable_error"},
                )
                > 0
            ),
            what="the TLS handshake against a plaintext upstream to fail",
        )
        assert (
            proxy.metric(
                "lipservice_export_requests_total", {"exporter": "assumed_tls", "outcome": "success"}
            )
            == 0
        )
    assert sink.sink.log_record_count == len(ERRORS)
