"""Values checked against the simple types a function annotates its parameters with.

A value of the wrong kind (``--model-arg arch_lr=fast``: a string where a number
belongs) would otherwise pass a constructor and crash later, in the optimizer or in
Lightning's fit loop, with a traceback. Model options are checked against the
model's constructor, Trainer arguments against ``lightning.Trainer``'s.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

#: What a value of each simple annotated type must be, and its name in an error.
SIMPLE_TYPES: dict[Any, tuple[Callable[[Any], bool], str]] = {
    float: (lambda value: isinstance(value, (int, float)) and not isinstance(value, bool), "a number"),
    int: (lambda value: isinstance(value, int) and not isinstance(value, bool), "an integer"),
    bool: (lambda value: isinstance(value, bool), "true or false"),
    str: (lambda value: isinstance(value, str), "a string"),
    type(None): (lambda value: value is None, "null"),
}


def simple_types(hint: Any) -> tuple[Any, ...] | None:
    """The simple types an annotation allows (a union's members); None if it is absent or allows other kinds,
    which the function then checks itself."""
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if hint is None or not all(kind in SIMPLE_TYPES for kind in allowed):
        return None
    return allowed


def check_option_types(function: Callable[..., Any], options: dict[str, Any], name: Callable[[str], str]) -> None:
    """Refuse an option that ``function`` annotates with simple types but that was given another kind of value;
    ``name(key)`` says whose option it is in the error."""
    hints = typing.get_type_hints(function)
    for key, value in options.items():
        allowed = simple_types(hints.get(key))
        if allowed is not None and not any(SIMPLE_TYPES[kind][0](value) for kind in allowed):
            expected = " or ".join(SIMPLE_TYPES[kind][1] for kind in allowed)
            raise ValueError(f"{name(key)} must be {expected}, got {value!r}.")
