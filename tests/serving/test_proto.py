"""The committed gRPC modules are exactly what grpcio-tools makes of serving/recommend.proto."""

from __future__ import annotations

import shutil
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]


def test_generated_modules_match_the_proto(tmp_path):
    (tmp_path / "serving").mkdir()
    shutil.copy(ROOT / "serving" / "recommend.proto", tmp_path / "serving")
    status = protoc.main(["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}",
                          f"--grpc_python_out={tmp_path}",
                          str(tmp_path / "serving" / "recommend.proto")])
    assert status == 0
    for name in ("recommend_pb2.py", "recommend_pb2_grpc.py"):
        fresh = (tmp_path / "serving" / name).read_text()
        assert fresh == (ROOT / "serving" / name).read_text(), f"{name} is stale: run make proto"
