"""`lipservice-proxy patterns`: one pattern per input line, a summary, odd input, and a closed pipe."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from lipservice_proxy.patterns.command import run

REPO = Path(__file__).resolve().parents[1]
LOG = (
    b"lease renewed for 10.0.0.1 (node-1.example.net)\n"
    b"lease renewed for 10.0.0.2 ()\r\n"
    b"\xff\xfe not utf-8 at all 42\n"
    b"\n"
    b"lease renewed for 10.0.0.3 (n3.example.org)\n"
)


def invoke(argv: list[str], stdin: bytes = b"") -> tuple[int, list[str]]:
    out = io.BytesIO()
    code = run(argv, stdin=io.BytesIO(stdin), stdout=out)
    return code, out.getvalue().decode().splitlines()


def test_tsv_prints_one_pattern_per_line_as_seen_at_that_moment(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(LOG)
    code, rows = invoke([str(log)])
    assert code == 0
    assert len(rows) == 5
    fields = [row.split("\t") for row in rows]
    assert all(len(f) == 2 and len(f[0]) == 16 for f in fields)
    assert [f[1] for f in fields] == [
        "lease renewed for <IP> (<HOST>)",
        "lease renewed for <*>",
        "\ufffd\ufffd not utf-<NUM> at all <NUM>",
        "<EMPTY>",
        "lease renewed for <*>",
    ]
    # the template generalised on the second line; its id stayed the one the first line was stamped with
    assert fields[0][0] == fields[1][0] == fields[4][0] != fields[2][0]


def test_summary_counts_final_patterns_most_frequent_first() -> None:
    code, rows = invoke(["--format", "summary", "-"], stdin=LOG)
    assert code == 0
    fields = [row.split("\t") for row in rows]
    assert fields[0][0] == "3" and fields[0][2] == "lease renewed for <*>"
    assert sum(int(f[0]) for f in fields) == 5
    assert [int(f[0]) for f in fields] == sorted((int(f[0]) for f in fields), reverse=True)


def test_unreadable_input_and_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke([str(tmp_path / "missing.log")])[0] == 1
    assert "cannot read" in capsys.readouterr().err
    assert invoke([str(tmp_path)])[0] == 1
    assert invoke(["--format", "xml", "-"])[0] == 2
    assert invoke([])[0] == 2


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_bytes(b"".join(b"GET /item/%d 200 in %d ms\n" % (i, i % 97) for i in range(200_000)))
    with log.open("rb") as stdin:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from lipservice_proxy.patterns.command import run; sys.exit(run(['-']))",
            ],
            cwd=REPO,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    assert process.stdout is not None and process.stderr is not None
    try:
        first = process.stdout.readline()
        process.stdout.close()  # what `| head -1` does
        code = process.wait(timeout=60)
        errors = process.stderr.read()
    finally:
        process.kill()
        process.stderr.close()
    assert first.endswith(b"\tGET <PATH> <NUM> in <DURATION>\n")
    assert code == 0
    assert errors == b""
