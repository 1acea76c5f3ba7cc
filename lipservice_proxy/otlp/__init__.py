"""What the receivers and the exporters share about OTLP, so that neither imports the other.

- `json_codec`: OTLP/JSON <-> protobuf messages (receivers, the OTLP/HTTP and debug exporters, replay).
- `grpc_channel`: client gRPC channels and their options (the OTLP/gRPC exporter, the passthrough).
- `retry_info`: reading and writing `google.rpc.RetryInfo` in a gRPC status's trailers.
- `status`: the one status table, error -> HTTP status, gRPC code, retryable, outcome label, and
  OTLP's rules for which upstream statuses are retryable.
"""
