"""The package as a user gets it: one top-level ``embviz`` (pipeline, app entry and presets inside),
built as a wheel and run from an empty folder, away from this checkout."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Repository folders installed under another name (pyproject's package-dir).
MAPPED = {"pipeline": "embviz.pipeline", "apps": "embviz.apps", "config": "embviz.presets"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_for_the_wheel():
    """The package list is written by hand (find cannot rename pipeline/): a new subpackage
    missing from it would be left out of the wheel."""
    tool = _pyproject()["tool"]["setuptools"]
    folders = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "embviz").rglob("__init__.py")
    }
    folders |= {name for folder, name in MAPPED.items() if (ROOT / folder / "__init__.py").exists()}
    assert set(tool["packages"]) == folders
    assert tool["package-dir"] == {name: folder for folder, name in MAPPED.items()}
    assert _pyproject()["project"]["scripts"] == {"embviz": "embviz.pipeline.cli:main"}


def _imported(path: Path) -> set[str]:
    """Module names ``path`` imports, relative imports resolved (``from .x import y``: ``x.y``)."""
    rel = path.relative_to(ROOT).parts[:-1]
    package = [MAPPED[rel[0]], *rel[1:]] if rel and rel[0] in MAPPED else list(rel)
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


def test_only_the_app_and_its_entry_import_embviz_app():
    """The command line serves through Panel's plugin, by name: no pipeline step, CLI command
    or library module imports ``embviz.app`` (``embviz/__init__`` names it lazily)."""
    files = [*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "embviz").rglob("*.py")]
    for path in files:
        if "app" in path.relative_to(ROOT).parts[1:-1] or path == ROOT / "embviz/__init__.py":
            continue
        bad = {n for n in _imported(path) if n == "embviz.app" or n.startswith("embviz.app.")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_nothing_imports_a_top_level_pipeline():
    for top in ("embviz", "pipeline", "apps", "tests", "benchmarks"):
        for path in (ROOT / top).rglob("*.py"):
            bad = {n for n in _imported(path) if n.split(".")[0] == "pipeline"}
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: use embviz.pipeline"


# -- the real wheel ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a clean copy of the sources, installed alone into a folder."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    # A copy, so no build/ left in the checkout by an older layout can leak into the wheel.
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("embviz", "pipeline", "apps", "config"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q"]
    build = [*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(work)]
    subprocess.run(build, check=True, cwd=work, timeout=300)
    (wheel,) = work.glob("embviz-*.whl")
    target = work / "site"
    install = [*pip, "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, cwd=work, timeout=300)
    return target


@pytest.fixture
def empty(tmp_path):
    """An empty working folder: no config/, apps/ or pipeline/ to fall back on."""
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def _run(target: Path, cwd: Path, *args: str, timeout: float = 600) -> str:
    """Run ``args`` with only the installed wheel importable as embviz; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


@pytest.mark.slow
def test_the_wheel_holds_one_package_and_its_files(installed, empty):
    assert sorted(p.name for p in installed.iterdir() if not p.name.endswith(".dist-info")) == [
        "bin",
        "embviz",
    ]
    for part in (
        "pipeline/cli.py",
        "apps/explorer.py",
        "presets/demo.yaml",
        "presets/reports.yaml",
    ):
        assert (installed / "embviz" / part).is_file(), part
    code = (
        "import os, sys, embviz, embviz.pipeline.cli, embviz.app.routes\n"
        f"assert {str(ROOT)!r} not in [os.path.realpath(p or '.') for p in sys.path]\n"
        "print(embviz.__file__)\n"
        "try:\n    import pipeline\nexcept ImportError:\n    print('no pipeline')\n"
    )
    out = _run(installed, empty, sys.executable, "-c", code).split()
    assert Path(out[0]).is_relative_to(installed) and out[1:] == ["no", "pipeline"]


@pytest.mark.slow
def test_demo_info_and_panel_serve_from_an_empty_folder(installed, empty, tmp_path):
    """``embviz demo`` (small, not served) and ``embviz info`` work from a folder without the
    repository's files, and ``panel serve`` of the installed app serves its images."""
    from conftest import free_port

    from embviz.app import routes

    embviz_cmd = [str(installed / "bin" / "embviz")]
    out = _run(installed, empty, *embviz_cmd, "-q", "demo", "--limit", "100")
    assert "demo dataset ready: data/demo" in out
    info = json.loads(_run(installed, empty, *embviz_cmd, "info", "data/demo"))
    assert info["tables"]["samples"]["rows"] == 100
    assert {"scores", "projections/efficientnet_lite0.blocks.5.umap2d"} <= set(info["tables"])

    command = _run(installed, empty, *embviz_cmd, "serve", "data/demo", "--print-command")
    app = installed / "embviz" / "apps" / "explorer.py"
    assert f"panel serve {app} --plugins embviz.app.routes" in command

    port = free_port()
    log_path = tmp_path / "panel.log"
    cmd = [sys.executable, "-m", "panel", "serve", str(app), "--plugins", "embviz.app.routes"]
    cmd += ["--address", "127.0.0.1", "--port", str(port), "--args", "data/demo"]
    env = {**os.environ, "PYTHONPATH": str(installed), "PYTHONSAFEPATH": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=empty, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()
            assert time.time() < deadline, f"panel serve did not answer: {log_path.read_text()}"
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/explorer", timeout=60) as r:
                    assert r.status == 200
                break
            time.sleep(0.5)
        key = routes.register(empty / "data" / "demo")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{routes.thumb_url(key, 3)}") as r:
            assert r.headers["Content-Type"] == "image/webp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    assert routes.MISSING_ROUTES not in log_path.read_text()
