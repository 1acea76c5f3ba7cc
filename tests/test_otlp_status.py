"""The one status table (otlp/status.py): every error class of the tree has a row or is one that never
reaches a client, and each row says the same thing on HTTP, on gRPC and to the retry rules."""

from __future__ import annotations

import http.client

import grpc
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

import lipservice_proxy.exporters.retry  # noqa: F401 - its ExportError subclasses join the tree
from lipservice_proxy import errors
from lipservice_proxy.otlp import status
from lipservice_proxy.otlp.retry_info import retry_info_delay
from lipservice_proxy.otlp.status import ANSWERS, NEVER_ANSWERED, UNEXPECTED, Answer, answer_for, relayed
from tests.support.otlp_samples import trace_request
from tests.support.proxy import ProxyThread
from tests.support.sink import SinkThread


def tree(root: type[errors.LipserviceError]) -> list[type[errors.LipserviceError]]:
    """The package's error classes under `root` (classes the tests define left out)."""
    found = []
    pending = [root]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("lipservice_proxy."):
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def unanswered(classes: list[type[errors.LipserviceError]]) -> list[str]:
    """The classes a client could be answered with that have no row of their own."""
    return [
        cls.__name__
        for cls in classes
        if cls not in ANSWERS
        and cls is not errors.PassthroughError  # answered with the upstream's own status
        and not any(ancestor in NEVER_ANSWERED for ancestor in cls.__mro__)
        and cls not in (errors.LipserviceError, errors.RequestError)  # abstract: never raised as such
    ]


def test_every_error_class_has_a_row_or_never_reaches_a_client() -> None:
    missing = unanswered(tree(errors.LipserviceError))
    assert missing == [], f"add a row to otlp/status.ANSWERS (or to NEVER_ANSWERED) for {missing}"
    assert {errors.RetryableExportError, errors.Unauthenticated, errors.PassthroughError} <= set(
        tree(errors.LipserviceError)
    )


def test_a_new_error_without_a_row_is_caught() -> None:
    class Unanswered(errors.RequestError):
        pass

    class Unsendable(errors.PermanentExportError):  # stays with the exporters' retry loop
        pass

    assert unanswered([Unanswered, Unsendable]) == ["Unanswered"]


def test_every_class_named_in_the_errors_docstring_is_in_the_tree() -> None:
    names = {cls.__name__ for cls in tree(errors.LipserviceError)}
    documented = {word for word in (errors.__doc__ or "").split() if word.endswith(("Error", "Request"))}
    assert documented <= names


@pytest.mark.parametrize("cls", list(ANSWERS), ids=lambda cls: cls.__name__)
def test_each_row_is_consistent_with_the_otlp_retry_rules(cls: type[errors.LipserviceError]) -> None:
    answer = ANSWERS[cls]
    # What a client does with the answer must be the same over HTTP and over gRPC, and what the row says.
    assert status.http_retryable(answer.http_status) == answer.retryable
    # RequestTimeout is HTTP only (gRPC reads bodies itself): its gRPC code just labels the body
    if cls is not errors.RequestTimeout:
        assert status.grpc_retryable(answer.grpc_code, has_retry_info=answer.retryable) == answer.retryable
    assert answer.outcome and answer.outcome.isidentifier()


def test_subclasses_fall_back_to_the_nearest_row_and_bugs_to_unexpected() -> None:
    class Shed(errors.Backpressure):
        pass

    assert answer_for(Shed("full")) == ANSWERS[errors.Backpressure]
    assert answer_for(KeyError("bug")) == UNEXPECTED
    assert answer_for(errors.PayloadTooLarge("x")).grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("code", "retry_info", "http_status", "retryable"),
    [
        (grpc.StatusCode.UNAVAILABLE, False, 503, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, False, 504, True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, True, 429, True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, False, 413, False),
        (grpc.StatusCode.INVALID_ARGUMENT, False, 400, False),
        (grpc.StatusCode.UNAUTHENTICATED, False, 401, False),
        (grpc.StatusCode.PERMISSION_DENIED, False, 403, False),
        (grpc.StatusCode.UNIMPLEMENTED, False, 404, False),
        (grpc.StatusCode.INTERNAL, False, 500, False),
    ],
)
def test_an_upstream_status_is_relayed_as_an_otlp_http_server_would_say_it(
    code: grpc.StatusCode, retry_info: bool, http_status: int, retryable: bool
) -> None:
    assert relayed(code, retry_info) == Answer(http_status, code, retryable, code.name.lower())
    error = errors.PassthroughError(code.value[0], "upstream says", retry_after=1.5 if retry_info else None)
    assert answer_for(error).http_status == http_status
    assert status.retry_after(error) == (1.5 if retry_info and retryable else None)


