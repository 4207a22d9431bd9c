"""Architectures of the NATS-Bench topology space, as genotypes and as their strings.

A cell has 4 nodes; node i sums one operation applied to every earlier node, so
the 6 edges are, in order, 1←0, 2←0, 2←1, 3←0, 3←1, 3←2. A genotype names one of
the 5 operations per edge; NATS-Bench writes it node by node as
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (``op~j``: the operation on the edge from
node j). 5^6 = 15,625 architectures.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: The operations, in the order of the architecture matrix's columns.
OPERATIONS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES = 4
#: ``(target, source)`` of each edge, in the order of the architecture matrix's rows.
EDGES = tuple((target, source) for target in range(1, NODES) for source in range(target))
EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


class GenotypeError(ValueError):
    """A genotype string or operation list that is not an architecture of the space."""


@dataclass(frozen=True)
class Genotype:
    """One operation name per edge, in :data:`EDGES` order."""

    operations: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.operations) != len(EDGES):
            raise GenotypeError(f"a genotype has {len(EDGES)} edges, got {len(self.operations)} operations.")
        unknown = [name for name in self.operations if name not in OPERATIONS]
        if unknown:
            raise GenotypeError(f"unknown operation(s) {', '.join(map(repr, unknown))}; "
                                f"valid operations: {', '.join(OPERATIONS)}.")

    @classmethod
    def parse(cls, text: str) -> Genotype:
        """The genotype a NATS-Bench string names; a malformed string gets a message saying what is wrong."""
        expected = f"expected the form {EXAMPLE!r}"
        nodes = text.strip().split("+")
        if len(nodes) != NODES - 1:
            raise GenotypeError(f"genotype {text!r} has {len(nodes)} node(s) separated by '+', "
                                f"not {NODES - 1}; {expected}.")
        operations = []
        for target, node in enumerate(nodes, start=1):
            if not (node.startswith("|") and node.endswith("|") and len(node) > 1):
                raise GenotypeError(f"node {target} of genotype {text!r} must start and end with '|'; {expected}.")
            inputs = node[1:-1].split("|")
            if len(inputs) != target:
                raise GenotypeError(f"node {target} of genotype {text!r} has {len(inputs)} input(s), "
                                    f"not {target}; {expected}.")
            for source, edge in enumerate(inputs):
                name, separator, index = edge.partition("~")
                if not separator or index != str(source):
                    raise GenotypeError(f"edge {edge!r} of node {target} in genotype {text!r} should read "
                                        f"'OPERATION~{source}'; {expected}.")
                operations.append(name)
        return cls(tuple(operations))

    @classmethod
    def from_alpha(cls, alpha: Tensor) -> Genotype:
        """The per-edge argmax of an architecture matrix ``(edges, operations)``."""
        if alpha.shape != (len(EDGES), len(OPERATIONS)):
            raise GenotypeError(f"an architecture matrix has shape {(len(EDGES), len(OPERATIONS))}, "
                                f"got {tuple(alpha.shape)}.")
        return cls(tuple(OPERATIONS[index] for index in alpha.argmax(-1).tolist()))

    @classmethod
    def random(cls, generator: torch.Generator | None = None) -> Genotype:
        """An architecture drawn uniformly from the space."""
        indices = torch.randint(len(OPERATIONS), (len(EDGES),), generator=generator)
        return cls(tuple(OPERATIONS[index] for index in indices.tolist()))

    def indices(self) -> list[int]:
        """The column of each edge's operation in the architecture matrix."""
        return [OPERATIONS.index(name) for name in self.operations]

    def __str__(self) -> str:
        operations = iter(self.operations)
        return "+".join("|" + "|".join(f"{next(operations)}~{source}" for source in range(target)) + "|"
                        for target in range(1, NODES))
