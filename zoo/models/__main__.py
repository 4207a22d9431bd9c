"""``python -m zoo.models``: the registered models as a Markdown table."""

from ._registry import markdown_table

print(markdown_table())
