"""`mergeprune-report DIR...`: compare the runs below directories (Markdown, CSV, HTML, PNGs).

Runs (results.json files, see docs/results_json.md) are split into comparisons by (dataset, tasks,
model) and never mixed. Within a comparison a method is (merger, pruner, granularity); its seeds are
aggregated as mean ± std with n. The headline is PAM's: how many times less a task subset costs
with a merger than with no merging, and with PAM than with MTZ, between methods that share pruner
and granularity, counting only runs whose every task is within `--tolerance` accuracy points of its
teacher. Failed runs, unreadable files and Hydra job folders without results.json are listed, never
dropped. No torch import here: the command has to start fast.

Modules: runs (finding and reading runs), values (numbers and their formatting), compare
(comparisons, tolerance, headline ratios), tables (the report's blocks), figures (PNGs), writers
(Markdown, HTML, CSV), cli (the command line). The names other code uses are re-exported here.
"""

from mergeprune.report.cli import main, parse_args
from mergeprune.report.compare import (
    Comparison,
    Headline,
    Options,
    comparisons,
    exclusion_reason,
    headline_sentences,
    headlines,
    method_label,
    method_sort_key,
    subset_order,
    tolerance_reason,
)
from mergeprune.report.runs import Method, Run, gather, job_override_list, job_overrides
from mergeprune.report.tables import (
    Block,
    Bullets,
    Figure,
    Heading,
    Table,
    Text,
    accuracy_table,
    build_report,
    cost_table,
    headline_table,
)
from mergeprune.report.values import (
    METRICS,
    accuracy,
    cost,
    fmt_count,
    fmt_num,
    fmt_pct,
    fmt_points,
    fmt_ratio,
    fmt_stat,
    mean_of,
    mean_std,
    number,
    present,
    teacher_accuracy,
    teacher_cost,
)
from mergeprune.report.writers import to_html, to_markdown, write_csv, write_report

__all__ = [
    "METRICS", "Block", "Bullets", "Comparison", "Figure", "Heading", "Headline", "Method",
    "Options", "Run", "Table", "Text", "accuracy", "accuracy_table", "build_report",
    "comparisons", "cost", "cost_table", "exclusion_reason", "fmt_count", "fmt_num", "fmt_pct",
    "fmt_points", "fmt_ratio", "fmt_stat", "gather", "headline_sentences", "headline_table",
    "headlines", "job_override_list", "job_overrides", "main", "mean_of", "mean_std",
    "method_label", "method_sort_key", "number", "parse_args", "present", "subset_order",
    "teacher_accuracy", "teacher_cost", "to_html", "to_markdown", "tolerance_reason", "write_csv",
    "write_report",
]
