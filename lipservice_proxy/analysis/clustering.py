"""Families of near-duplicate templates: TF-IDF over template words, DBSCAN with cosine distance.

Near-duplicates are templates the miner kept apart that a reader would call one statement
("Accepted password for <*> from <IP>" / "Accepted publickey for <*> from <IP>"). Showing the LLM
one family instead of each variant keeps the prompt short and its answers consistent. DBSCAN
needs no cluster count and leaves outliers as noise: a noise template stays a family of its own
and is counted as such. Placeholders count as words, so "<IP>" vs "<NUM>" in the same slot still
tells templates apart a little.

scikit-learn (with scipy) takes a process that imports it to ~130 MiB, which a sidecar should not
carry between passes. So the proxy runs `cluster_in_child`: this module as a short-lived child
process (`python -m lipservice_proxy.analysis.clustering`, templates in and labels out as JSON),
killed if it overruns; the long-running process never imports scikit-learn.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

TOKEN_PATTERN = r"<[^<>\s]{1,32}>|[^\W\d_]{2,}"  # placeholders, and words of two letters or more
DEFAULT_EPS = 0.3  # cosine distance: templates sharing most of their weighted words
MAX_CLUSTERED = 2000  # DBSCAN on cosine distance is quadratic; the rest stay singletons
WORKING_MEMORY_MIB = 4


@dataclass(frozen=True, slots=True)
class Clustering:
    labels: tuple[int, ...]  # family number per template, numbered from 0 in order of first member
    noise: int  # templates DBSCAN called noise (each a singleton family)
    unclustered: int  # templates past MAX_CLUSTERED, left as singletons without clustering

    @property
    def families(self) -> int:
        return len(set(self.labels))


def cluster_templates(
    templates: Sequence[str], *, eps: float = DEFAULT_EPS, max_clustered: int = MAX_CLUSTERED
) -> Clustering:
    """Group templates (most important first: only the first `max_clustered` are clustered)."""
    clustered = list(templates[:max_clustered])
    raw = _dbscan_labels(clustered, eps)
    raw.extend([-1] * (len(templates) - len(clustered)))
    labels: list[int] = []
    numbering: dict[int, int] = {}
    next_family = 0
    for label in raw:
        if label >= 0 and label in numbering:
            labels.append(numbering[label])
            continue
        if label >= 0:
            numbering[label] = next_family
        labels.append(next_family)
        next_family += 1
    noise = sum(1 for label in raw[: len(clustered)] if label < 0)
    return Clustering(tuple(labels), noise, len(templates) - len(clustered))


def singletons(templates: Sequence[str]) -> Clustering:
    """Every template its own family: the answer when clustering is unavailable."""
    return Clustering(tuple(range(len(templates))), len(templates), 0)


def _dbscan_labels(templates: list[str], eps: float) -> list[int]:
    """DBSCAN labels (-1 for noise); all noise when there is nothing to compare."""
    if len(templates) < 2:
        return [-1] * len(templates)
    from sklearn import config_context
    from sklearn.cluster import DBSCAN
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(token_pattern=TOKEN_PATTERN, lowercase=True, sublinear_tf=True)
    try:
        matrix = vectorizer.fit_transform(templates)
    except ValueError:  # no word in any template (all placeholders or punctuation)
        return [-1] * len(templates)
    model = DBSCAN(eps=eps, min_samples=2, metric="cosine", algorithm="brute")
    # The distance matrix is built in chunks of at most this many MiB (scikit-learn's default is
    # 1 GiB, i.e. all 2,000 x 2,000 at once): the child's peak drops by ~60 MiB, its time does not move.
    with config_context(working_memory=WORKING_MEMORY_MIB):
        return [int(label) for label in model.fit_predict(matrix)]


class ClusteringFailed(RuntimeError):
    """The clustering child failed or overran; the caller treats every template as its own family."""


class ClusteringSkipped(ClusteringFailed):
    """The clustering child would not fit under the container's memory limit, so it was not started
    (an out-of-memory kill could take the proxy with it)."""


CHILD_TIME_LIMIT = 120.0  # seconds; DBSCAN over MAX_CLUSTERED templates takes a few
# The child's peak: ~130 MiB once numpy, scipy and scikit-learn are imported, ~141 MiB at
# MAX_CLUSTERED templates (bench/README.md), plus a margin.
CHILD_MEMORY_BYTES = 160 * 1024 * 1024


async def cluster_in_child(templates: Sequence[str], *, headroom: int | None = None) -> Clustering:
    """`cluster_templates` in a child process, so this process never loads scikit-learn.

    `headroom`: bytes left under the container's memory limit (memlimit.cgroup_headroom); below
    CHILD_MEMORY_BYTES the child is not started and ClusteringSkipped is raised.
    """
    if headroom is not None and headroom < CHILD_MEMORY_BYTES:
        raise ClusteringSkipped(
            f"clustering skipped: {headroom // 2**20} MiB left under the container's memory limit, "
            f"the clustering process needs ~{CHILD_MEMORY_BYTES // 2**20} MiB"
        )
    # The child is spawned by the standard library in a worker thread, not by the event loop:
    # uvloop's subprocess support forks, and a fork() runs gRPC's fork handlers, which print a
    # non-JSON line to stderr ("Other threads are currently calling into gRPC, skipping fork()
    # handlers") while the receivers are busy. subprocess with close_fds=False uses posix_spawn
    # (a vfork-style clone that runs no fork handlers); Python opens its descriptors
    # non-inheritable, so none leaks into the child.
    child = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", __name__],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        close_fds=False,
    )
    try:
        output, errors = await asyncio.to_thread(
            child.communicate, orjson.dumps(list(templates)), CHILD_TIME_LIMIT
        )
    except subprocess.TimeoutExpired:
        child.kill()
        await asyncio.to_thread(child.communicate)
        raise ClusteringFailed(f"clustering took longer than {CHILD_TIME_LIMIT:g}s") from None
    except asyncio.CancelledError:  # the proxy is stopping: the child must not outlive the pass
        child.kill()
        raise
    if child.returncode != 0:
        last_line = errors.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ClusteringFailed(f"clustering exited with {child.returncode}: {last_line[0]}")
    data = orjson.loads(output)
    return Clustering(tuple(data["labels"]), data["noise"], data["unclustered"])


def _main() -> None:
    result = cluster_templates(orjson.loads(sys.stdin.buffer.read()))
    sys.stdout.buffer.write(
        orjson.dumps({"labels": result.labels, "noise": result.noise, "unclustered": result.unclustered})
    )


if __name__ == "__main__":
    _main()
