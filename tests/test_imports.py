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
            "load_recipe",
            "open",
            "open_dataset",
        ]
    )
    for name in embviz.__all__:
        assert hasattr(embviz, name)


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


def test_every_module_has_a_docstring():
    for top in ("embviz", "pipeline", "apps"):
        for path in (ROOT / top).rglob("*.py"):
            assert ast.get_docstring(ast.parse(path.read_text())), (
                f"{path.relative_to(ROOT)} has no module docstring"
            )
