"""The persistent queue: a checksummed segment log per exporter under `queue.directory`, replayed at start."""

from .backlog import DiskBacklog, queue_directory

__all__ = ["DiskBacklog", "queue_directory"]
