"""Writing the report: its blocks as Markdown (figures by relative path) and as one self-contained
HTML page (figures embedded), one CSV row per run, and `write_report`, which writes them all.
"""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path
from typing import Any

from mergeprune.report.blocks import Block, Bullets, Heading, Table, Text
from mergeprune.report.compare import Options, comparisons, subset_order, tolerance_reason
from mergeprune.report.curves import CURVE_METRICS, Rule, as_rule, has_curves, matched
from mergeprune.report.figures import draw_figures
from mergeprune.report.runs import Run
from mergeprune.report.tables import build_report
from mergeprune.report.values import METRICS, accuracy, teacher_accuracy, union_keys

# ----------------------------------------------------------------------------- Markdown and HTML


def md_cell(text: str) -> str:
    """A table cell safe for Markdown."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_block(block: Block, out: Path) -> str:
    """One block as Markdown."""
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Text):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {md_cell(item)}" for item in block.items)
    if isinstance(block, Table):
        lines = [block.headers, ["---"] * len(block.headers)] + block.rows
        return "\n".join("| " + " | ".join(md_cell(c) for c in line) + " |" for line in lines)
    return f"![{block.caption}]({block.path.relative_to(out).as_posix()})\n\n*{block.caption}*"


def to_markdown(blocks: list[Block], out: Path) -> str:
    """The report as Markdown (figures referenced by relative path)."""
    return "\n\n".join(md_block(b, out) for b in blocks) + "\n"


CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}figure{margin:1em 0}img{max-width:100%}
figcaption{font-style:italic;color:#555}h2{border-bottom:2px solid #ddd;margin-top:2em}"""


def data_uri(path: Path) -> str:
    """A PNG file as a base64 data URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def html_block(block: Block) -> str:
    """One block as HTML."""
    esc = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level}>{esc(block.text)}</h{block.level}>"
    if isinstance(block, Text):
        return f"<p>{esc(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{esc(h)}</th>" for h in block.headers)
        body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>"
                       for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return (f'<figure><img alt="{esc(block.caption)}" src="{data_uri(block.path)}">'
            f"<figcaption>{esc(block.caption)}</figcaption></figure>")


def to_html(blocks: list[Block]) -> str:
    """The report as one self-contained HTML page (figures embedded, no external resources)."""
    body = "\n".join(html_block(b) for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>mergeprune report</title><style>{CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


# ----------------------------------------------------------------------------- CSV


def csv_row(run: Run, tolerance: float | Rule) -> dict[str, Any]:
    """One run as a flat dict: identity, status, accuracy, cost, compression, timings, latency."""
    exp, rule = run.exp, as_rule(tolerance)
    row: dict[str, Any] = {
        "run": run.label, "path": str(run.path), "status": run.status, "error": run.note,
        "name": exp.get("name", ""), "dataset": exp.get("dataset", ""),
        "tasks": "+".join(run.tasks), "model": exp.get("model", ""),
        "merger": exp.get("merger", ""), "pruner": exp.get("pruner", ""),
        "granularity": exp.get("granularity") or "", "seed": exp.get("seed", ""),
        "meets_accuracy": "" if not run.ok else "no" if tolerance_reason(run, rule.points) else "yes"}
    choices = exp.get("choices")
    if isinstance(choices, dict):  # the config file chosen per Hydra group, where recorded
        row.update({f"choice/{group}": name for group, name in choices.items()})
    for task in run.tasks:
        row[f"acc/{task}"] = accuracy(run, task)
        row[f"teacher_acc/{task}"] = teacher_accuracy(run, task)
    for subset, values in (run.data.get("cost") or {}).items():
        row.update({f"{m}/{subset}": (values or {}).get(m) for m in METRICS})
    row.update({f"compression/{k}": v for k, v in (run.data.get("compression") or {}).items()})
    row.update({f"time_s/{k}": v for k, v in (run.data.get("timings_s") or {}).items()})
    for subset, info in (run.data.get("export") or {}).items():
        latency = (info or {}).get("latency_ms") if isinstance(info, dict) else None
        if isinstance(latency, dict):
            row.update({f"latency_ms/{subset}/{b}": v for b, v in latency.items()})
    row.update(matched_columns(run, rule))
    return row


def matched_columns(run: Run, tolerance: float | Rule) -> dict[str, Any]:
    """Per subset: the cost at matched accuracy per metric and, for flops, the steps chosen, the
    `tried` count to rebuild them with (pruner.max_steps) and the test accuracy there."""
    if not run.ok or not has_curves(run):
        return {}
    row: dict[str, Any] = {}
    for subset in subset_order(tuple(run.tasks)):
        for metric in CURVE_METRICS:
            found = matched(run, subset, tolerance, metric)
            row[f"matched_{metric}/{subset}"] = found.cost if found else None
        found = matched(run, subset, tolerance, "flops")
        if found:
            row[f"matched_steps/{subset}"] = " ".join(f"{p}:{s}" for p, s in found.steps.items())
            row[f"matched_tried/{subset}"] = " ".join(f"{p}:{t}" for p, t in found.tried.items())
            row.update({f"matched_test/{subset}/{t}": a for t, a in found.test.items()})
    return row


def write_csv(runs: list[Run], path: Path, tolerance: float | Rule) -> None:
    """One row per run, every column any run has (blank where a run has none)."""
    rows = [csv_row(r, tolerance) for r in runs]
    columns = union_keys(rows)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


# ----------------------------------------------------------------------------- all files


def write_report(runs: list[Run], opts: Options) -> list[Path]:
    """Write report.md, report.csv, report.html and the figures; return the paths written."""
    opts.out.mkdir(parents=True, exist_ok=True)
    comps = comparisons(runs)
    figures = {c.slug: draw_figures(c, opts) for c in comps}
    blocks = build_report(runs, comps, opts, figures)
    md, csv_path, html_path = (opts.out / f"report.{ext}" for ext in ("md", "csv", "html"))
    md.write_text(to_markdown(blocks, opts.out))
    write_csv(runs, csv_path, opts.rule)
    html_path.write_text(to_html(blocks))
    return [md, csv_path, html_path] + [p for figs in figures.values() for p in figs.values()]
