"""`lipservice-proxy patterns [--format tsv|summary] FILE|-`: name the pattern of every line of a log.

One online pass with the engine the sampler uses. `tsv` prints `pattern_id<TAB>template` per input
line as the engine saw it at that moment (so a template that generalised later shows its earlier
form on the earlier lines); `summary` prints one `count<TAB>pattern_id<TAB>template` line per final
pattern, most frequent first, after the whole input was read. The engine is the sampler's, its
mining budget included: a file that is a flood of new lines (see PatternEngine) shows <UNMINED> where
the sampler would have stamped it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections import Counter
from collections.abc import Iterator
from typing import BinaryIO

from .engine import PatternEngine
from .model import Pattern

_FLUSH_EVERY = 512


DESCRIPTION = "Print the pattern of each log line (one line in, one pattern out)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's arguments, on its own parser or on the `lipservice-proxy` subparser."""
    parser.add_argument(
        "--format", choices=("tsv", "summary"), default="tsv", help="output format (default: tsv)"
    )
    parser.add_argument("file", metavar="FILE|-", help="log file with one body per line, or - for stdin")


def _lines(stream: BinaryIO) -> Iterator[str]:
    for raw in stream:
        yield raw.rstrip(b"\r\n").decode("utf-8", "replace")


def _tsv(engine: PatternEngine, lines: Iterator[str], out: BinaryIO) -> None:
    chunk: list[str] = []
    for line in lines:
        pattern = engine.add(line)
        chunk.append(f"{pattern.id}\t{pattern.template}\n")
        if len(chunk) >= _FLUSH_EVERY:
            out.write("".join(chunk).encode())
            chunk.clear()
    out.write("".join(chunk).encode())


def _summary(engine: PatternEngine, lines: Iterator[str], out: BinaryIO) -> None:
    counts: Counter[str] = Counter()
    seen: dict[str, Pattern] = {}
    for line in lines:
        pattern = engine.add(line)
        counts[pattern.id] += 1
        seen[pattern.id] = pattern
    final: Counter[Pattern] = Counter()
    for pattern_id, count in counts.items():
        final[engine.resolve(pattern_id) or seen[pattern_id]] += count
    rows = sorted(final.items(), key=lambda item: (-item[1], item[0].template))
    out.write("".join(f"{count}\t{p.id}\t{p.template}\n" for p, count in rows).encode())


def run(argv: list[str], stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> int:
    """Parse `argv` and execute; returns the exit code (0 ok, 1 unreadable input, 2 bad usage)."""
    parser = argparse.ArgumentParser(prog="lipservice-proxy patterns", description=DESCRIPTION)
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error
        return int(exc.code or 0)
    return execute(args, stdin, stdout)


def execute(args: argparse.Namespace, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> int:
    """Name the pattern of every input line; `args` holds `format` and `file`."""
    out = stdout if stdout is not None else sys.stdout.buffer
    source: contextlib.AbstractContextManager[BinaryIO]
    try:
        if args.file == "-":
            source = contextlib.nullcontext(stdin if stdin is not None else sys.stdin.buffer)
        else:
            source = open(args.file, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        print(f"lipservice-proxy patterns: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    write = _summary if args.format == "summary" else _tsv
    try:
        with source as stream:
            write(PatternEngine(), _lines(stream), out)
            out.flush()
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, and keep the interpreter from complaining
        # again when it flushes stdout at exit
        if stdout is None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"lipservice-proxy patterns: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