def error_records(count: int) -> bytes:
    """ERROR records, which every policy keeps, so each one goes to the exporter's queue."""
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for i in range(count):
        records.add(severity_number=17).body.string_value = f"payment {i} failed"
    return request.SerializeToString()


def http_post(proxy: ProxyThread, path: str, body: bytes) -> tuple[int, status_pb2.Status]:
    status_code, _, answer = http_exchange(proxy, path, body)
    return status_code, answer


def http_exchange(proxy: ProxyThread, path: str, body: bytes) -> tuple[int, str | None, status_pb2.Status]:
    """The status, the Retry-After header and the google.rpc.Status body of one protobuf POST."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.running.ports["http"], timeout=10)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/x-protobuf"})
        response = connection.getresponse()
        return (
            response.status,
            response.getheader("Retry-After"),
            status_pb2.Status.FromString(response.read()),
        )
    finally:
        connection.close()


def test_both_receivers_answer_a_request_no_queue_can_hold_from_the_same_row() -> None:
    """A request over the queue's max_records was INVALID_ARGUMENT on gRPC but 413 on HTTP; the row
    makes it RESOURCE_EXHAUSTED (without RetryInfo: permanent) and `too_large` on both."""
    config = {"exporters": [{"type": "debug", "stream": "stderr", "queue": {"max_records": 5}}]}
    with ProxyThread(config) as proxy:
        status_code, body = http_post(proxy, "/v1/logs", error_records(10))
        assert (status_code, body.code) == (413, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
        assert "never fit" in body.message
        channel = grpc.insecure_channel(proxy.grpc_endpoint)
        export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
        with pytest.raises(grpc.RpcError) as refused:
            export(error_records(10), timeout=10)
        channel.close()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "never fit" in (refused.value.details() or "")
        assert dict(refused.value.trailing_metadata() or ()).keys().isdisjoint({"google.rpc.retryinfo-bin"})
        for protocol in ("http", "grpc"):
            labels = {"protocol": protocol, "outcome": "too_large"}
            assert proxy.metric("lipservice_receiver_requests_total", labels) == 1


def test_a_signal_without_passthrough_is_answered_and_counted_from_its_row() -> None:
    with ProxyThread({"exporters": [{"type": "debug", "stream": "stderr"}]}) as proxy:
        status_code, body = http_post(proxy, "/v1/metrics", b"")
        assert (status_code, body.code) == (404, grpc.StatusCode.UNIMPLEMENTED.value[0])
        labels = {"protocol": "http", "outcome": "not_accepted"}
        assert proxy.metric("lipservice_receiver_requests_total", labels) == 1


@pytest.mark.parametrize(
    ("code", "retry_after", "http_status", "header"),
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 2.0, 429, "2"),  # throttled: retry after the upstream's delay
        (grpc.StatusCode.INVALID_ARGUMENT, None, 400, None),
    ],
)
def test_an_upstream_refusal_reaches_passthrough_clients_as_the_upstream_said_it(
    code: grpc.StatusCode, retry_after: float | None, http_status: int, header: str | None
) -> None:
    traces = trace_request().SerializeToString()
    with SinkThread() as sink:
        sink.sink.fail_grpc(code, retry_after=retry_after, message="upstream refuses")
        config = {
            "passthrough": {"traces": f"http://{sink.sink.grpc_endpoint}"},
            "exporters": [{"type": "debug", "stream": "stderr"}],
        }
        with ProxyThread(config) as proxy:
            status_code, retry_header, body = http_exchange(proxy, "/v1/traces", traces)
            assert (status_code, retry_header, body.code) == (http_status, header, code.value[0])
            assert body.message == "upstream: upstream refuses"
            channel = grpc.insecure_channel(proxy.grpc_endpoint)
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            with pytest.raises(grpc.RpcError) as refused:
                export(traces, timeout=10)
            channel.close()
    assert (refused.value.code(), refused.value.details()) == (code, "upstream refuses")
    assert retry_info_delay(refused.value.trailing_metadata()) == retry_after
