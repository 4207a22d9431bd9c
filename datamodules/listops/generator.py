"""Random ListOps expressions, by the procedure that made the published data set.

Nangia & Bowman (2018): a node at depth d < ``MAX_DEPTH`` is an operator with
probability ``OPERATOR_PROBABILITY``, otherwise a digit; a node at ``MAX_DEPTH`` is
always a digit; an operator, drawn uniformly, takes 2–5 arguments drawn the same
way one level deeper. The root is at depth 1 and is always an operator (the
published files hold no bare digits). The expressions are de-duplicated over the
whole pool of splits, which removes many short ones: the pool size shapes the
length distribution, so the defaults match the published ~100,000.
"""

from __future__ import annotations

import random

from .expressions import OPERATORS, Node, to_text, value

MAX_DEPTH = 20
OPERATOR_PROBABILITY = 0.25
MIN_ARGUMENTS, MAX_ARGUMENTS = 2, 5
#: The published split sizes (train, valid, test): a pool of about 100,000.
DEFAULT_SIZES = {"train": 90_000, "valid": 1_000, "test": 10_000}


def random_expression(rng: random.Random, node_depth: int = 1) -> Node:
    """One tree; ``node_depth`` is the depth of its root."""
    is_operator = node_depth == 1 or (node_depth < MAX_DEPTH and rng.random() < OPERATOR_PROBABILITY)
    if not is_operator:
        return rng.randrange(10)
    arguments = [random_expression(rng, node_depth + 1) for _ in range(rng.randint(MIN_ARGUMENTS, MAX_ARGUMENTS))]
    return rng.choice(OPERATORS), arguments


def generate_splits(sizes: dict[str, int], seed: int = 0) -> dict[str, list[tuple[int, str]]]:
    """``{split: [(label, text), ...]}``: distinct expressions drawn as one pool, shuffled, then cut.

    Shuffling before cutting matters: later draws are longer on average, since the
    common short expressions were taken first.
    """
    if any(size < 0 for size in sizes.values()) or not sum(sizes.values()):
        raise ValueError(f"split sizes must be non-negative and not all zero, got {sizes}.")
    rng = random.Random(seed)
    pool: dict[str, int] = {}
    while len(pool) < sum(sizes.values()):
        tree = random_expression(rng)
        pool.setdefault(to_text(tree), value(tree))
    texts = list(pool)
    rng.shuffle(texts)
    splits, start = {}, 0
    for split, size in sizes.items():
        splits[split] = [(pool[text], text) for text in texts[start : start + size]]
        start += size
    return splits
