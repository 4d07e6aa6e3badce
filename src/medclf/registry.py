"""One small typed registry per kind of component (model, loss, optimizer, scheduler, layout...).

Each component is a plain function registered under the name a user writes in YAML::

    OPTIMIZERS = Registry[OptimizerFactory]("optimizer")

    @OPTIMIZERS.register("adamw")
    def adamw(params, cfg): ...

A failed lookup lists the registered names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from medclf.errors import ConfigError

__all__ = ["Registry", "closest"]

T = TypeVar("T")


def closest(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The most similar of ``choices`` to ``word``, or None when nothing is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


class Registry(Generic[T]):
    """Maps user-facing names to factories of one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``fn`` under ``name``; a name may be registered once."""

        def decorator(fn: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> T:
        """The factory registered as ``name``; a clear ConfigError listing the names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            hint = closest(name, self.names())
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise ConfigError(
                f"Unknown {self.kind} {name!r}.{did_you_mean} Registered {self.kind}s: "
                f"{', '.join(self.names())}."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
