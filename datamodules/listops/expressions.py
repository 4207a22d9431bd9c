"""ListOps expressions: their syntax, their value, and the tokens a model reads.

An expression is a digit or an operator applied to two or more expressions:
``[MAX 2 9 [MIN 4 7 ] 0 ]`` is 9. The published files write it with the
generator's left-branching parentheses, ``( ( ( [MAX 2 ) 9 ) ... ] )``, which
reveal the tree; a model reads the expression with the parentheses dropped, one
token per digit, operator (``[MAX``) and ``]``.
"""

from __future__ import annotations

import statistics
from typing import Union

OPERATORS = ("MIN", "MAX", "MED", "SM")
DIGITS = tuple(str(digit) for digit in range(10))
OPEN = tuple(f"[{operator}" for operator in OPERATORS)
CLOSE = "]"
PARENTHESES = ("(", ")")
PAD = "<pad>"
#: Token ids: padding is 0, so a zero-filled tensor is all padding.
VOCABULARY = (PAD, *DIGITS, *OPEN, CLOSE)
TOKEN_IDS = {token: index for index, token in enumerate(VOCABULARY)}

#: A digit, or ``(operator, arguments)``.
Node = Union[int, tuple[str, list["Node"]]]  # noqa: UP007 - a recursive alias must stay a runtime Union on 3.10


class ExpressionError(ValueError):
    """A malformed expression; the message says what is wrong and where."""


def value(node: Node) -> int:
    """MIN and MAX as named, MED the integer (floor) median, SM the sum modulo 10."""
    if isinstance(node, int):
        return node
    operator, arguments = node
    values = [value(argument) for argument in arguments]
    if operator == "MIN":
        return min(values)
    if operator == "MAX":
        return max(values)
    if operator == "MED":
        return int(statistics.median(values))  # the mean of the middle two for an even count, floored
    return sum(values) % 10


def to_text(node: Node) -> str:
    """The published format: each argument joins the operator's prefix in a new pair of parentheses."""
    if isinstance(node, int):
        return str(node)
    operator, arguments = node
    text = f"[{operator}"
    for argument in arguments:
        text = f"( {text} {to_text(argument)} )"
    return f"( {text} {CLOSE} )"


def model_tokens(text: str) -> list[str]:
    """The tokens a model reads: the expression's, without parentheses."""
    return [token for token in text.split() if token not in PARENTHESES]


def paper_length(tokens: list[str]) -> int:
    """The length the paper's ``< 100 tokens`` filter counts: ``[MIN`` is two tokens, ``[`` and ``MIN``."""
    return len(tokens) + sum(token in OPEN for token in tokens)


def parse(text: str) -> Node:
    """The tree of an expression in either format (with or without parentheses).

    Raises :class:`ExpressionError` for an unknown token, unbalanced brackets or
    parentheses, an operator without arguments, or more than one expression.
    """
    tokens = text.split()
    if not tokens:
        raise ExpressionError("empty expression")
    if tokens.count("(") != tokens.count(")"):
        raise ExpressionError(f"unbalanced parentheses: {tokens.count('(')} '(' and {tokens.count(')')} ')'")
    stack: list[tuple[str, list[Node]]] = []
    roots: list[Node] = []
    for position, token in enumerate(tokens, start=1):
        if token in PARENTHESES:
            continue
        if token in OPEN:
            stack.append((token[1:], []))
            continue
        if token == CLOSE:
            if not stack:
                raise ExpressionError(f"token {position}: ']' closes nothing")
            node = stack.pop()
            if not node[1]:
                raise ExpressionError(f"token {position}: [{node[0]} has no arguments")
        elif token in DIGITS:
            node = int(token)
        else:
            raise ExpressionError(
                f"token {position}: unknown token {token!r}; expected a digit, one of "
                f"{', '.join(OPEN)}, ']' or a parenthesis"
            )
        (stack[-1][1] if stack else roots).append(node)
    if stack:
        raise ExpressionError(f"{len(stack)} operator(s) not closed by ']'")
    if len(roots) != 1:
        raise ExpressionError(f"{len(roots)} expressions side by side; a line holds one")
    return roots[0]


def depth(node: Node) -> int:
    """Operators on the longest path from the root: 0 for a digit."""
    if isinstance(node, int):
        return 0
    return 1 + max(depth(argument) for argument in node[1])
