"""The NATS-Bench topology search space: genotypes, operations, and the networks built from them."""

from .genotype import EDGES, EXAMPLE, OPERATIONS, Genotype, GenotypeError

__all__ = ["EDGES", "EXAMPLE", "OPERATIONS", "Genotype", "GenotypeError"]
