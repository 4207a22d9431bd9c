"""The NATS-Bench topology search space: genotypes, operations, and the networks built from them.

Published accuracies of a genotype: ``zoo.models.nats.benchmark.lookup`` (needs the
``nats`` extra and the benchmark's files).
"""

from .genotype import EDGES, EXAMPLE, OPERATIONS, Genotype, GenotypeError

__all__ = ["EDGES", "EXAMPLE", "OPERATIONS", "Genotype", "GenotypeError"]
