"""The rooms' import rules, checked by walking every import statement of the installed packages.

Every ``import`` / ``from ... import`` is read from the source (module level and inside functions
alike: a function-level import is still an edge, it only hides a loop until the function runs).
Rules (DESIGN.md, "Layout" and "Dependency direction"):

- no import loop between modules;
- packages point one way: ``core`` <- ``activations`` <- {``probes``, ``sae``} <- ``experiments``
  (``kernels`` imports no undertow package but ``kernels``; ``sae`` may use ``probes``);
- inside ``activations`` the rooms point one way: ``models`` and ``store`` at the bottom, ``engine``
  above both, ``cluster`` on top (``activations.errors`` is shared by all four);
- no private name (``_x``) is imported from another room or another package.

``python tests/test_import_graph.py`` prints the same figures as a table (files per folder, the
longest module, loops, cross-room private imports).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "kernels", "activations", "probes", "sae", "experiments")
# what each package may import (besides itself)
ALLOWED = {
    "core": set(),
    "kernels": set(),
    "activations": {"core", "kernels"},
    "probes": {"core", "kernels", "activations"},
    "sae": {"core", "kernels", "activations", "probes"},
    "experiments": {"core", "kernels", "activations", "probes", "sae"},
}
# rooms of activations: what each may import (besides itself and activations.errors)
ROOMS_ALLOWED = {"models": set(), "store": set(), "engine": {"models", "store"},
                 "cluster": {"models", "store", "engine"}}


@dataclass
class Graph:
    modules: dict[str, Path] = field(default_factory=dict)
    edges: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    private: list[tuple[str, str, str]] = field(default_factory=list)  # (importer, module, name)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["undertow", *parts])


def _resolve(node: ast.ImportFrom, me: str, is_pkg: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = me.split(".") if is_pkg else me.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def build(root: Path = ROOT) -> Graph:
    g = Graph()
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            g.modules[module_name(path, root)] = path
    for me, path in g.modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("undertow."):
                        g.edges[me].add(_nearest(g, a.name))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(node, me, is_pkg)
                if not target.startswith("undertow."):
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if sub in g.modules:  # `from pkg import module`
                        g.edges[me].add(sub)
                        continue
                    g.edges[me].add(_nearest(g, target))
                    if a.name.startswith("_") and a.name != "__version__":
                        g.private.append((me, target, a.name))
        g.edges[me].discard(me)
    return g


def _nearest(g: Graph, name: str) -> str:
    while name not in g.modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def package_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def room_of(module: str) -> str | None:
    """``models`` / ``engine`` / ``store`` / ``cluster`` for a module inside one, else None."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] == "activations" and parts[2] in ROOMS_ALLOWED:
        return parts[2]
    return None


def loops(g: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(g.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(g.edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in g.modules:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(g.edges.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _is_parent_init(importer: str, target: str) -> bool:
    """A package ``__init__`` re-exporting its own modules, or a module importing its own package."""
    return target.startswith(importer + ".") or importer.startswith(target + ".")


def direction_violations(g: Graph) -> list[str]:
    bad = []
    for me, targets in g.edges.items():
        for t in targets:
            a, b = package_of(me), package_of(t)
            if a != b and b not in ALLOWED.get(a, set()):
                bad.append(f"{me} -> {t} (package {a} may not import {b})")
            ra, rb = room_of(me), room_of(t)
            if ra and rb and ra != rb and rb not in ROOMS_ALLOWED[ra]:
                bad.append(f"{me} -> {t} (room {ra} may not import {rb})")
            if ra and b == "activations" and rb is None and t not in ("undertow.activations.errors",) \
                    and not _is_parent_init(me, t):
                bad.append(f"{me} -> {t} (a room imports activations' top level)")
    return sorted(bad)


def private_crossings(g: Graph) -> list[str]:
    """Private names imported from another package, or from another room of ``activations``."""
    out = []
    for me, target, name in g.private:
        if package_of(me) != package_of(target) or (room_of(me) or "") != (room_of(target) or ""):
            out.append(f"{me} imports {name} from {target}")
    return sorted(out)


def test_no_import_loops():
    assert loops(build()) == []


def test_packages_and_rooms_point_one_way():
    assert direction_violations(build()) == []


def test_no_private_name_crosses_a_room():
    assert private_crossings(build()) == []


def test_the_walker_sees_function_level_loops(tmp_path):
    """The checks can fail: a loop hidden inside a function, and a private import across rooms."""
    for rel, text in {
        "core/__init__.py": "",
        "activations/__init__.py": "",
        "activations/models/__init__.py": "",
        "activations/models/a.py": "def f():\n    from undertow.activations.engine.b import _g\n",
        "activations/engine/__init__.py": "",
        "activations/engine/b.py": "from undertow.activations.models.a import f\n",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    g = build(tmp_path)
    assert loops(g) == [["undertow.activations.engine.b", "undertow.activations.models.a"]]
    assert direction_violations(g) == [
        "undertow.activations.models.a -> undertow.activations.engine.b (room models may not import engine)"]
    assert private_crossings(g) == ["undertow.activations.models.a imports _g from undertow.activations.engine.b"]


def report(root: Path = ROOT) -> str:
    """Files per folder, the longest module, loops and private crossings: the rooms at a glance."""
    g = build(root)
    lines = []
    folders: dict[str, list[Path]] = defaultdict(list)
    for path in g.modules.values():
        folders[str(path.parent.relative_to(root))].append(path)
    for folder in sorted(folders):
        paths = folders[folder]
        longest = max(paths, key=lambda p: len(p.read_text().splitlines()))
        lines.append(f"{folder:32s} {len(paths):3d} files {sum(len(p.read_text().splitlines()) for p in paths):6d} lines"
                     f"  longest {longest.name} ({len(longest.read_text().splitlines())})")
    found = loops(g)
    lines.append(f"import loops: {len(found)}" + "".join(f"\n  {' <-> '.join(c)}" for c in found))
    cross = private_crossings(g)
    lines.append(f"private names imported across packages or rooms: {len(cross)}" + "".join(f"\n  {c}" for c in cross))
    bad = direction_violations(g)
    lines.append(f"imports against the direction: {len(bad)}" + "".join(f"\n  {b}" for b in bad))
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT))
