"""Reports on a schedule inside a Panel server: each run writes a dated report and the index.

Panel calls a scheduled task on the server's event loop, so :class:`ReportJob` only hands the
report to one worker thread and returns: the loop goes on serving sessions while the report
runs (its heavy steps are NumPy, Parquet and scikit-learn calls that mostly release the GIL;
measured: zooms still answer within about a second). A run that comes while the previous one
still works is skipped rather than queued.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from embviz.config import ReportSettings, check_schedule, load_report_settings
from embviz.dataset import open_dataset, slugify

__all__ = [
    "ReportJob",
    "cancel_reports",
    "reports_from_argv",
    "schedule_from_settings",
    "schedule_reports",
]

log = logging.getLogger(__name__)

_POOL: ThreadPoolExecutor | None = None
_JOBS: dict[str, ReportJob] = {}
_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """One worker thread per process for every scheduled report: reports never pile up."""
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(1, thread_name_prefix="embviz-report")
        return _POOL


@dataclass(eq=False)
class ReportJob:
    """The callback Panel schedules: each call starts one report in the worker thread."""

    dataset: str  #: dataset directory
    out_dir: str  #: folder of the dated reports and index.html
    png: bool = False  #: also write the overview maps as PNG files
    title: str | None = None  #: report title
    width: int = 900  #: overview map width
    height: int = 640  #: overview map height

    def __post_init__(self) -> None:
        self._future: Future | None = None
        self._guard = threading.Lock()
        self.runs = 0  #: reports written
        self.last = None  #: the last :class:`~embviz.report.ReportResult`
        self.last_error: BaseException | None = None  #: the last failure, if any

    def settings(self) -> tuple:
        """What the job writes (two jobs with equal settings are the same schedule)."""
        return (
            str(Path(self.dataset).resolve()),
            str(Path(self.out_dir).resolve()),
            self.png,
            self.title,
            self.width,
            self.height,
        )

    def __call__(self) -> Future | None:
        """Start a report in the worker thread and return at once (None: one is running)."""
        with self._guard:
            if self._future is not None and not self._future.done():
                log.warning("report of %s still running: this run is skipped", self.dataset)
                return None
            self._future = _pool().submit(self.run)
            return self._future

    def run(self):
        """Write one dated report and rewrite the index (in the calling thread)."""
        from embviz.report import report_path, update_index, write_report

        try:
            ds = open_dataset(self.dataset)
            out = report_path(self.out_dir, ds.name)
            result = write_report(
                ds, out, png=self.png, title=self.title, width=self.width, height=self.height
            )
            update_index(self.out_dir)
        except Exception as exc:  # a failed run must not stop the schedule: log and go on
            self.last_error = exc
            log.exception("scheduled report of %s failed", self.dataset)
            return None
        self.runs += 1
        self.last, self.last_error = result, None
        log.info("report written: %s (%.1f s)", result.path, result.seconds)
        return result


def schedule_reports(
    dataset: str | Path,
    *,
    out_dir: str | Path,
    cron: str | None = None,
    period: str | None = None,
    name: str | None = None,
    png: bool = False,
    title: str | None = None,
    width: int = 900,
    height: int = 640,
) -> ReportJob:
    """Schedule reports of ``dataset`` into ``out_dir`` with Panel's ``pn.state.schedule_task``.

    Each run writes ``out_dir/<dataset name>-<UTC timestamp>.html`` and rewrites
    ``out_dir/index.html`` (newest first). Give exactly one of ``cron`` (in UTC, e.g.
    ``"0 6 * * *"``; needs ``croniter``) or ``period`` (``"30s"``, ``"6h"``, ``"1d"``...); a
    period's first run is immediate. Call it from a served script or a ``--setup`` script:
    the task is registered once per process under ``name`` (default
    ``embviz-report-<dataset name>``), so every session may call it again with the same
    settings; other settings under a taken name raise ``ValueError``
    (:func:`cancel_reports` first). The dataset is opened now, so a bad path fails at once.
    Returns the :class:`ReportJob`.
    """
    import panel as pn

    check_schedule(cron=cron, period=period, where="schedule_reports")
    ds = open_dataset(dataset)
    name = name or f"embviz-report-{slugify(ds.name)}"
    job = ReportJob(str(dataset), str(out_dir), png=png, title=title, width=width, height=height)
    with _LOCK:
        known = _JOBS.get(name)
        if known is not None and known.settings() != job.settings():
            raise ValueError(
                f"a report schedule named {name!r} already exists with other settings; "
                f"call cancel_reports({name!r}) first or choose another name"
            )
        job = _JOBS.setdefault(name, job)
    # Panel ignores a second registration of the same callable under the same name.
    if cron is not None:
        pn.state.schedule_task(name, job, cron=cron)
    else:
        pn.state.schedule_task(name, job, period=period)
    return job


def schedule_from_settings(settings: str | Path | ReportSettings) -> ReportJob:
    """:func:`schedule_reports` from a settings file (``config/reports.yaml``) or object."""
    if not isinstance(settings, ReportSettings):
        settings = load_report_settings(settings)
    return schedule_reports(
        settings.dataset,
        out_dir=settings.out_dir,
        cron=settings.cron,
        period=settings.period,
        name=settings.name,
        png=settings.png,
        title=settings.title,
        width=settings.width,
        height=settings.height,
    )


def reports_from_argv(argv: list[str]) -> str | None:
    """The ``--reports FILE`` among a ``panel serve`` command line's ``--args`` (None if absent)."""
    if "--args" not in argv:
        return None
    args = argv[argv.index("--args") + 1 :]
    for i, arg in enumerate(args):
        if arg == "--reports" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--reports="):
            return arg.split("=", 1)[1]
    return None


def cancel_reports(name: str) -> None:
    """Stop the report schedule ``name`` (a report already running finishes)."""
    import contextlib

    import panel as pn

    with contextlib.suppress(KeyError):  # never scheduled, or already cancelled
        pn.state.cancel_task(name)
    with _LOCK:
        _JOBS.pop(name, None)
