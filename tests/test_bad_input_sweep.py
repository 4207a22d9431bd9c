"""Every flag and YAML setting of train.py, and the other command-line tools, fed junk.

Each value either trains (for at most one step) or is refused with exit status 2 and
one ``PROG: error:`` line that names the flag, the setting or the file; never a
traceback, and never anything in the output folder that a legal run would not write.
The junk is generated from the parser's own actions and the settings' defaults, so
a new flag or setting is swept without editing this file.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from zoo import settings, train

#: What a legal run may write under its output folder (its run folder's contents).
RUN_FILES = ("config.yaml", "summary.json", "hparams.yaml", "events.out.tfevents.", "checkpoints", "last.ckpt", "best-",
             "images")
QUIET = ["--trainer-arg", "enable_progress_bar=false", "--trainer-arg", "enable_model_summary=false",
         "--trainer-arg", "num_sanity_val_steps=0"]
NUMBERS = ["", "-5", "0", "nan", "inf", "-inf", "1e999", "9" * 30, str(2**31 - 1), "three"]
NAMES = ["", "bogus", "0", "-1"]
KEY_VALUES = ["", "novalue", "=1", "unknown_key=1", "key=[unclosed"]
#: Flags that name a file (--config, --resume) and those that name a folder (--data-dir, --output-dir).
PATHS = {name: declaration.path for name, declaration in settings.FLAGS.items() if declaration.path is not None}
FILE_FLAGS = {name for name, path in PATHS.items() if not path.is_folder}
FOLDER_FLAGS = {name for name, path in PATHS.items() if path.is_folder}


class Files:
    """Paths of the kinds a file or folder flag may be given wrongly."""

    def __init__(self, root: Path, checkpoint: Path) -> None:
        self.root = root
        (root / "a-folder").mkdir()
        (root / "text.txt").write_text("root:x:0:0:root:/root:/bin/bash\n")
        (root / "empty").write_bytes(b"")
        (root / "truncated.ckpt").write_bytes(checkpoint.read_bytes()[:1000])
        self.legal_run = checkpoint.parent.parent  # a one-step train.py run

    def junk(self) -> list[str]:
        """Fresh copies each time: a case that wrongly writes to one does not change the next case's."""
        self.copies = getattr(self, "copies", 0) + 1
        folder = self.root / f"copy-{self.copies}"
        folder.mkdir()
        (folder / "a-folder").mkdir()
        for name in ("text.txt", "empty", "truncated.ckpt"):
            (folder / name).write_bytes((self.root / name).read_bytes())
        return [str(folder / name) for name in ("missing", "a-folder", "text.txt", "empty", "truncated.ckpt")]


def values_for(action: argparse.Action, files: Files) -> list[str]:
    """Junk that fits what ``action`` takes."""
    if action.dest in FILE_FLAGS | FOLDER_FLAGS:
        return files.junk()
    if action.dest.endswith("_args"):
        return KEY_VALUES
    if action.choices is not None:
        return ["", "bogus"]
    if action.type in (int, float) or getattr(action.type, "__name__", "").endswith("int"):
        return NUMBERS
    return NAMES


def flag_cases(files: Files) -> Iterator[tuple[str, list[str]]]:
    for action in train.build_parser()._actions:
        if action.option_strings and action.nargs != 0:
            for value in values_for(action, files):
                yield f"{action.option_strings[0]}={value!r}", [f"{action.option_strings[0]}={value}"]


def yaml_values(default) -> list:
    numbers = [-5, 0, math.nan, math.inf, 10**30, "three", [1, 2], {"a": 1}]
    if isinstance(default, dict):
        return ["bogus", [1], {"unknown_key": 1}]
    return ["bogus", "", *numbers] if default is None or isinstance(default, (int, float)) else ["bogus", "", 0, [1]]


