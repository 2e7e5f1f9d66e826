"""Self-contained HTML reports of a dataset: maps, counts, galleries, split drift, manifest.

``write_report(dataset, out)`` writes one HTML file that loads nothing from anywhere;
``update_index(folder)`` lists a folder's reports, newest first. Both are what ``embviz
report`` and the scheduled reports of :mod:`embviz.app.schedule` run.
"""

from .build import ReportResult, write_report
from .index import is_embviz_index, report_path, update_index

__all__ = ["ReportResult", "is_embviz_index", "report_path", "update_index", "write_report"]
