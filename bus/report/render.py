"""Every report as JSON, CSV or a readable HTML page (Vietnamese labels with English).

A report (:class:`Report`) is a dataclass that gives its JSON form (``to_dict``), a few
labelled facts and its tables; the three renderers here work on that alone, so the CLI,
``/admin/reports/*`` and a console render any report the same way. Values are escaped in
HTML; CSV holds one block per table (a ``# table`` line, a header of column keys, the rows)
after ``#`` lines with the verification verdict and the facts.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bus.report.trail import Verification

__all__ = ["CONTENT_TYPES", "FORMATS", "Column", "Fact", "Format", "Report", "Table", "render"]

Format = Literal["json", "csv", "html"]
FORMATS: tuple[Format, ...] = ("json", "csv", "html")
CONTENT_TYPES: dict[Format, str] = {
    "json": "application/json",
    "csv": "text/csv",
    "html": "text/html",
}


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: its key in the rows, its Vietnamese and English headings."""

    key: str
    vi: str
    en: str


@dataclass(frozen=True, slots=True)
class Fact:
    """A labelled value shown above the tables (``needs_person``: blank, to be written)."""

    vi: str
    en: str
    value: Any
    needs_person: bool = False


@dataclass
class Table:
    """Rows of one kind under bilingual headings."""

    name: str
    vi: str
    en: str
    columns: Sequence[Column]
    rows: Sequence[Mapping[str, Any]] = field(default_factory=list)


class Report(Protocol):
    """What the renderers need of a report."""

    kind: str
    verification: Verification

    @property
    def title(self) -> tuple[str, str]:
        """(Vietnamese, English) title."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The whole report as JSON-ready data."""
        ...

    def facts(self) -> list[Fact]:
        """Labelled values shown above the tables."""
        ...

    def tables(self) -> list[Table]:
        """The report's tables."""
        ...


_PERSON = "[CẦN NGƯỜI ĐIỀN / TO BE WRITTEN BY A PERSON]"


def _text(value: Any, *, plain: bool = False) -> str:
    """A cell's text; ``plain`` (CSV): booleans as true/false."""
    if value is None:
        return ""
    if isinstance(value, bool):
        if plain:
            return str(value).lower()
        return "có (yes)" if value else "không (no)"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}={_text(v, plain=plain)}" for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return "; ".join(_text(v, plain=plain) for v in value)
    return str(value)


def render(report: Report, fmt: Format) -> str:
    """``report`` as ``fmt`` text."""
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    return render_html(report)


def render_json(report: Report) -> str:
    """The report's JSON form, with its kind and verification first."""
    data = {
        "report": report.kind,
        "verification": report.verification.to_dict(),
        **report.to_dict(),
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render_csv(report: Report) -> str:
    """Verification and facts as ``#`` lines, then one CSV block per table."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    v = report.verification
    vi, en = report.title
    writer.writerow([f"# {vi} / {en}"])
    writer.writerow([f"# certified={str(v.certified).lower()}", *v.problems])
    for fact in report.facts():
        blank = fact.needs_person and fact.value in (None, "")
        value = _PERSON if blank else _text(fact.value, plain=True)
        writer.writerow([f"# {fact.vi} / {fact.en}", value])
    for table in report.tables():
        writer.writerow([])
        writer.writerow([f"# table {table.name}: {table.vi} / {table.en}"])
        writer.writerow([c.key for c in table.columns])
        for row in table.rows:
            writer.writerow([_text(row.get(c.key), plain=True) for c in table.columns])
    return out.getvalue()


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #999;padding:.3em .6em;"
    "vertical-align:top;text-align:left}th small,dt small{color:#555;font-weight:normal}"
    ".ok{background:#e6f4e6;padding:.6em}.bad{background:#fbe3e3;padding:.6em}"
    ".person{background:#fff6d5}dt{font-weight:bold;margin-top:.5em}"
)


def _label(vi: str, en: str) -> str:
    return f"{html.escape(vi)}<br><small>{html.escape(en)}</small>"


def render_html(report: Report) -> str:
    """A self-contained HTML page (no scripts, no external resources)."""
    vi, en = report.title
    v = report.verification
    parts = [
        "<!doctype html>",
        '<html lang="vi"><head><meta charset="utf-8">',
        f"<title>{html.escape(vi)} / {html.escape(en)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_label(vi, en)}</h1>",
    ]
    if v.certified and v.chains == 0:
        parts.append(
            '<p class="ok">Báo cáo này không đọc chuỗi nhật ký kiểm toán nào.<br><small>This '
            "report read no audit chain.</small></p>"
        )
    elif v.certified:
        parts.append(
            f'<p class="ok">Chuỗi nhật ký kiểm toán nguyên vẹn: {v.chains} chuỗi, '
            f"{v.records_checked} bản ghi đã kiểm tra.<br><small>Audit chains intact: "
            f"{v.chains} chain(s), {v.records_checked} record(s) checked; this report is "
            "certified.</small></p>"
        )
    else:
        problems = "".join(f"<li>{html.escape(p)}</li>" for p in v.problems)
        parts.append(
            '<p class="bad"><strong>KHÔNG XÁC NHẬN: nhật ký kiểm toán đã bị thay đổi.'
            "</strong><br><small>NOT CERTIFIED: the audit trail was tampered with; the "
            f"figures below may be incomplete.</small></p><ul>{problems}</ul>"
        )
    facts = report.facts()
    if facts:
        parts.append("<dl>")
        for fact in facts:
            blank = fact.needs_person and fact.value in (None, "")
            value = html.escape(_PERSON if blank else _text(fact.value))
            cls = ' class="person"' if fact.needs_person else ""
            parts.append(f"<dt>{_label(fact.vi, fact.en)}</dt><dd{cls}>{value}</dd>")
        parts.append("</dl>")
    for table in report.tables():
        parts.append(f"<h2>{_label(table.vi, table.en)}</h2>")
        if not table.rows:
            parts.append("<p>Không có dữ liệu. <small>(none)</small></p>")
            continue
        head = "".join(f"<th>{_label(c.vi, c.en)}</th>" for c in table.columns)
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>")
        for row in table.rows:
            cells = "".join(f"<td>{html.escape(_text(row.get(c.key)))}</td>" for c in table.columns)
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
