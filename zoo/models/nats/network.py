"""The NATS-Bench topology network: a stem, three stages of cells, and a classifier.

Stage s has ``cells_per_stage`` cells at ``channels · 2^s`` channels, and a
:class:`~.operations.ResidualBlock` halves the resolution between stages. Every
cell has the same topology: :class:`FixedCell` builds one genotype's operations,
:class:`SearchCell` holds all five operations of every edge and runs only the
sampled one.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .genotype import EDGES, NODES, OPERATIONS, Genotype
from .operations import ResidualBlock, make_operation


def sum_into_nodes(x: Tensor, edge: Callable[[int, Tensor], Tensor]) -> Tensor:
    """Node ``i`` is the sum over ``j < i`` of ``edge(index of j→i, node j)``; the cell's output is the last node."""
    nodes = [x]
    edges = iter(range(len(EDGES)))
    for target in range(1, NODES):
        nodes.append(sum(edge(next(edges), nodes[source]) for source in range(target)))
    return nodes[-1]


class FixedCell(nn.Module):
    """A cell of one genotype, with affine BN: the network NATS-Bench trains from scratch."""

    def __init__(self, genotype: Genotype, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(make_operation(name, channels, affine=True) for name in genotype.operations)

    def forward(self, x: Tensor) -> Tensor:
        return sum_into_nodes(x, lambda index, node: self.edges[index](node))


class SearchCell(nn.Module):
    """Every operation on every edge; a forward pass computes one operation an edge.

    ``weights (edges, operations)`` is the estimator's sample, exactly one-hot in
    value, and ``chosen`` the index of its one on each edge. An edge's output is
    ``w[chosen] · op_chosen(x) + Σ_{k ≠ chosen} w[k]``: the same value as the
    chosen operation alone, while every entry of ``w``, and so of α, gets a gradient.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(
            nn.ModuleList(make_operation(name, channels, affine=False) for name in OPERATIONS) for _ in EDGES)

    def forward(self, x: Tensor, weights: Tensor, chosen: list[int]) -> Tensor:
        def edge(index: int, node: Tensor) -> Tensor:
            k = chosen[index]
            row = weights[index]
            return row[k] * self.edges[index][k](node) + (row.sum() - row[k])

        return sum_into_nodes(x, edge)


class TopologyNetwork(nn.Module):
    """The skeleton around ``make_cell(channels)``; extra forward arguments go to every cell.

    ``affine=False`` gives every BN of the skeleton neither affine parameters nor
    running statistics, as in the search supernet (see :mod:`.operations`).
    """

    def __init__(self, make_cell: Callable[[int], nn.Module], channels: int = 16, cells_per_stage: int = 5,
                 in_channels: int = 3, num_classes: int = 10, affine: bool = True) -> None:
        super().__init__()
        if min(channels, cells_per_stage, in_channels, num_classes) < 1:
            raise ValueError("a topology network needs channels, cells_per_stage, in_channels and num_classes "
                             f">= 1; got {channels}, {cells_per_stage}, {in_channels} and {num_classes}.")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=not affine),
                                  nn.BatchNorm2d(channels, affine=affine, track_running_stats=affine))
        layers: list[nn.Module] = []
        for stage in range(3):
            width = channels * 2 ** stage
            if stage:
                layers.append(ResidualBlock(width // 2, width, affine))
            layers.extend(make_cell(width) for _ in range(cells_per_stage))
        self.layers = nn.ModuleList(layers)
        width = channels * 4
        self.head = nn.Sequential(
            nn.BatchNorm2d(width, affine=affine, track_running_stats=affine),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, num_classes),
        )

    def forward(self, images: Tensor, *cell_arguments) -> Tensor:
        x = self.stem(images)
        for layer in self.layers:
            x = layer(x, *cell_arguments) if isinstance(layer, SearchCell) else layer(x)
        return self.head(x)


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


__all__ = ["FixedCell", "SearchCell", "TopologyNetwork", "count_parameters", "sum_into_nodes"]
