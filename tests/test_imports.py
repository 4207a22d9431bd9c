"""The packages import in one direction: each layer only from itself and the layers below it.

The source is parsed with ``ast`` (nothing is imported, so this runs in a fraction of
a second), and imports inside functions count like the others: a function-level
import must not hide a cycle, and each one is on :data:`ALLOWED` with its reason.
docs/architecture.md draws the layers.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "datamodules", "callbacks")
#: The layers, lowest first, each with the modules it holds (a module is in the layer of its
#: longest prefix). Data families come below the models: a model's card names its family.
LAYERS = (
    ("estimators", ("zoo.estimators",)),
    ("data", ("datamodules",)),
    ("models", ("zoo.models",)),
    ("callbacks", ("callbacks",)),
    ("app", ("zoo",)),  # zoo.build, zoo.train, zoo.settings, zoo.runs, zoo.pretrained, zoo.release, ...
)
#: The function-level imports of project modules, ``file:module``, and why each is not at the top.
ALLOWED = {
    # Start-up: `import zoo` takes 3 s on a 2-core machine, zoo.pretrained 9.5 s.
    "zoo/__init__.py:zoo.pretrained": "`import zoo` gives the estimators without loading Lightning and the models",
}


@dataclass(frozen=True)
class Import:
    """One import statement's target within the project, where it stands, and whether inside a function."""

    file: str
    line: int
    module: str
    in_function: bool

    @property
    def place(self) -> str:
        return f"{self.file}:{self.line}"


def module_name(path: Path) -> str:
    """``zoo/models/vae.py`` → ``zoo.models.vae``; a package's ``__init__.py`` is the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of the layer holding ``module``."""
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1]


def imports_in(source: str, module: str, is_package: bool, file: str, known: set[str]) -> list[Import]:
    """The project modules ``source`` (the text of ``module``) imports, relative imports resolved.

    ``from package import name`` counts as an import of ``package.name`` when that is a
    module of ``known``, else of ``package``.
    """
    found: list[Import] = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            targets = []
        for target in dict.fromkeys(targets):
            if target.split(".")[0] in PACKAGES:
                found.append(Import(file, node.lineno, target, in_function))
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(ast.parse(source), False)
    return found


@cache
def project_imports() -> tuple[Import, ...]:
    known = set(project_modules())
    return tuple(found for module, path in project_modules().items()
                 for found in imports_in(path.read_text(), module, path.name == "__init__.py",
                                         path.relative_to(ROOT).as_posix(), known))


def upward(found: Import, importer: str) -> str | None:
    """Why ``found``, made in ``importer``, goes up a layer; None if it does not."""
    source, target = layer_of(importer), layer_of(found.module)
    if target <= source:
        return None
    return (f"{found.place} imports {found.module}: the {LAYERS[source][0]} layer may not import from the "
            f"{LAYERS[target][0]} layer above it; move what both need down to the lower layer")


def importer_of(found: Import) -> str:
    return module_name(ROOT / found.file)


def test_no_import_reaches_up_a_layer():
    problems = [problem for found in project_imports() if (problem := upward(found, importer_of(found)))]
    assert not problems, "\n".join(problems)


def test_every_function_level_import_of_the_project_is_on_the_allow_list():
    unlisted = [f"{found.place} imports {found.module} inside a function: move it to the top of the file, or add "
                f"'{found.file}:{found.module}' to ALLOWED with the reason" for found in project_imports()
                if found.in_function and f"{found.file}:{found.module}" not in ALLOWED]
    assert not unlisted, "\n".join(unlisted)


@pytest.mark.parametrize("entry", sorted(ALLOWED))
def test_each_allow_list_entry_is_still_needed(entry):
    file, _, module = entry.partition(":")
    assert any(found.file == file and found.module == module and found.in_function for found in project_imports()), (
        f"{entry} is on ALLOWED but {file} no longer imports {module} inside a function: remove the entry")


SAMPLE = """
from ..estimators import Estimator
from . import _registry
from callbacks.nonfinite import NonFiniteGuard
import torch


def later():
    from zoo import build
"""


def test_the_reader_resolves_relative_imports_and_finds_the_function_level_and_upward_ones():
    known = {"zoo.estimators", "zoo.models", "zoo.models._registry", "zoo.models.vae", "callbacks.nonfinite",
             "zoo.build", "zoo"}
    found = imports_in(SAMPLE, "zoo.models.vae", False, "zoo/models/vae.py", known)
    assert [(item.line, item.module, item.in_function) for item in found] == [
        (2, "zoo.estimators", False), (3, "zoo.models._registry", False), (4, "callbacks.nonfinite", False),
        (9, "zoo.build", True)]
    assert [upward(item, "zoo.models.vae") for item in found] == [
        None, None,
        "zoo/models/vae.py:4 imports callbacks.nonfinite: the models layer may not import from the callbacks "
        "layer above it; move what both need down to the lower layer",
        "zoo/models/vae.py:9 imports zoo.build: the models layer may not import from the app layer above it; "
        "move what both need down to the lower layer"]

