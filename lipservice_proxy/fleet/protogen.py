"""Regenerate policy_pb2.py (and its .pyi) from proto/lipservice/v1/policy.proto.

    python -m lipservice_proxy.fleet.protogen        # needs grpcio-tools (the `test` extra)

Developer tooling, not used at run time: the generated module is committed, and
tests/test_fleet_proto.py fails when it no longer matches the .proto.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO_ROOT = PACKAGE_DIR.parents[1] / "proto"
PROTO_FILE = "lipservice/v1/policy.proto"
GENERATED = ("policy_pb2.py", "policy_pb2.pyi")


def run_protoc(*arguments: str) -> None:
    """protoc as bundled with grpcio-tools, with proto/ and the well-known types on the include path."""
    from grpc_tools import protoc

    includes = Path(protoc.__file__).resolve().parent / "_proto"
    status = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{includes}", *arguments, PROTO_FILE])
    if status != 0:
        raise RuntimeError(f"protoc failed on {PROTO_FILE} (exit status {status})")


def generate(target: Path) -> list[Path]:
    """Write the generated modules into `target`; returns their paths."""
    with tempfile.TemporaryDirectory() as scratch:
        run_protoc(f"--python_out={scratch}", f"--pyi_out={scratch}")
        produced = Path(scratch) / Path(PROTO_FILE).parent
        return [Path(shutil.copyfile(produced / name, target / name)) for name in GENERATED]


def main() -> int:
    for path in generate(PACKAGE_DIR):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
