"""The quality report written beside a source's shards: Great Expectations Data Docs for each shard's
validation, and for the run a JSON summary and an HTML page that a person opens first (pass rate
against the threshold, the top reasons, reference scores, links to each shard's Data Docs)."""

from __future__ import annotations

import html


def data_docs_html(validation) -> str:
    """A shard's validation result as a Data Docs page, rendered by Great Expectations itself."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(validation))


def summary_html(summary: dict) -> str:
    """The run's summary as one readable page."""

    def rows(pairs) -> str:
        return "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in pairs)

    verdict = "passed" if summary["passed"] else "FAILED"
    shards = "".join(
        f'<li><a href="{html.escape(s["data_docs"])}">{html.escape(s["shard_id"])}</a>: '
        f"{s['records']} records, {s['quarantined']} quarantined</li>"
        for s in summary["shards"]
        if s.get("data_docs")
    )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(summary["source_id"])} quality report</title>
<style>body{{font-family:sans-serif;margin:2em}}td{{padding:2px 12px;border-bottom:1px solid #ddd}}</style></head>
<body><h1>{html.escape(summary["source_id"])}: quality gate {verdict}</h1>
<p>Pass rate {summary["pass_rate"]:.3f} against the threshold {summary["threshold"]:.2f}
(run {html.escape(", ".join(summary["run_ids"]))}, written {html.escape(summary["written_at"])}).</p>
<h2>Counts</h2><table>{rows(summary["counts"].items())}</table>
<h2>Quarantine reasons</h2><table>{rows(summary["quarantined_by_reason"].items()) or "<tr><td>none</td></tr>"}</table>
<h2>Reject reasons</h2><table>{rows(summary["rejected_by_reason"].items()) or "<tr><td>none</td></tr>"}</table>
<h2>Against the source's human text</h2><table>{rows(summary["reference"].items())}</table>
<h2>Shards (Great Expectations Data Docs)</h2><ul>{shards or "<li>none validated</li>"}</ul>
</body></html>
"""
