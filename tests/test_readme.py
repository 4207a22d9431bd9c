"""The README's tables are what the registries print, so no list of names is kept by hand; the docs cover
every estimator."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo import estimators, models, pretrained

README_PATH = Path(__file__).resolve().parents[1] / "README.md"
README = README_PATH.read_text()


@pytest.mark.parametrize("table, command", [
    (models.markdown_table, "python -m zoo.models"),
    (estimators.markdown_table, "python -m zoo.estimators"),
    (pretrained.markdown_table, "python -m zoo.pretrained"),
])
def test_each_readme_table_is_the_registrys(table, command):
    assert table() in README, f"the README's table is out of date: paste in what `{command}` prints"


@pytest.mark.parametrize("name", estimators.list_estimators())
def test_every_estimator_has_its_maths_in_the_docs(name):
    maths = (README_PATH.parent / "docs" / "estimators.md").read_text()
    assert f"`{name}`" in maths, f"docs/estimators.md does not describe {name}"
