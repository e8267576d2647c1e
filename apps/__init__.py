"""Tollgate's Django apps, one per concern.

The project configuration lives in the top-level ``platform/`` folder. A package named
``platform`` would shadow the standard library module of that name (which pytest, uuid,
uvicorn and amqp import), so ``platform/`` has no ``__init__.py`` and is reachable only
as ``apps.platform``: the repository root is appended to this package's search path.
"""

from pathlib import Path

__path__.append(str(Path(__file__).resolve().parent.parent))  # noqa: F821
