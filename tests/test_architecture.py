"""The package's import structure: no module imports another in a loop, not even from inside a
function, and no layer imports one above it (README: Architecture)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "converter"
# The layers, lowest first; a module may import its own layer and those below.
LAYERS = {
    "converter.source": 1,
    "converter.write": 2,
    "converter.read": 2,
    "converter.integrity": 3,
    "converter.cli": 4, "converter.sample": 4, "converter.sample_video": 4, "converter.plot": 4, "converter.torch": 4,
    "converter": 4,  # the package itself: re-exports everything
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _layer(module: str) -> int:
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len, default=None)
    return LAYERS[best] if best is not None and (best != "converter" or module == "converter") else 0


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of the package that ``module`` imports, at any depth of its code."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                name = f"{target}.{alias.name}"
                found.add(name if name in modules else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in modules and m != module}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_another_in_a_loop():
    graph = _graph()
    assert len(graph) > 40 and graph["converter.read.torch"]  # the scan found the package
    assert _cycles(graph) == []


def test_no_layer_imports_a_higher_one():
    upward = sorted(f"{m} -> {d}" for m, deps in _graph().items() for d in deps
                    if _layer(d) > _layer(m) and not (m == "converter" or m.endswith("__init__")))
    assert upward == []


def test_the_hand_written_zarr_layer_stands_alone():
    """converter.zarrlite needs nothing of the package outside itself: it knows Zarr, not the store."""
    outside = sorted(f"{m} -> {d}" for m, deps in _graph().items() if m.startswith("converter.zarrlite")
                     for d in deps if not d.startswith("converter.zarrlite"))
    assert outside == []
    users = {m for m, deps in _graph().items() for d in deps if d.startswith("converter.zarrlite") and not m.startswith("converter.zarrlite")}
    assert {"converter.read.engine", "converter.write.store", "converter.damage"} <= users


def test_the_checker_sees_a_loop_and_an_upward_import():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert _layer("converter.write.plan") > _layer("converter.schema")
    assert _layer("converter.integrity.verify") > _layer("converter.write.plan")


def test_every_kind_of_scan_names_parts_that_exist():
    """What each kind names by string (dataset, device batches, loaders, scorer, oracle, overview) imports and exists."""
    import importlib.util

    from converter.kinds import KINDS, kind_of, kind_of_source

    roles = {"dataset", "device", "loaders", "score", "oracle", "overview"}
    for kind in KINDS:
        assert set(kind.parts) == roles, kind.name
        for role in roles:
            needs = {"dataset": "torch", "device": "torch", "loaders": "torch", "overview": "matplotlib"}.get(role)
            if needs is None or importlib.util.find_spec(needs) is not None:
                assert callable(kind.part(role)), (kind.name, role)
        assert kind_of({"schema_version": kind.schema_version}) is kind
        assert kind_of_source((*kind.data_keys[1:], kind.stimulus)) is kind


def test_the_wheel_ships_every_subpackage():
    """pyproject.toml lists the packages by hand (``converter.schemas`` lives in ``schemas/``): each
    folder of ``converter/`` with an ``__init__.py`` is in the list, or a plain ``pip install .``
    installs a package that fails on import, while the editable install the tests use still works."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert folders - listed == set()
