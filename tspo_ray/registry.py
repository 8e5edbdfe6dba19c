"""Things chosen by name (answerer back ends, selection methods, agent kinds) register in one small pattern.

    ANSWERERS = Registry("answerer kind")

    @ANSWERERS.register("simulated", settings=SimulatedSettings)
    def build_simulated(settings): ...

`registry.get(name)` returns the entry (its object and settings model) or raises a ValueError listing the known
names; `registry.settings(name, raw, where)` checks a mapping against the entry's declared settings (ConfigError
naming `where.<field>`). Adding one is writing it and registering it where it is defined: one file.
Entries may be registered lazily (`register_lazy(name, "module:attr")`) so a heavy back end is imported only when
it is used; the module named registers itself on import.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    #: the settings model (a tspo_ray.settings.Settings subclass) the entry takes, or None
    settings: type | None = None


class Registry:
    """Named entries of one kind, in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._lazy: dict[str, str] = {}

    def register(self, name: str, obj: Any = None, *, settings: type | None = None):
        """Register `obj` under `name` (as a call, or as a decorator when obj is omitted)."""
        def add(target: Any) -> Any:
            if name in self._entries and self._entries[name].obj is not target:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, target, settings)
            return target

        return add if obj is None else add(obj)

    def register_lazy(self, name: str, module: str) -> None:
        """Announce `name`, defined (and registered) in `module`, imported on first use."""
        self._lazy.setdefault(name, module)

    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self._lazy, *self._entries]))  # announced order first: stable whatever imported

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Entry:
        if name not in self._entries and name in self._lazy:
            importlib.import_module(self._lazy[name])
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")
        return self._entries[name]

    def settings(self, name: str, raw: Any = None, where: str = "") -> Any:
        """The entry's settings, checked against its declaration (None when it declares none)."""
        model = self.get(name).settings
        return None if model is None else model.load(raw, where)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        obj: Callable = self.get(name).obj
        return obj(*args, **kwargs)
