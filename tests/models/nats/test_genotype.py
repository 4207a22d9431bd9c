"""Genotypes of the NATS-Bench topology space: strings, their errors, and the argmax of α."""

from __future__ import annotations

import itertools

import pytest
import torch

from zoo.models.nats import EDGES, EXAMPLE, OPERATIONS, Genotype, GenotypeError


def test_a_genotype_round_trips_through_its_string():
    genotype = Genotype.parse(EXAMPLE)
    assert str(genotype) == EXAMPLE
    assert genotype.operations == ("nor_conv_3x3",) * 3 + ("skip_connect",) + ("nor_conv_3x3",) * 2
    for operations in itertools.islice(itertools.product(OPERATIONS, repeat=len(EDGES)), 0, None, 997):
        assert Genotype.parse(str(Genotype(operations))).operations == operations


@pytest.mark.parametrize("text, problem", [
    (EXAMPLE.replace("skip_connect", "conv_5x5"), "unknown operation(s) 'conv_5x5'"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "2 node(s)"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", "1 input(s), not 2"),
    ("|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
     "should read 'OPERATION~0'"),
    ("nor_conv_3x3~0+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
     "must start and end with '|'"),
])
def test_a_malformed_genotype_string_says_what_is_wrong(text, problem):
    with pytest.raises(GenotypeError) as error:
        Genotype.parse(text)
    assert problem in str(error.value)


def test_a_genotype_needs_six_edges():
    with pytest.raises(GenotypeError, match="6 edges, got 5"):
        Genotype(("none",) * 5)


def test_the_genotype_of_alpha_is_its_per_edge_argmax():
    alpha = torch.zeros(len(EDGES), len(OPERATIONS))
    alpha[torch.arange(len(EDGES)), torch.tensor(Genotype.parse(EXAMPLE).indices())] = 1.0
    assert str(Genotype.from_alpha(alpha)) == EXAMPLE
