"""Every setting is declared once, in zoo/settings.py: the flags, the YAML file's checks and docs/settings.md are
read from the declarations; Trainer arguments and paths are checked when the settings resolve, before anything
is built."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

import lightning as L
import pytest
import yaml

from zoo import runs, settings, train
from zoo.declarations import default_text
from zoo.option_types import SIMPLE_TYPES, simple_types

ROOT = Path(__file__).resolve().parents[1]
PARSER = train.build_parser()
ACTIONS = {action.dest: action for action in PARSER._actions}
#: Values of every kind, the first of which a setting's declaration refuses is fed to it.
JUNK = [-5, "bogus", [1], {"a": 1}]
TRAINER_HINTS = typing.get_type_hints(L.Trainer.__init__)
#: The Trainer's arguments annotated as numbers or switches, perhaps with a string or null beside them.
NUMERIC_TRAINER_ARGUMENTS = sorted(name for name, hint in TRAINER_HINTS.items() if name != "return"
                                   and any(kind in (int, float, bool) for kind in simple_types(hint) or ()))
#: Each setting that names a path, with each way it is given.
PATH_CASES = [(name, source) for name, declaration in settings.FLAGS.items() if declaration.path is not None
              for source in ("flag", "yaml") if source == "flag" or name in settings.DECLARED]


def test_docs_settings_md_is_the_generated_reference():
    documented = (ROOT / "docs" / "settings.md").read_text()
    assert documented == settings.reference(), "docs/settings.md is out of date: write `python -m zoo.settings` to it"
    assert "docs/settings.md" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", ["config", *settings.NAMES])
def test_the_flag_the_yaml_check_and_the_docs_of_each_setting_are_its_declaration(name, tmp_path):
    declaration = {**settings.DECLARED, **settings.FLAGS}[name]
    shown = default_text(declaration, getattr(settings.DEFAULTS, name, None))
    option = declaration.option(name)
    if option is not None:
        action = ACTIONS[declaration.dest(name)]
        assert action.option_strings == [option]
        if declaration.takes_pairs:
            assert action.help == f"{declaration.help} (repeatable)"
            assert isinstance(action, argparse._AppendAction) and action.metavar == "KEY=VALUE"
        else:
            assert action.help == declaration.help + (f" (default: {shown})" if shown else "")
            assert (action.type, action.choices, action.metavar) == (declaration.kind.parse, declaration.kind.choices,
                                                                     declaration.metavar)
    if name in settings.DECLARED:
        value = next(value for value in JUNK if not declaration.kind.test(value))
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump({name: value}))
        with pytest.raises(ValueError) as refused:
            settings.read_file(path)
        assert str(refused.value) == f"{declaration.label(name)}: must be {declaration.kind.words}, got {value!r}."
    (line,) = [line for line in settings.reference().splitlines() if line.startswith(f"- **`{name}`** (")]
    assert f": {declaration.help}. {declaration.kind.words[0].upper()}{declaration.kind.words[1:]}" in line
    resumed = "" if declaration.defines_run else "; may differ when `--resume auto` continues a run"
    assert line.endswith((f"; default: {shown}" if shown else "") + resumed + ".")


def test_the_parser_has_a_flag_for_each_declaration_and_no_other():
    flags = {option for action in PARSER._actions for option in action.option_strings} - {"-h", "--help"}
    assert flags == {declaration.option(name) for name, declaration in settings.FLAGS.items()}


def test_no_help_names_a_models_own_value():
    """A model's defaults are on its card; a help text that repeated one would go stale."""
    for name in (*settings.MODEL_SETTINGS, *settings.RECIPE_SETTINGS, "estimator"):
        assert ACTIONS[name].help.endswith("(default: the model's)"), name


def unreachable(*arguments, **options):
    raise AssertionError("the settings were resolved and a run was started")


def test_the_trainer_check_covers_the_numbers_and_the_switches():
    assert {"max_steps", "limit_val_batches", "gradient_clip_val", "enable_progress_bar"} <= {
        *NUMERIC_TRAINER_ARGUMENTS}


@pytest.mark.parametrize("key", NUMERIC_TRAINER_ARGUMENTS)
def test_a_trainer_argument_of_another_type_than_the_trainers_ends_in_one_error_line(key, capsys, monkeypatch):
    monkeypatch.setattr(runs, "run_directory", unreachable)
    allowed = simple_types(TRAINER_HINTS[key])
    junk, given = ("[junk]", ["junk"]) if str in allowed else ("junk", "junk")
    with pytest.raises(SystemExit) as stopped:
        train.main(["--trainer-arg", f"{key}={junk}"])
    expected = " or ".join(SIMPLE_TYPES[kind][1] for kind in allowed)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"train.py: error: trainer setting {key!r} must be {expected}, got {given!r}."]


def test_an_argument_the_trainer_lacks_is_refused_naming_the_nearest_one(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("trainer:\n  max_epocs: 3\n")
    with pytest.raises(ValueError) as refused:
        settings.read_file(config)
    assert str(refused.value) == ("bad trainer setting 'max_epocs': lightning.Trainer has no such argument; "
                                  "did you mean 'max_epochs'?")
    with pytest.raises(ValueError, match="'zzz': lightning.Trainer has no such argument; its arguments: accelerator"):
        settings.check_trainer({"zzz": 1})


def test_trainer_arguments_of_the_trainers_types_pass():
    settings.check_trainer({"max_steps": 3, "limit_val_batches": 0.5, "enable_progress_bar": False,
                            "max_epochs": None, "max_time": "00:01:00:00", "logger": False})


@pytest.mark.parametrize("name, source", PATH_CASES)
def test_a_path_setting_given_the_other_kind_of_path_ends_in_one_error_line(name, source, tmp_path, capsys,
                                                                           monkeypatch):
    declaration = settings.FLAGS[name]
    monkeypatch.setattr(runs, "run_directory", unreachable)
    wrong = tmp_path / "wrong"
    if declaration.path.is_folder:
        wrong.write_text("")
    else:
        wrong.mkdir()
    arguments = [declaration.option(name), str(wrong)]
    if source == "yaml":
        (tmp_path / "run.yaml").write_text(yaml.safe_dump({name: str(wrong)}))
        arguments = ["--config", str(tmp_path / "run.yaml")]
    with pytest.raises(SystemExit) as stopped:
        train.main(arguments)
    found = "file" if declaration.path.is_folder else "folder"
    where = declaration.label(name) + ":" if name in settings.DECLARED else declaration.option(name)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"train.py: error: {where} {wrong} is a {found}; give {declaration.path.wanted}."]


def test_a_path_of_the_right_kind_or_a_keyword_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "auto").mkdir()  # --resume auto is no path, even beside a folder of that name
    (tmp_path / "last.ckpt").write_text("")
    values = {"data_dir": str(tmp_path), "output_dir": "not-yet-made", "resume": "auto"}
    settings.check(values)
    settings.check({"resume": "last.ckpt"})


@pytest.mark.parametrize("name", settings.NAMES)
def test_resume_auto_matches_runs_by_the_declared_settings_that_define_a_run(name):
    """A run's config.yaml differing in one setting is the same run exactly when that setting is declared as
    where or how long it goes (``defines_run=False``)."""
    recorded = settings.DEFAULTS.as_dict()
    changed = {**recorded, name: {"other": 1} if isinstance(recorded[name], dict) else f"other-{recorded[name]}"}
    same = runs.run_settings(changed) == runs.run_settings(recorded)
    assert same == (name in settings.NOT_DEFINING_A_RUN) == (not settings.DECLARED[name].defines_run)
