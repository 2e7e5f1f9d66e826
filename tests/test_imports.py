"""Guard tests: cheap ``import embviz``, a pinned public API, one-way imports, module docstrings."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import embviz

ROOT = Path(__file__).resolve().parent.parent
HEAVY = [
    "torch",
    "transformers",
    "umap",
    "panel",
    "pydeck",
    "holoviews",
    "datashader",
    "timm",
    "sklearn",
    "dask",
]


def test_import_embviz_is_cheap():
    code = f"import sys, embviz; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import embviz pulled in: {out.stdout.strip()}"


def test_public_api_is_pinned():
    assert sorted(embviz.__all__) == sorted(
        [
            "ConfigError",
            "Dataset",
            "DatasetError",
            "EmbvizError",
            "Explorer",
            "ModelError",
            "Recipe",
            "__version__",
            "deck",
            "explore",
            "load_recipe",
            "open",
            "open_dataset",
            "points",
        ]
    )
    for name in embviz.__all__:
        assert hasattr(embviz, name)


def test_notebook_entry_points_load_the_app_only_when_asked_for():
    code = (
        "import sys, embviz; before = 'embviz.app' in sys.modules; f = embviz.points; "
        "print(before, 'embviz.app.notebook' in sys.modules, f.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "embviz.app.notebook"]
    assert embviz.deck.__module__ == embviz.explore.__module__ == "embviz.app.notebook"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_imports_go_one_way():
    for path in (ROOT / "embviz").rglob("*.py"):
        bad = _imports(path) & {"pipeline", "apps"}
        assert not bad, (
            f"{path.relative_to(ROOT)} imports {bad}: embviz must not import pipeline or apps"
        )
    for path in (ROOT / "pipeline").rglob("*.py"):
        assert "apps" not in _imports(path), f"{path.relative_to(ROOT)} imports apps"


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``from ... import`` in ``path`` names (relative ones resolved)."""
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(ROOT).with_suffix("").parts)[:-1]
    if node.level > 1:
        package = package[: -(node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def test_the_library_never_imports_the_app():
    """embviz.app sits above the library; ``embviz/__init__.py`` names it only as strings
    (its lazy ``__getattr__``), which is not an import."""
    for path in (ROOT / "embviz").rglob("*.py"):
        if (ROOT / "embviz" / "app") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [_absolute(path, node)]
                names += [f"{names[0]}.{a.name}" for a in node.names]
            else:
                continue
            bad = [n for n in names if n == "embviz.app" or n.startswith("embviz.app.")]
            assert not bad, f"{path.relative_to(ROOT)}:{node.lineno} imports {bad[0]}"


def test_every_module_has_a_docstring():
    for top in ("embviz", "pipeline", "apps"):
        for path in (ROOT / top).rglob("*.py"):
            assert ast.get_docstring(ast.parse(path.read_text())), (
                f"{path.relative_to(ROOT)} has no module docstring"
            )
