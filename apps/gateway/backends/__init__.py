"""One adapter per backend kind (auth headers, protocol spoken, APIs offered, error
types) and the registry ``{kind: adapter}``.

Every other module of this package defines one kind and registers its adapter; they are
all imported here, so adding a kind is adding one file. ``Backend.kind`` accepts only
registered kinds, and the catalog cache attaches each deployment's adapter when it
loads (a deployment of an unknown kind is left out, loudly), so the hot path reads
``deployment.adapter`` (and ``deployment.speaks``) instead of comparing kind names.
"""

import importlib
import pkgutil

from apps.gateway.backends.base import (
    ADAPTERS,
    ANTHROPIC,
    OPENAI,
    BackendAdapter,
    UnknownBackendKind,
    adapter_for,
    backend_kind_choices,
    backend_kinds,
    register,
)

__all__ = [
    "ADAPTERS",
    "ANTHROPIC",
    "OPENAI",
    "BackendAdapter",
    "UnknownBackendKind",
    "adapter_for",
    "backend_kind_choices",
    "backend_kinds",
    "register",
]

# Sorted, so the kinds (and the choices offered) come in the same order everywhere.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")
