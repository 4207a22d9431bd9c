"""``python -m zoo.estimators``: the registered estimators as a Markdown table."""

from . import markdown_table

print(markdown_table())
