"""`import modelroute_sidecar.main` leaves out what only some configs need (issue 11: one worker's RSS
<= 40 MiB): the embedding stack (numpy, the embeddings module), the Redis client and the fleet modules,
the contract's stats models, RE2, jsonschema, YAML. Each is imported on first use; the config-driven ones
are checked to load when a config asks for them. The contract's config models build their validators on
first use too. Run in a fresh interpreter: this one imported them all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).parents[1] / "contract" / "fixtures" / "v2" / "canary-rollout.json"

LEFT_OUT = (
    "numpy",
    "modelroute_sidecar.embeddings",
    "redis",
    "modelroute_sidecar.fleet",
    "modelroute_sidecar.fleetstore",
    "modelroute_contract.stats",
    "re2",
    "jsonschema",
    "yaml",
)
"""Modules (and their packages' submodules) `import modelroute_sidecar.main` must not import."""

PROGRAM = """
import json, sys
import modelroute_sidecar.main
left_out = json.loads(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in left_out))))
"""


def run(program: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_main_leaves_out_the_heavy_modules() -> None:
    imported = json.loads(run(PROGRAM, json.dumps(LEFT_OUT)))
    assert imported == [], f"`import modelroute_sidecar.main` imported {imported}"


CONFIG_PROGRAM = """
import json, sys
from modelroute_sidecar.configstore import ConfigStore
store = ConfigStore(region="eu-west")
store.apply(open(sys.argv[1], "rb").read(), "test")
import modelroute_contract
assert "modelroute_contract.stats" not in sys.modules
assert modelroute_contract.StatsSnapshot is modelroute_contract.stats.StatsSnapshot
print(json.dumps(sorted(n for n in ("modelroute_sidecar.embeddings", "modelroute_contract.stats") if n in sys.modules)))
"""


def test_a_plain_config_loads_without_the_embeddings_and_the_contract_exports_stats_lazily() -> None:
    assert json.loads(run(CONFIG_PROGRAM, str(FIXTURE))) == ["modelroute_contract.stats"]


FLEET_FIXTURE = Path(__file__).parents[1] / "contract" / "fixtures" / "v3" / "fleet-limits.json"

FLEET_PROGRAM = """
import asyncio, json, sys
from modelroute_contract import RouterConfig
from modelroute_sidecar.app import build_sidecar
from modelroute_sidecar.settings import parse_settings

def sealed(path, sequence):
    document = json.loads(open(path, "rb").read())
    document.pop("version")
    document["sequence"] = sequence
    return RouterConfig.model_validate(document).seal().to_json()

async def main():
    sidecar = build_sidecar(parse_settings(["--port", "0"], {}))
    sidecar.config.apply(sealed(sys.argv[1], 1), "test")
    before = ["modelroute_sidecar.fleetstore" in sys.modules, sidecar.fleet.figures()]
    sidecar.fleet.settle(None)  # no accounts yet: nothing to charge
    await sidecar.fleet.close()
    sidecar.config.apply(sealed(sys.argv[2], 2), "test")
    accounts = sidecar.fleet.accounts
    after = ["modelroute_sidecar.fleetstore" in sys.modules, accounts is not None]
    after.append(sidecar.fleet.admit == accounts.admit and sidecar.fleet.settle == accounts.settle)
    sidecar.config.apply(sealed(sys.argv[1], 3), "test")  # the accounts stay, as they did before they were lazy
    after.append(sidecar.fleet.accounts is accounts)
    await sidecar.fleet.close()
    print(json.dumps(before + after))

asyncio.run(main())
"""


def test_fleet_accounts_are_made_on_the_first_config_with_fleet_limits() -> None:
    """Made (and `fleetstore` imported) by the first config with fleet limits; from then on the request
    path calls the accounts' own bound methods."""
    assert json.loads(run(FLEET_PROGRAM, str(FIXTURE), str(FLEET_FIXTURE))) == [
        False,
        None,
        True,
        True,
        True,
        True,
    ]


BUILD_PROGRAM = """
import json, sys
import modelroute_sidecar.main
from modelroute_contract import EndpointConfig, PolicyConfig, RouterConfig
from modelroute_sidecar.configstore import ConfigStore
models = (RouterConfig, PolicyConfig, EndpointConfig)
before = [m.__pydantic_complete__ for m in models]
ConfigStore(region="eu-west").apply(open(sys.argv[1], "rb").read(), "test")
print(json.dumps([before, [m.__pydantic_complete__ for m in models]]))
"""


def test_config_models_are_built_when_the_first_config_is_validated() -> None:
    """No contract model's validator is built by the import; installing a config builds RouterConfig's
    (which validates the nested models inline), and the nested models' own stay unbuilt."""
    assert json.loads(run(BUILD_PROGRAM, str(FIXTURE))) == [[False, False, False], [True, False, False]]


SETTINGS_PROGRAM = """
import json, sys
import modelroute_sidecar.main
from modelroute_sidecar.settings import PARSER_MODULES, parse_settings
before = [n for n in PARSER_MODULES if n in sys.modules]
settings = parse_settings(["--port", "1234", "--workers", "2"], {})
after = [n for n in PARSER_MODULES if n in sys.modules]
print(json.dumps([before, after, settings.port, settings.workers]))
"""


def test_the_flag_parser_is_imported_to_parse_and_dropped_after() -> None:
    """argparse is not imported by `main`; parsing the flags loads it and takes it out again."""
    assert json.loads(run(SETTINGS_PROGRAM)) == [[], [], 1234, 2]
