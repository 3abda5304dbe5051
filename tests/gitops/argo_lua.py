"""Runs the Argo CD health scripts in docs/argocd/health the way Argo CD runs them.

Argo CD evaluates health scripts with gopher-lua (Lua 5.1) in a state opened with only the base, table
and package libraries (`string`, `math`, `io`, `os`, `debug` are absent unless an admin sets
`resource.customizations.useOpenLibs`), with the live object as the global `obj`; the value the chunk
returns is the health, and a status outside Argo CD's list counts as Unknown. This module gives the
same environment with lupa's Lua 5.1, so a script that reaches for `string.format` fails here as it
would in Argo CD.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lupa import lua51

from tests.kube_harness import REPO

SCRIPTS = REPO / "docs" / "argocd" / "health"
GROUP = "modelroute.dev"
KINDS = ("ModelEndpoint", "RoutingPolicy", "Canary")
STATUSES = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})
"""What Argo CD accepts from a health script."""

_ALLOWED_GLOBALS = frozenset(
    {
        # base library (gopher-lua's OpenBase) and the libraries Argo CD opens
        "_G", "_VERSION", "assert", "collectgarbage", "dofile", "error", "getfenv", "getmetatable",
        "ipairs", "load", "loadfile", "loadstring", "next", "pairs", "pcall", "print", "rawequal",
        "rawget", "rawset", "select", "setfenv", "setmetatable", "tonumber", "tostring", "type",
        "unpack", "xpcall", "module", "require", "newproxy", "gcinfo", "table", "package",
    }
)  # fmt: skip


def script_path(kind: str) -> Path:
    """Where the script for `kind` lives; its name is the argocd-cm key's suffix."""
    return SCRIPTS / f"{GROUP}_{kind}.lua"


def _to_lua(lua: Any, value: Any) -> Any:
    # JSON null decodes to nil in Argo CD (gopher-json): the key is simply absent.
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def new_runtime() -> Any:
    """A Lua 5.1 state with only what Argo CD opens for health scripts."""
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    names = list(lua.globals())
    for name in names:
        if name not in _ALLOWED_GLOBALS:
            lua.globals()[name] = None
    # Without the string library, strings have no methods either (`("x"):upper()` fails in Argo CD).
    lua.execute('getmetatable("").__index = nil')
    lua.execute(
        'for _, n in ipairs({"string", "math", "io", "os", "debug", "coroutine"}) do package.loaded[n] = nil end'
    )
    return lua


def run_health(obj: dict[str, Any], kind: str | None = None) -> dict[str, str]:
    """The health script's verdict on `obj`: {"status": ..., "message": ...}."""
    kind = kind or str(obj["kind"])
    lua = new_runtime()
    lua.globals().obj = _to_lua(lua, json.loads(json.dumps(obj)))
    result = lua.execute(script_path(kind).read_text())
    if result is None or lua.eval("type")(result) != "table":
        raise AssertionError(f"{kind} health script returned {result!r}, not a table")
    verdict = {str(k): v for k, v in result.items()}
    status = verdict.get("status")
    if status not in STATUSES:
        raise AssertionError(f"{kind} health script returned an invalid status {status!r}")
    return {"status": str(status), "message": str(verdict.get("message", ""))}
