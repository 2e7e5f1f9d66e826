"""JupyterLab for the browser tests: a headless server on a copy of the example notebook, and what
went wrong in its page (requests to other hosts, failed answers, console errors)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
#: Schemes that never leave the page.
LOCAL_SCHEMES = {"data", "blob", "about"}

#: The open notebook's kernel status once JupyterLab shows it ("idle" when ready), else null.
KERNEL_STATUS = """() => {
  const nb = window.jupyterapp?.shell.currentWidget;
  if (!nb || nb.context?.path !== 'explore.ipynb') return null;
  return nb.sessionContext?.session?.kernel?.status ?? null;
}"""
#: The kernel status and, per code cell, its execution count, prompt and errors.
CELLS = """() => {
  const nb = jupyterapp.shell.currentWidget;
  const cells = nb.content.widgets.filter(c => c.model.type === 'code').map(c => ({
    count: c.model.executionCount,
    prompt: c.node.querySelector('.jp-InputPrompt')?.textContent ?? '',
    errors: c.model.outputs.toJSON().filter(o => o.output_type === 'error')
      .map(o => `${o.ename}: ${o.evalue}`),
  }));
  return {kernel: nb.sessionContext.session?.kernel?.status, cells};
}"""
#: Append a code cell holding ``source`` and run it (without waiting for the result).
RUN_NEW_CELL = """async (source) => {
  const nb = jupyterapp.shell.currentWidget.content;
  nb.activeCellIndex = nb.widgets.length - 1;
  await jupyterapp.commands.execute('notebook:insert-cell-below');
  nb.activeCell.model.sharedModel.setSource(source);
  jupyterapp.commands.execute('notebook:run-cell');
}"""


def _write(path: Path, settings: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings))


class Lab:
    """JupyterLab on loopback serving a copy of the example notebook, its output in a log file."""

    def __init__(self, tmp: Path, dataset: Path):
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        root = tmp / "root"
        root.mkdir()
        shutil.copy(ROOT / "examples" / "explore.ipynb", root)
        (tmp / "data").mkdir()  # the notebook signatures, not in the user's data folder
        settings = tmp / "settings"
        # No news or update toast over the notebook, and no request to ask for either.
        _write(
            settings / "@jupyterlab/apputils-extension/notification.jupyterlab-settings",
            {"fetchNews": "false", "checkForUpdates": False},
        )
        # The default windowing attaches off-screen cells lazily: outputs would not be in the DOM.
        _write(
            settings / "@jupyterlab/notebook-extension/tracker.jupyterlab-settings",
            {"windowingMode": "none"},
        )
        env = {
            **os.environ,
            "EMBVIZ_EXAMPLE_DATASET": str(dataset),
            "JUPYTER_CONFIG_DIR": str(tmp / "config"),
            "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
            "IPYTHONDIR": str(tmp / "ipython"),
        }
        cmd = [
            # The kernel runs the server's sys.executable (jupyter_client swaps in "python").
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to run commands
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
            "--LabApp.extension_manager=readonly",  # no PyPI look-ups from the server
            f"--NotebookNotary.data_dir={tmp / 'data'}",
            # CI containers run as root; the server refuses that unless told.
            *(["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []),
        ]
        self.log_path = tmp / "jupyterlab.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=root
        )

    def wait(self, timeout: float = 120) -> None:
        """Block until the server's API answers 200."""
        import urllib.request

        def answers() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"jupyterlab exited ({self.proc.returncode})")
            try:
                url = f"{self.url}/api/status?token={self.token}"
                with urllib.request.urlopen(url, timeout=10) as r:
                    return r.status == 200
            except OSError:
                return False

        try:
            wait_until(answers, timeout, "jupyterlab to answer")
        except pytest.fail.Exception as exc:
            pytest.fail(f"{exc}: {self.log()}")

    def log(self, chars: int = 4000) -> str:
        """The tail of the server's output (and its kernels' stderr)."""
        self._log.flush()
        return self.log_path.read_text()[-chars:]

    def stop(self) -> None:
        """SIGTERM (the server shuts its kernels down first), then kill whatever is left."""
        import psutil

        try:
            family = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        _, alive = psutil.wait_procs(family, timeout=10)
        for p in alive:  # kernels started in their own sessions
            p.kill()
        self._log.close()


class PageLog:
    """What went wrong in the page: requests to other hosts (refused), answers >= 400, console
    and page errors, image route URLs, and the errors cells printed."""

    def __init__(self, page, netloc: str):
        self.netloc = netloc
        self.foreign: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.embviz_routes: list[str] = []
        self.cells: list[str] = []
        page.route(self._is_foreign, lambda route: route.abort())  # tell no third party
        page.on("request", lambda r: self._saw(r.url))
        page.on("websocket", lambda ws: self._saw(ws.url))
        page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.status} {r.url}"))
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _is_foreign(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme not in LOCAL_SCHEMES and parts.netloc != self.netloc

    def _saw(self, url: str) -> None:
        if self._is_foreign(url):
            self.foreign.append(url)
        elif "/embviz/" in urlsplit(url).path:
            self.embviz_routes.append(url)

    def __str__(self) -> str:
        return (
            f"other hosts: {sorted(set(self.foreign))}\nanswers >= 400: {self.failed}\n"
            f"console errors: {self.errors}\nembviz routes: {sorted(set(self.embviz_routes))}\n"
            f"cell errors: {self.cells}"
        )
