"""Generate the gRPC Python code (with type stubs) from proto/ into pcbook/pb/.

protoc writes sibling imports as top-level modules (``import memory_message_pb2``); they are
rewritten as relative imports so that the generated code lives inside the package.
"""

from __future__ import annotations

import re
import sys
from importlib import resources

from grpc_tools import protoc

from pcbook.paths import PB_DIR, PROTO_DIR

_SIBLING_IMPORT = re.compile(r"^import (\w+_pb2(?:_grpc)?) as ", re.MULTILINE)
_SIBLING_FROM = re.compile(r"^from (\w+_pb2) import ", re.MULTILINE)


def is_stale() -> bool:
    """True when a generated module is missing or older than its proto."""
    for proto in PROTO_DIR.glob("*.proto"):
        out = PB_DIR / f"{proto.stem}_pb2.py"
        if not out.exists() or out.stat().st_mtime < proto.stat().st_mtime:
            return True
    return False


def generate() -> None:
    protos = sorted(str(p.name) for p in PROTO_DIR.glob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={PB_DIR}",
        f"--pyi_out={PB_DIR}",
        f"--grpc_python_out={PB_DIR}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed: see the messages above")
    for path in PB_DIR.glob("*_pb2*.py*"):
        text = path.read_text()
        fixed = _SIBLING_IMPORT.sub(r"from . import \1 as ", text)
        fixed = _SIBLING_FROM.sub(r"from .\1 import ", fixed)
        if fixed != text:
            path.write_text(fixed)


def main() -> None:
    generate()
    print(f"generated {len(list(PB_DIR.glob('*_pb2.py')))} proto modules in {PB_DIR}", file=sys.stderr)


if __name__ == "__main__":
    main()
