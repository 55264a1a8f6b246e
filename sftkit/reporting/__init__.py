"""Run reports (report.md, report.html, loss/learning-rate plots) and run comparison.

Torch-free: a report is built from the files in a run directory only.
"""

from __future__ import annotations

from sftkit.reporting.record import RunRecord, load_run
from sftkit.reporting.report import ReportFiles, write_report

__all__ = ["ReportFiles", "RunRecord", "load_run", "write_report"]
