"""The atheris (libFuzzer) harness: `python -m fuzz.run TARGET [CORPUS_DIR] [libFuzzer flags]`.

TARGET is one of fuzz.targets.TARGETS (protobuf, json, inflate, wirescan). The project's own modules are
instrumented for coverage; a corpus directory that is empty or missing is seeded from
fuzz.payloads.seeds(). Any exception the target lets through is a crash, written by libFuzzer as
crash-<hash> in the working directory. See fuzz/README.md for the runs to make.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["lipservice_proxy", "fuzz"]):
    from fuzz import payloads, targets


def seed(corpus: Path, name: str) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    for index, (target, data) in enumerate(payloads.seeds()):
        if target == name:
            (corpus / f"seed-{index}").write_bytes(data)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        sys.exit(f"usage: python -m fuzz.run {{{','.join(targets.TARGETS)}}} [CORPUS_DIR] [libFuzzer flags]")
    name = sys.argv.pop(1)
    corpus = next((Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")), None)
    if corpus is not None and not corpus.is_file():  # a file argument replays one input (a crash)
        seed(corpus, name)
    atheris.Setup(sys.argv, targets.TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
