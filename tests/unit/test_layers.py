"""The floors of the house (ARCHITECTURE.md, "Floors"): imports run one way,
from a higher floor to a lower one, never back up.

Pure: it parses every ``.py`` under the package folders with ``ast`` and
imports none of them. Every import counts, wherever it stands: at module
level, inside a function, or under ``TYPE_CHECKING`` (a deferred import is
still a dependency; deferring it only hides a cycle from the interpreter).

Three rules, each failure naming the offending import as ``file:line``:
1. no import runs up a floor;
2. folders on one floor do not import each other (the composition root joins
   them), except on the ground floor, where ``wire/``, ``storage/`` and
   ``plumbing/`` may depend on each other one way only (no cycle between
   folders: ``storage`` stands on ``wire`` for ``Unavailable``);
3. no import cycle between modules, inside a folder or across folders.

A known exception is a (file, imported module) pair in KNOWN_EXCEPTIONS,
with the reason; an exception that no longer occurs fails the test too, so
the list only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Top floor first. A folder on a floor may import any folder on a lower floor.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("liveroom", "examples"),  # the composition root and the CLI; the worked backend
    ("llm_agents", "clients", "loadtest"),  # clients/: the SDKs (clients/python)
    ("edge", "cdn"),
    ("room_router",),
    ("state_versions",),
    # The ground floor: the wire protocol, the stores' shared plumbing, and
    # small leaves of no domain (rate-limited logging).
    ("wire", "storage", "plumbing"),
)
FLOOR_OF = {folder: i for i, floor in enumerate(FLOORS) for folder in floor}
GROUND = len(FLOORS) - 1

# (file relative to the root, imported module) -> why it is allowed for now.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True, slots=True)
class Import:
    file: str  # relative to the root
    line: int
    source: str  # the importing module
    target: str  # the imported module, as precisely as the tree resolves it

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source} imports {self.target}"


def package_folders() -> list[str]:
    """Every top-level folder that is a Python package (tests excepted)."""
    return sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p
            for folder in package_folders()
            for p in sorted((ROOT / folder).rglob("*.py"))}


def resolve(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of ``name`` that is a module of the tree (``name``
    itself if none: a third-party or standard module)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return name


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    rel = str(path.relative_to(ROOT))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from pkg import mod`` imports the module pkg.mod.
            names = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                     for alias in node.names]
        for name in names:
            target = resolve(name, modules)
            if target in modules and target != module:
                yield Import(rel, node.lineno, module, target)


@cache
def all_imports() -> tuple[Import, ...]:
    modules = all_modules()
    found = {imp for mod, path in modules.items() for imp in imports_of(mod, path, modules)}
    return tuple(sorted(found, key=lambda i: (i.file, i.line, i.target)))


def folder(module: str) -> str:
    return module.split(".", 1)[0]


def is_known(imp: Import) -> bool:
    return (imp.file, imp.target) in KNOWN_EXCEPTIONS


def test_every_package_folder_has_a_floor() -> None:
    unplaced = [f for f in package_folders() if f not in FLOOR_OF]
    assert not unplaced, f"give these folders a floor in FLOORS: {unplaced}"


def test_no_import_runs_up_a_floor() -> None:
    bad = [imp for imp in all_imports()
           if FLOOR_OF[folder(imp.target)] < FLOOR_OF[folder(imp.source)] and not is_known(imp)]
    assert not bad, "imports that run up a floor:\n" + "\n".join(map(str, bad))


def test_no_sideways_import_above_the_ground_floor() -> None:
    bad = [imp for imp in all_imports()
           if folder(imp.target) != folder(imp.source)
           and FLOOR_OF[folder(imp.target)] == FLOOR_OF[folder(imp.source)] != GROUND
           and not is_known(imp)]
    assert not bad, ("imports between folders of one floor (let the composition root "
                     "join them):\n" + "\n".join(map(str, bad)))


def test_the_ground_folders_depend_on_each_other_one_way() -> None:
    edges: dict[str, dict[str, Import]] = {}
    for imp in all_imports():
        a, b = folder(imp.source), folder(imp.target)
        if a != b and FLOOR_OF[a] == FLOOR_OF[b] == GROUND and not is_known(imp):
            edges.setdefault(a, {}).setdefault(b, imp)
    cycles = [c for c in strongly_connected(edges) if len(c) > 1]
    assert not cycles, "ground folders that import each other in a cycle:\n" + "\n".join(
        f"  {imp}" for members in cycles for src in sorted(members)
        for dst, imp in sorted(edges.get(src, {}).items()) if dst in members)


def test_no_import_cycle_between_modules() -> None:
    edges: dict[str, dict[str, Import]] = {}
    for imp in all_imports():
        if not is_known(imp):
            edges.setdefault(imp.source, {}).setdefault(imp.target, imp)
    cycles = [c for c in strongly_connected(edges) if len(c) > 1]
    report = []
    for members in cycles:
        report.append("a cycle through " + ", ".join(sorted(members)) + ":")
        report.extend(f"  {imp}" for src in sorted(members)
                      for dst, imp in sorted(edges.get(src, {}).items()) if dst in members)
    assert not cycles, "\n".join(report)


def test_known_exceptions_still_occur() -> None:
    seen = {(imp.file, imp.target) for imp in all_imports()}
    gone = [key for key in KNOWN_EXCEPTIONS if key not in seen]
    assert not gone, f"remove these from KNOWN_EXCEPTIONS, they no longer occur: {gone}"


def strongly_connected(edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    nodes = sorted(set(edges) | {t for targets in edges.values() for t in targets})
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def test_the_checker_finds_a_cycle_and_orders_the_floors() -> None:
    """The checker itself, on a made-up graph: a cycle is found, a chain is not."""
    imp = Import("x.py", 1, "a", "b")
    assert strongly_connected({"a": {"b": imp}, "b": {"a": imp}}) == [{"a", "b"}]
    assert all(len(c) == 1 for c in strongly_connected({"a": {"b": imp}, "b": {"c": imp}}))
    assert FLOOR_OF["wire"] > FLOOR_OF["edge"] > FLOOR_OF["liveroom"]
