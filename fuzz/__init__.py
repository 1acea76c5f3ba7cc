"""Fuzz targets and hostile payloads for the OTLP decoders and receivers (see fuzz/README.md)."""
