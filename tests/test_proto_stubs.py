"""The committed stubs in proto/isthmus/v1 are exactly what grpcio-tools makes of the .proto files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PROTO = Path(__file__).resolve().parent.parent / "proto"


def test_committed_stubs_match_the_proto_files(tmp_path: Path) -> None:
    grpc_tools = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is a dev dependency")
    sources = sorted((PROTO / "isthmus" / "v1").glob("*.proto"))
    assert sources, "no .proto files found"
    shutil.copytree(PROTO / "isthmus" / "v1", tmp_path / "isthmus" / "v1",
                    ignore=shutil.ignore_patterns("*.py", "*.pyi", "__pycache__"))
    args = ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}"] + [str(tmp_path / "isthmus" / "v1" / s.name) for s in sources]
    assert grpc_tools.main(args) == 0
    generated = sorted(p.name for p in (tmp_path / "isthmus" / "v1").iterdir() if p.suffix in (".py", ".pyi"))
    committed = sorted(p.name for p in (PROTO / "isthmus" / "v1").iterdir() if p.suffix in (".py", ".pyi"))
    assert generated == committed, "stub files differ in name: run `make gen`"
    stale = [n for n in generated
             if (tmp_path / "isthmus" / "v1" / n).read_text() != (PROTO / "isthmus" / "v1" / n).read_text()]
    assert not stale, f"stubs drifted from the .proto files: {stale}; run `make gen` and commit"


def test_stubs_import_under_the_isthmus_namespace() -> None:
    from isthmus.v1 import admin_pb2_grpc, agent_pb2_grpc, api_pb2_grpc

    assert hasattr(api_pb2_grpc, "SiteServiceStub")
    assert hasattr(agent_pb2_grpc, "AgentServiceStub")
    assert hasattr(admin_pb2_grpc, "AgentAdminStub")
