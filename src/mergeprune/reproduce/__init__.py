"""Reproduce the papers: run the experiment presets, report each sweep, and write docs/RESULTS.md.

Each preset (conf/experiment/<name>.yaml with a `preset:` block) runs as one Hydra multirun into
<root>/<name>; finished jobs are reused when a preset is launched again, so the driver can be run
in parts and resumes after an interruption. Every launch is appended to <root>/<name>/reproduce.json
(command, start, wall time, exit code). Then `mergeprune-report` writes its report into
<root>/<name>/report, the sweep's result files are archived in docs/results/runs/<name> (restored
from there before a launch, so a new checkout resumes), and the page is generated from every
results.json in the archive: nothing on it is typed by hand.

    mergeprune-reproduce                          # every preset, then the page
    mergeprune-reproduce admm_lenet5 pam_split5   # the named presets, then the page
    mergeprune-reproduce --page-only              # archive the sweep folders, rewrite the page
    mergeprune-reproduce pam_split2 -- seed=0     # extra Hydra overrides for every job
    mergeprune-reproduce --root DIR --out FILE    # sweeps (outputs/reproduce), page (docs/RESULTS.md)

Modules: presets (read from conf/experiment), launch (running a preset), archive (the kept result
files), claims (the checks at matched accuracy, with seed spread), sections and sweeps (the page's
per-preset tables), history (the first pass beside this one), page (the whole page), cli (the
command line).
"""

from mergeprune.reproduce.cli import main, parse_args
from mergeprune.reproduce.launch import run_preset
from mergeprune.reproduce.page import write_page
from mergeprune.reproduce.presets import BY_NAME, PRESETS, TOLERANCE, Preset, load_presets

__all__ = ["BY_NAME", "PRESETS", "TOLERANCE", "Preset", "load_presets", "main", "parse_args",
           "run_preset", "write_page"]
