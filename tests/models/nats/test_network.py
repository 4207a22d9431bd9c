"""Networks of the topology space built from a genotype have the benchmark's exact size."""

from __future__ import annotations

import pytest

from zoo.models import NASNet
from zoo.models.nats.network import count_parameters

#: NATS-Bench's published parameter counts (millions) of three architectures, per data set's classes.
PUBLISHED_PARAMETERS = {
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|":
        {10: 0.129306, 100: 0.135156, 120: 0.136456},
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|":
        {10: 0.802426, 100: 0.808276, 120: 0.809576},
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|none~0|nor_conv_1x1~1|none~2|":
        {10: 0.101306, 100: 0.107156, 120: 0.108456},
}


@pytest.mark.parametrize("genotype", PUBLISHED_PARAMETERS)
def test_a_network_from_a_genotype_has_nats_benchs_parameter_count(genotype):
    """Same skeleton, cells and classifier as the benchmark's networks, to the parameter."""
    for classes, millions in PUBLISHED_PARAMETERS[genotype].items():
        assert count_parameters(NASNet(genotype, num_classes=classes)) == round(millions * 1e6)