def yaml_cases(folder: Path) -> Iterator[tuple[str, list[str]]]:
    for key, default in settings.DEFAULTS.as_dict().items():
        if key in ("resume", "output_dir", "data_dir", "model"):  # files, and the model: swept as flags
            continue
        for index, value in enumerate(yaml_values(default)):
            path = folder / f"{key}-{index}.yaml"
            path.write_text(yaml.safe_dump({key: value}))
            yield f"yaml {key}: {value!r}", ["--config", str(path)]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_mnist) -> Files:
    root = tmp_path_factory.mktemp("junk")
    output = root / "legal"
    assert train.main([*base_arguments(tiny_mnist, output)]) == 0
    (checkpoint,) = output.glob("*/*/checkpoints/last.ckpt")
    return Files(root, checkpoint)


def base_arguments(data: Path, output: Path) -> list[str]:
    return ["--data", "mnist", "--data-dir", str(data), "--output-dir", str(output), "--accelerator", "cpu",
            "--devices", "1", "--max-steps", "1", "--latents", "2", "--categories", "3",
            "--model-arg", "hidden_sizes=[4]", *QUIET]


def outcome(main: Callable[[list[str]], int], arguments: list[str], capsys) -> tuple[int, str]:
    """The exit status and standard error of ``main(arguments)``; an exception fails the test."""
    try:
        status = main(arguments)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    return status, capsys.readouterr().err


def check(case: str, status: int, stderr: str, program: str, names: list[str]) -> list[str]:
    """What is wrong with the outcome of ``case``: nothing when it trained or was refused cleanly."""
    problems = []
    if "Traceback" in stderr:
        problems.append("a traceback")
    lines = stderr.splitlines()
    if status == 0 or (status == 1 and sum(line.startswith(f"{program}: training stopped") for line in lines) == 1):
        return problems  # trained, or a legal value made training diverge and it stopped, saying so
    errors = [index for index, line in enumerate(lines) if line.startswith(f"{program}: error:")]
    if status != 2 or len(errors) != 1:
        return [*problems, f"exit {status} with {len(errors)} '{program}: error:' lines: {stderr[-200:]!r}"]
    message = "\n".join(lines[errors[0]:])  # the line, and the list of remedies some messages add under it
    if not any(name in message for name in names):
        problems.append(f"the error names none of {names}: {lines[errors[0]]!r}")
    return problems


def written_outside_a_run(output: Path) -> list[str]:
    if not output.exists():
        return []
    return [str(path.relative_to(output)) for path in output.rglob("*")
            if path.is_file() and not path.name.startswith(RUN_FILES)]


