"""Profile a running target with py-spy during the measured window, and say where the time goes.

py-spy samples from outside (ptrace) without pausing the target (`--nonblocking`), so the figures of a
profiled run stay close to an unprofiled one. It writes collapsed stacks ("frame;frame;leaf count"),
which speedscope or flamegraph.pl draw; `summarise` ranks functions by the samples in which they
were the innermost Python frame (own time) or anywhere on the stack (inclusive), and source lines by
own time. Time in C code called from Python is charged to the calling Python
function; time in threads that run no Python (gRPC's core) is not sampled at all.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SAMPLES_PER_SECOND = 200
_LINE_NUMBER = re.compile(r":\d+\)$")


def py_spy_path() -> str | None:
    """py-spy next to this interpreter (the venv) first, then on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which("py-spy", path=search)


def start_profile(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    executable = py_spy_path()
    if executable is None:
        raise FileNotFoundError("py-spy is not installed (.venv/bin/pip install py-spy)")
    return subprocess.Popen(
        [
            executable,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            str(SAMPLES_PER_SECOND),
            "--duration",
            str(max(1, round(seconds))),
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@dataclass(frozen=True)
class ProfileSummary:
    samples: int
    own: list[tuple[str, float]]  # function, share of samples in which it was the innermost frame
    inclusive: list[tuple[str, float]]  # function, share of samples in which it was on the stack
    lines: list[tuple[str, float]]  # source line, share of samples as the innermost frame

    def as_dict(self) -> dict[str, object]:
        def rounded(rows: list[tuple[str, float]]) -> list[list[object]]:
            return [[name, round(share, 4)] for name, share in rows]

        return {
            "samples": self.samples,
            "own": rounded(self.own),
            "inclusive": rounded(self.inclusive),
            "lines": rounded(self.lines),
        }


def summarise(collapsed: str, top: int = 20) -> ProfileSummary:
    """Rank functions and lines from py-spy's raw output ("frame;frame;leaf count" per line, where a
    frame reads "function (file:line)"; the first frame names the process)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")[1:]
        if not frames:
            continue
        functions = [_LINE_NUMBER.sub(")", frame) for frame in frames]
        own[functions[-1]] += samples
        lines[frames[-1]] += samples
        for function in set(functions):
            inclusive[function] += samples

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, samples / total) for name, samples in counter.most_common(top)] if total else []

    return ProfileSummary(total, shares(own), shares(inclusive), shares(lines))
