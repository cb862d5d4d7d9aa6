"""Data-protection reports from the audit trail and routing.yaml (``lgsp-bus report``,
``/admin/reports/*``).

Each report is a coroutine (or, for ``dpia``, a function) taking the store and/or the
config and its parameters and returning a report dataclass; :func:`render` turns any report
into JSON, CSV or HTML. Reports over the trail first verify every chain
(:mod:`bus.report.trail`) and say when they cannot certify their figures. Layer: above
:mod:`bus.audit.observer` and :mod:`bus.config`, below :mod:`bus.admin.api` and the CLI.
"""

from bus.report.access import AccessReport, AccessRow, access_report
from bus.report.breach import BreachReport, BreachSelector, breach_report
from bus.report.dpia import DpiaReport, dpia_report
from bus.report.render import CONTENT_TYPES, FORMATS, Format, Report, render
from bus.report.stats import StatsReport, month_bounds, stats_report
from bus.report.subject import SubjectReport, subject_report
from bus.report.trail import Verification, read_trail

__all__ = [
    "CONTENT_TYPES",
    "FORMATS",
    "AccessReport",
    "AccessRow",
    "BreachReport",
    "BreachSelector",
    "DpiaReport",
    "Format",
    "Report",
    "StatsReport",
    "SubjectReport",
    "Verification",
    "access_report",
    "breach_report",
    "dpia_report",
    "month_bounds",
    "read_trail",
    "render",
    "stats_report",
    "subject_report",
]
