"""What the sidecar process leaves out of memory: pydantic's plugin loader. Imported first by `main`.

The sidecar runs no pydantic plugin, but pydantic looks for them when it builds its first model: its
loader imports `importlib.metadata` (and with it email, zipfile, shutil, tempfile, calendar and
importlib.resources) and reads the entry points of every installed distribution. That is ~2 MiB of
resident memory in every sidecar process (measured with `/proc/self/status` after importing `main`:
40.3 -> 38.2 MiB) for nothing. Registering a loader that finds no plugin, before pydantic's own is
imported, keeps all of it out; pydantic imports `get_plugins` from that module and nothing else (2.x).
A process that imported pydantic's loader already (tests, the operator) keeps it.
"""

from __future__ import annotations

import sys
import types

LOADER = "pydantic.plugin._loader"


def _no_plugins() -> tuple[()]:
    return ()


def skip_pydantic_plugins() -> None:
    """Make pydantic find no plugins without importing its loader (a no-op once it is imported)."""
    if LOADER not in sys.modules:
        loader = types.ModuleType(LOADER, "no pydantic plugins in the sidecar (modelroute_sidecar.lean)")
        loader.get_plugins = _no_plugins  # type: ignore[attr-defined]
        sys.modules[LOADER] = loader


skip_pydantic_plugins()
