"""The committed fleet messages (lipservice_proxy/fleet/policy_pb2.py) are current with the .proto, and
the protobuf runtime the package allows can load them.

protoc (grpcio-tools) compiles proto/lipservice/v1/policy.proto again; the descriptor the fresh module
embeds must equal the committed one's (the rest of the text, such as the version header, may differ
between grpcio-tools releases), so an edit of the .proto without regenerating fails here
(`python -m lipservice_proxy.fleet.protogen` regenerates). The generated module refuses a protobuf
runtime older than the protoc that wrote it: pyproject's lower bound must admit it.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from google.protobuf import descriptor_pb2

from lipservice_proxy.fleet import policy_pb2
from lipservice_proxy.fleet.protogen import GENERATED, PACKAGE_DIR, generate

REPO = Path(__file__).resolve().parents[1]


def _embedded_descriptor(module: Path) -> descriptor_pb2.FileDescriptorProto:
    found = re.search(r"AddSerializedFile\((b'.*?')\)\n", module.read_text())
    assert found is not None, f"{module}: no serialized descriptor"
    return descriptor_pb2.FileDescriptorProto.FromString(ast.literal_eval(found.group(1)))


def test_committed_messages_match_the_proto(tmp_path: Path) -> None:
    written = generate(tmp_path)
    assert [path.name for path in written] == list(GENERATED)
    fresh = _embedded_descriptor(tmp_path / "policy_pb2.py")
    committed = _embedded_descriptor(PACKAGE_DIR / "policy_pb2.py")
    assert committed == fresh, "policy_pb2.py is stale: run `python -m lipservice_proxy.fleet.protogen`"
    assert committed.SerializeToString() == policy_pb2.DESCRIPTOR.serialized_pb  # and it is what loads
    assert "class PolicySnapshot(_message.Message):" in (PACKAGE_DIR / "policy_pb2.pyi").read_text()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_protobuf_runtime_range_admits_the_generated_code() -> None:
    generated = (PACKAGE_DIR / "policy_pb2.py").read_text()
    gencode = re.search(r"^# Protobuf Python Version: ([\d.]+)$", generated, re.MULTILINE)
    assert gencode is not None
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (requirement,) = [d for d in dependencies if d.startswith("protobuf")]
    lower = re.search(r">=\s*([\d.]+)", requirement)
    upper = re.search(r"<\s*(\d+)", requirement)
    assert lower is not None and upper is not None, requirement
    assert _version(lower.group(1)) >= _version(gencode.group(1)), (
        f"{requirement} admits runtimes older than the gencode ({gencode.group(1)}), which refuse to load it"
    )
    assert _version(gencode.group(1))[0] < int(upper.group(1))
