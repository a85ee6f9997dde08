"""`mergeprune-report DIR...`: compare the runs below directories (Markdown, CSV, HTML, PNGs).

Runs (results.json files, see docs/results_json.md) are split into comparisons by (dataset, tasks,
model) and never mixed. Within a comparison a method is (merger, pruner, granularity); its seeds are
aggregated as mean ± std with n. The headline is PAM's: how many times fewer FLOPs a task subset
needs with a merger than with no merging, and with PAM than with MTZ, between methods that share
pruner and granularity. Where runs record pruning trajectories it is read at matched accuracy: the
cheapest trajectory point within `--tolerance` accuracy points of every teacher on validation,
plus `--noise-z` standard errors of the teacher's accuracy (the pruners' acceptance test).
Otherwise (and also) from the final networks of runs whose every task is within the tolerance of
its teacher on test. Failed runs, unreadable files and Hydra job folders without results.json are
listed, never dropped. No torch import here: the command has to start fast.

Modules: runs (finding and reading runs), values (numbers and their formatting), compare
(comparisons, tolerance, headline ratios of the final networks), curves (trajectories read out:
frontiers, matched cost, seed statistics), matched (methods at matched accuracy, their headline),
blocks and tables and matched_tables (the report's blocks), plotting and figures and curve_figures
(PNGs), writers (Markdown, HTML, CSV), cli (the command line). The names other code uses are
re-exported here.
"""

from mergeprune.report.blocks import Block, Bullets, Figure, Heading, Table, Text
from mergeprune.report.cli import main, parse_args
from mergeprune.report.compare import (
    Comparison,
    Headline,
    Options,
    comparisons,
    cost_sentence,
    exclusion_reason,
    headline_sentences,
    headlines,
    method_label,
    method_sort_key,
    subset_order,
    tolerance_reason,
)
from mergeprune.report.curves import (
    Band,
    Matched,
    Rule,
    SeedStat,
    band,
    frontier,
    matched,
    matched_stat,
    seed_stat,
)
from mergeprune.report.matched import matched_sentences, matched_stats, summary_sentences
from mergeprune.report.matched_tables import matched_table, matched_test_table
from mergeprune.report.runs import Method, Run, gather, job_override_list, job_overrides
from mergeprune.report.tables import accuracy_table, build_report, cost_table, headline_table
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
    "METRICS", "Band", "Block", "Bullets", "Comparison", "Figure", "Heading", "Headline",
    "Matched", "Method", "Options", "Rule", "Run", "SeedStat", "Table", "Text", "accuracy",
    "accuracy_table", "band", "build_report", "comparisons", "cost", "cost_sentence",
    "cost_table", "exclusion_reason", "fmt_count", "fmt_num", "fmt_pct", "fmt_points",
    "fmt_ratio", "fmt_stat", "frontier", "gather", "headline_sentences", "headline_table",
    "headlines", "job_override_list", "job_overrides", "main", "matched", "matched_sentences",
    "matched_stat", "matched_stats", "matched_table", "matched_test_table", "mean_of", "mean_std",
    "method_label", "method_sort_key", "number", "parse_args", "present", "seed_stat",
    "subset_order", "summary_sentences", "teacher_accuracy", "teacher_cost", "to_html",
    "to_markdown", "tolerance_reason", "write_csv", "write_report",
]
