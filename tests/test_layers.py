"""The layering of docs/ARCHITECTURE.md holds: every ``import`` in tsekit/ (module- or function-level) goes to its
own package or a lower layer, no packages import each other in a cycle, and no system imports another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tsekit"

# bottom to top, as docs/ARCHITECTURE.md's layer table; "tsekit" is the package's own __init__ (TsekitError, warn)
LAYERS = [
    ("tsekit", "lock", "jobs", "checkpoint", "typed_config"),
    ("data",),
    ("corpora", "pretrained"),
    ("metrics", "codec"),
    ("models",),
    ("train", "infer"),
    ("report", "cli", "__main__"),
]
LAYER = {unit: depth for depth, units in enumerate(LAYERS) for unit in units}


def unit_of(parts: tuple[str, ...]) -> str:
    """The package (or top-level module) a dotted tsekit name below ``tsekit`` belongs to."""
    return parts[0] if parts else "tsekit"


def public_face(tree: ast.Module) -> ast.FunctionDef | None:
    """The module-level ``__getattr__`` of a package's ``__init__``: tsekit's re-exports its entry point
    (``tsekit.load_model``) from the top layer on first use. Not a dependency of the bottom layer: nothing below
    reaches it, and ``test_the_public_face_reexports_only_entry_points`` keeps it to that."""
    return next((node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"), None)


def imports(path: Path, root: Path = ROOT) -> list[tuple[str, ...]]:
    """The dotted tsekit names (without the leading ``tsekit``) that ``path`` imports, anywhere in it (tsekit
    uses no relative imports) but in the package's public face (``public_face``)."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    face = public_face(tree) if path == root / "__init__.py" else None
    skipped = set(ast.walk(face)) if face else set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from tsekit import checkpoint` imports the module tsekit/checkpoint.py, `from tsekit import warn` a name
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = tuple(name.split("."))
            if parts[0] != "tsekit":
                continue
            parts = parts[1:]
            if parts and not ((root / parts[0]).is_dir() or (root / f"{parts[0]}.py").is_file()):
                parts = ()  # a name defined in tsekit/__init__.py
            found.append(parts)
    return found


def module_parts(path: Path, root: Path = ROOT) -> tuple[str, ...]:
    parts = path.relative_to(root).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def package_edges(root: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> the files importing it (other units only)."""
    edges: dict[str, dict[str, list[str]]] = {}
    for path in sorted(root.rglob("*.py")):
        source = unit_of(module_parts(path, root))
        for target in {unit_of(parts) for parts in imports(path, root)} - {source}:
            edges.setdefault(source, {}).setdefault(target, []).append(str(path.relative_to(root.parent)))
    return edges


def find_cycle(edges: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in edges.get(node, {}):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_package_has_a_layer():
    units = {unit_of(module_parts(path)) for path in ROOT.rglob("*.py")}
    assert units <= set(LAYER), f"packages missing from LAYERS (and docs/ARCHITECTURE.md): {units - set(LAYER)}"


def test_no_package_imports_a_higher_layer():
    upward = [f"{source} -> {target} ({', '.join(files)})" for source, targets in package_edges().items()
              for target, files in targets.items() if LAYER[target] > LAYER[source]]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_no_cycle_between_packages():
    edges = package_edges()
    cycle = find_cycle(edges)
    assert cycle is None, "package cycle " + " -> ".join(cycle) + ": " + "; ".join(
        f"{a} -> {b} in {edges[a][b][0]}" for a, b in zip(cycle, cycle[1:], strict=False))


def test_the_public_face_reexports_only_entry_points():
    """tsekit/__init__.py's ``__getattr__`` imports only the Python entry point, and ``import tsekit`` alone imports
    neither it nor torch (the CLI starts without them)."""
    import subprocess
    import sys

    face = public_face(ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8")))
    assert face is not None
    modules = {node.module for node in ast.walk(face) if isinstance(node, ast.ImportFrom)}
    assert modules == {"tsekit.infer.model"}
    loaded = subprocess.run([sys.executable, "-c", "import sys, tsekit; print(sorted(sys.modules))"],
                            capture_output=True, text=True, check=True).stdout
    assert "'torch'" not in loaded and "tsekit.infer" not in loaded


def test_no_system_imports_another():
    systems = {path.stem for path in (ROOT / "models").glob("*.py")} - {"__init__", "registry"}
    crossing = []
    for path in [*(ROOT / "models").glob("*.py"), *(ROOT / "models" / "layers").glob("*.py")]:
        own = path.stem if path.parent.name == "models" else None
        for parts in imports(path):
            if parts[:1] == ("models",) and len(parts) > 1 and parts[1] in systems and parts[1] != own:
                crossing.append(f"{path.relative_to(ROOT.parent)} imports tsekit.{'.'.join(parts)}")
    crossing = [line for line in crossing if not line.startswith("tsekit/models/__init__.py")]  # the registry's list
    assert not crossing, "\n".join(crossing)


def test_the_checks_see_a_cycle_and_a_crossing(tmp_path):
    """The helpers above catch what they are for: a cycle through function-level imports, an upward import."""
    package = tmp_path / "tsekit"
    for name, text in {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/reader.py": "def f():\n    from tsekit.codec.tokens import g\n",
        "codec/__init__.py": "",
        "codec/tokens.py": "from tsekit.data import reader\n",
    }.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    edges = package_edges(package)
    assert edges == {"data": {"codec": ["tsekit/data/reader.py"]}, "codec": {"data": ["tsekit/codec/tokens.py"]}}
    assert find_cycle(edges) in (["codec", "data", "codec"], ["data", "codec", "data"])
    assert LAYER["codec"] > LAYER["data"]  # so data -> codec is the upward edge the layer test names


@pytest.mark.parametrize("text, expected", [
    ("from tsekit import checkpoint as ckpt\n", [("checkpoint",)]),
    ("from tsekit import TsekitError, warn\n", [(), ()]),
    ("import tsekit.models.layers.transformer\n", [("models", "layers", "transformer")]),
    ("def f():\n    from tsekit.pretrained.whisper import load_whisper\n", [("pretrained", "whisper", "load_whisper")]),
    ("from . import sibling\nimport numpy\n", []),
])
def test_imports_are_read_at_every_level(tmp_path, text, expected):
    path = tmp_path / "m.py"
    path.write_text(text)
    assert imports(path) == expected
