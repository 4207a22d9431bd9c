"""The README's tables are what the registries print, so no list of names is kept by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo import estimators, models, pretrained

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("table, command", [
    (models.markdown_table, "python -m zoo.models"),
    (estimators.markdown_table, "python -m zoo.estimators"),
    (pretrained.markdown_table, "python -m zoo.pretrained"),
])
def test_each_readme_table_is_the_registrys(table, command):
    assert table() in README, f"the README's table is out of date: paste in what `{command}` prints"
