"""What a model's ``compile_parts`` is handed under ``--compile`` (``callbacks/compiling.py`` hands it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

Compilable = TypeVar("Compilable", nn.Module, Callable[..., Any])


class PartCompiler:
    """What a model's ``compile_parts`` is handed: ``compile(part, dynamic=...)`` compiles a part for this run.

    A function comes back compiled (the model stores it where the original was); a
    module is compiled in place and comes back as it is.
    """

    def __init__(self, backend: str, graph_break: str | None = None) -> None:
        self.backend = backend
        #: Why the parts are not captured whole (None: they are, ``fullgraph=True``).
        self.graph_break = graph_break
        #: What the run is told about its compilation: graph breaks and parts left eager, and why.
        self.notes = [f"the loss is compiled with graph breaks: {graph_break}"] if graph_break else []
        self.compiled = 0

    def __call__(self, part: Compilable, *, dynamic: bool | None = None) -> Compilable:
        options = dict(backend=self.backend, fullgraph=self.graph_break is None, dynamic=dynamic)
        self.compiled += 1
        if isinstance(part, nn.Module):
            part.compile(**options)
            return part
        return torch.compile(part, **options)

    def leave_eager(self, reason: str) -> None:
        """Record why a model leaves (some of) its loss uncompiled."""
        self.notes.append(reason)
