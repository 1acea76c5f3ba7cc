"""lipservice-proxy: an OTLP sidecar that samples logs in flight by pattern."""

__version__ = "0.1.0"
