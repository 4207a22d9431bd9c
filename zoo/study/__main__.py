"""Compare estimators: run a study's cells here or on SLURM, see where they stand, report them.

    python -m zoo.study run STUDY.yaml [--jobs N]      # every cell not done yet, on this machine
    python -m zoo.study submit STUDY.yaml [--sbatch-arg=--gres=gpu:1 ...]   # one SLURM array task a cell
    python -m zoo.study status STUDY.yaml              # done, running, interrupted, failed, pending
    python -m zoo.study report STUDY.yaml [--results benchmarks/RESULTS.md]   # tables, curves, JSON

A cell is an ordinary ``train.py`` run in a folder of its own, continued with
``--resume auto`` when it was stopped and skipped when it is done, so any of these
commands can be run again at any time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from callbacks.preemption import EXIT_STATUS
from callbacks.run_summary import PREEMPTED

from . import slurm
from .cell import cell_state, run_cell
from .local import run_study
from .report import write_report
from .spec import Study, StudyError, load_study


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zoo.study", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="The study file's keys: docs/studies.md; an example: the README's "
                                            "'Comparing estimators'.")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("study", type=Path, help="the study file (YAML)")
        sub.add_argument("--output-dir", type=Path, default=None,
                         help="where the cells' runs go (default: the study's output_dir, else runs/studies/NAME)")
        return sub

    run = command("run", "run every cell not done yet, on this machine")
    run.add_argument("--jobs", type=int, default=1, help="cells at once (each with its share of the CPU threads, "
                     "and one GPU each where there are GPUs); 1 runs them in this process")
    submit = command("submit", "submit the cells not done yet as a SLURM job array")
    submit.add_argument("--sbatch-arg", action="append", default=[], metavar="OPTION",
                        help="an #SBATCH option of the job script, e.g. --sbatch-arg=--gres=gpu:1 (repeatable)")
    submit.add_argument("--parallel", type=int, default=None, help="array tasks at once (SLURM's %%N)")
    submit.add_argument("--dry-run", action="store_true", help="write the job script and print it; submit nothing")
    command("status", "list the cells: done, running, interrupted, failed, pending")
    report = command("report", "print and write the tables, the curves' plot and the JSON of every cell")
    report.add_argument("--results", type=Path, default=None, help="a markdown file whose section for this study "
                        "(between its study markers) the report replaces, e.g. benchmarks/RESULTS.md")
    cell = command("cell", "run one cell (what --jobs and the SLURM array's tasks run)")
    cell.add_argument("cell", help="the cell's name, e.g. reinmax/seed0")
    cell.add_argument("--shared-machine", action="store_true", help="other cells run on this machine meanwhile")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        study = load_study(args.study, args.output_dir)
        if args.command == "run":
            if args.jobs < 1:
                raise StudyError(f"--jobs must be at least 1, got {args.jobs}.")
            return run_study(study, args.jobs)
        if args.command == "submit":
            return slurm.submit(study, args.sbatch_arg, args.parallel, args.dry_run)
        if args.command == "status":
            return print_status(study)
        if args.command == "report":
            write_report(study, args.results)
            return 0
        state = run_cell(study, study.cell(args.cell), shared_machine=args.shared_machine)
        return EXIT_STATUS if state.status == PREEMPTED else 0 if state.done else 1
    except StudyError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


def print_status(study: Study) -> int:
    """One line a cell, then the counts; 0 when every cell is done."""
    states = {cell: cell_state(study, cell) for cell in study.cells}
    width = max(len(cell.name) for cell in study.cells)
    for cell, state in states.items():
        print(f"{cell.name:<{width}}  {state.status}" + (f": {state.line}" if state.line else ""))
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state.status] = counts.get(state.status, 0) + 1
    print(f"{study.name}: " + ", ".join(f"{count} {status}" for status, count in counts.items()))
    return 0 if all(state.done for state in states.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