def test_every_flag_and_setting_given_junk_trains_or_is_refused_in_one_line(files, tiny_mnist, tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written to the working directory shows up here
    failures = []
    yaml_folder = tmp_path / "yaml"
    yaml_folder.mkdir()
    for index, (case, extra) in enumerate([*flag_cases(files), *yaml_cases(yaml_folder)]):
        output = tmp_path / f"out-{index}"
        arguments = [*base_arguments(tiny_mnist, output), *extra]
        if extra[0].startswith("--output-dir="):
            output = Path(extra[0].partition("=")[2])
        try:
            status, stderr = outcome(train.main, arguments, capsys)
        except Exception as error:  # noqa: BLE001 - any exception is what the sweep looks for
            failures.append(f"{case}: {type(error).__name__}: {error}")
            continue
        flag, _, value = extra[0].partition("=")
        key = flag.lstrip("-").replace("-", "_") if not case.startswith("yaml") else case.split()[1][:-1]
        # A KEY=VALUE option may be named by its key, a YAML mapping by one of its keys.
        inner = [value.partition("=")[0]] if flag.endswith("-arg") and "=" in value else []
        if case.startswith("yaml") and "{" in case:
            inner = list(yaml.safe_load(Path(extra[1]).read_text())[key])
        names = [flag, key, key.replace("_", "-"), *([value] if len(value) > 3 else []), *inner, *extra[1:]]
        failures += [f"{case}: {problem}" for problem in check(case, status, stderr, "train.py", names)]
        if status != 0 and output.exists() and written_outside_a_run(output):
            failures.append(f"{case}: wrote {written_outside_a_run(output)}")
    stray = sorted(path.name for path in tmp_path.iterdir() if not path.name.startswith(("out-", "yaml")))
    assert not stray, f"written to the working directory: {stray}"
    assert not failures, "\n".join(failures)


# The other command-line tools: each action of each parser, given junk, with the other arguments legal.

def tools(files: Files, tiny_mnist: Path, listops: Path, tmp_path: Path
          ) -> dict[str, tuple[argparse.ArgumentParser, Callable[[list[str]], int], list[str], dict[str, list[str]]]]:
    """Per tool (or sub-command): the parser whose actions are swept, the tool's main, the words before
    its arguments, and legal arguments by destination, in order, that the junk replaces one at a time."""
    from datamodules.listops import __main__ as listops_tool
    from zoo import evaluate, parse, release

    commands = listops_tool.build_parser()._subparsers._group_actions[0].choices
    return {
        "python -m zoo.evaluate": (evaluate.build_parser(), evaluate.main, [],
                                   {"name": ["listops-reinmax"], "data_dir": ["--data-dir", str(listops)]}),
        "python -m zoo.release": (release.build_parser(), release.main, [], {
            "run": [str(files.legal_run)], "name": ["--name", "sweep"], "tolerance": ["--tolerance", "1"],
            "manifest": ["--manifest", str(tmp_path / "manifest.json")], "data_dir": ["--data-dir", str(tiny_mnist)]}),
        "python -m zoo.parse": (parse.build_parser(), parse.main, [],
                                {"expression": ["[MAX 2 9 ]"], "pretrained": ["--pretrained", "listops-reinmax"]}),
        "python -m datamodules.listops": (commands["generate"], listops_tool.main, ["generate"], {
            "out": ["--out", str(tmp_path / "generated")], "train": ["--train", "6"], "valid": ["--valid", "3"],
            "test": ["--test", "3"]}),
        "python -m datamodules.listops stats": (commands["stats"], listops_tool.main, ["stats"],
                                                {"files": [str(listops / "valid.tsv")]}),
    }


PATH_DESTINATIONS = FILE_FLAGS | FOLDER_FLAGS | {"run", "files", "checkpoint", "manifest", "found_by", "out"}


def tool_cases(parser: argparse.ArgumentParser, base: dict[str, list[str]], files: Files
               ) -> Iterator[tuple[str, list[str], list[str]]]:
    """The case, its arguments and the names its error may use: ``base`` with one action's value junk."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        junk = files.junk() if action.dest in PATH_DESTINATIONS else values_for(action, files)
        for value in junk:
            arguments = dict(base)
            flag = action.option_strings[0] if action.option_strings else None
            arguments[action.dest] = [f"{flag}={value}"] if flag else [value]
            names = [flag or action.dest, action.dest, *([value] if len(value) > 3 else [])]
            yield f"{flag or action.dest}={value!r}", [part for parts in arguments.values() for part in parts], names


@pytest.fixture(scope="module")
def listops_files(tmp_path_factory) -> Path:
    from datamodules.tiny import write_listops

    return write_listops(tmp_path_factory.mktemp("listops"), 8)


def test_the_other_tools_given_junk_run_or_are_refused_in_one_line(files, tiny_mnist, listops_files, tmp_path,
                                                                   capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    failures = []
    for tool, (parser, main, prefix, base) in tools(files, tiny_mnist, listops_files, tmp_path).items():
        program = parser.prog  # a sub-command's: "python -m datamodules.listops generate"
        for case, arguments, names in tool_cases(parser, base, files):
            try:
                status, stderr = outcome(main, [*prefix, *arguments], capsys)
            except Exception as error:  # noqa: BLE001 - any exception is what the sweep looks for
                failures.append(f"{tool} {case}: {type(error).__name__}: {str(error)[:300]}")
                continue
            failures += [f"{tool} {case}: {problem}" for problem in check(case, status, stderr, program, names)]
    assert not failures, "\n".join(failures)
