"""Guards for the project's shape: imports go one way, modules stay small, and app components
use each other only through public names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The one place the library names the app: ``embviz.__getattr__`` re-exports the notebook
#: entry points lazily (nothing is imported until a user asks for them).
LAZY_REEXPORT = ROOT / "embviz" / "__init__.py"
MAX_LINES = 400


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py") if ".venv" not in p.parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module
            if node.level:  # relative: resolve against the file's package
                package = path.relative_to(ROOT).parent.parts
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, module])
            found.append((node.lineno, module))
    return found


def test_nothing_outside_the_app_imports_the_app():
    offenders = []
    for path in _python_files("embviz", "pipeline", "benchmarks"):
        rel = path.relative_to(ROOT)
        if rel.parts[:2] == ("embviz", "app") or path == LAZY_REEXPORT:
            continue
        offenders += [
            f"{rel}:{line} imports {m}"
            for line, m in _imports(path)
            if m == "embviz.app" or m.startswith("embviz.app.")
        ]
    assert not offenders, "the library must not import the app:\n" + "\n".join(offenders)


def test_the_library_never_imports_pipeline_or_apps():
    offenders = []
    for path in _python_files("embviz"):
        rel = path.relative_to(ROOT)
        offenders += [
            f"{rel}:{line} imports {m}"
            for line, m in _imports(path)
            if m.split(".")[0] in ("pipeline", "apps")
        ]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("folder", ["embviz", "pipeline", "apps"])
def test_modules_stay_small(folder):
    big = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in _python_files(folder)
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not big, f"modules over {MAX_LINES} lines:\n" + "\n".join(big)


def test_app_components_use_only_public_names_of_other_objects():
    """``other._x`` is another object's private state: ask its owner for a public method.

    Allowed: ``self._x`` / ``cls._x``, names of classes and functions defined in the same file,
    dunder names, and a library class that the file extends (``class X(Base)`` or
    ``type(name, (Base,), ...)``): a subclass overriding its base's hook (Panel designs'
    ``_resources``) is the library's own extension point.
    """
    offenders = []
    for path in _python_files("embviz/app"):
        tree = ast.parse(path.read_text(), filename=str(path))
        local = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef)}
        local |= {
            b.id
            for n in ast.walk(tree)
            if isinstance(n, ast.ClassDef)
            for b in n.bases
            if isinstance(b, ast.Name)
        }
        local |= {
            b.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
            and getattr(n.func, "id", None) == "type"
            and len(n.args) == 3
            and isinstance(n.args[1], ast.Tuple)
            for b in n.args[1].elts
            if isinstance(b, ast.Name)
        }
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")):
                continue
            if node.attr.startswith("__"):
                continue
            if node.attr.startswith("_repr_") and node.attr.endswith("_"):
                continue  # IPython's display protocol (_repr_html_, _repr_mimebundle_): public
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ({"self", "cls"} | local):
                continue
            offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not offenders, "private members read from outside:\n" + "\n".join(offenders)
