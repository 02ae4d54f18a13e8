"""The package's layers: no module imports from a layer above its own, and no two folders import each other.

Bottom to top (README's layout table says the same):
  0  pcbook/paths.py, pcbook/codegen.py, pcbook/pb/      paths and generated code
  1  pcbook/service/                                     the gRPC service, its clients, the registry client
  2  pcbook/stack/                                       processes, nginx, etcd, ports, readiness, process specs
  3  pcbook/discovery/                                   thick client, xDS control plane, nginx_sync
  4  pcbook/measure/                                     load driver, load generator, probes, statistics
  5  pcbook/stage/                                       the lesson model, the stage, StepContext, results
  6  pcbook/bench/                                       `make bench`
  7  pcbook/lessons/                                     one module per lesson
  8  pcbook/workbook/, pcbook/server.py, pcbook/client.py  the index, runner, CLI, notebooks, deploy, soak
Imports under `if TYPE_CHECKING:` count too: a type is a dependency of the reader's.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from pcbook.paths import ROOT

PACKAGE = ROOT / "pcbook"
LAYERS = {
    "paths": 0, "codegen": 0, "pb": 0,
    "service": 1,
    "stack": 2,
    "discovery": 3,
    "measure": 4,
    "stage": 5,
    "bench": 6,
    "lessons": 7,
    "workbook": 8, "server": 8, "client": 8,
}


def room(module: str) -> str:
    """`pcbook.stack.procs` -> "stack"; `pcbook.paths` -> "paths"."""
    return module.split(".")[1]


def imports() -> list[tuple[str, str, int]]:
    """(importing file's room, imported module, line) for every pcbook import of the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[1] == "pb":
            continue
        here = rel.parts[1] if len(rel.parts) > 2 else rel.stem
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names
                                         if node.module == "pcbook"]
            else:
                continue
            for name in names:
                if name.startswith("pcbook.") and name.count(".") >= 1:
                    found.append((here, name, node.lineno))
    return found


def test_every_room_of_the_package_has_a_layer() -> None:
    rooms = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert rooms - {"__main__"} == set(LAYERS), rooms ^ set(LAYERS)


def test_no_module_imports_from_a_layer_above() -> None:
    upward = [f"pcbook/{here}: imports {name} (line {line}): layer {LAYERS[here]} -> {LAYERS[room(name)]}"
              for here, name, line in imports() if LAYERS[room(name)] > LAYERS[here]]
    assert upward == [], "\n".join(upward)


def test_no_two_folders_import_each_other() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for here, name, _ in imports():
        if room(name) != here:
            edges[here].add(room(name))
    cycles = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if a in edges.get(b, set())})
    assert cycles == [], cycles


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    # The rule itself: a lesson module importing the runner would be caught.
    assert LAYERS[room("pcbook.workbook.runner")] > LAYERS["lessons"]
    assert any(here == "stage" and room(name) == "measure" for here, name, _ in imports())
