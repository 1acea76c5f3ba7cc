"""Switch prometheus_client to multiprocess mode for `run --workers N`, before anything imports it.

prometheus_client picks where values live (memory, or files shared between processes) once, when it
is first imported, from PROMETHEUS_MULTIPROC_DIR. The parent sets it to a fresh directory (stale
files of an earlier run would be added to this one's counters); the workers inherit it. This module
imports nothing heavy, so the CLI can call it first.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def enable_multiprocess_metrics() -> Path:
    """Create the shared metrics directory (removed at exit) and point this process and its children at it."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("multiprocess metrics must be enabled before prometheus_client is imported")
    directory = Path(tempfile.mkdtemp(prefix="lipservice-metrics-"))
    atexit.register(shutil.rmtree, directory, True)
    os.environ[MULTIPROCESS_DIR_ENV] = str(directory)
    return directory
