"""The sidecar process leaves pydantic's plugin loader out (`modelroute_sidecar.lean`), and its models
still validate: checked in a fresh interpreter, since this one imported pydantic's loader already."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).parents[1] / "contract" / "fixtures" / "v2" / "canary-rollout.json"

PROGRAM = """
import sys
import modelroute_sidecar.main
from modelroute_contract import RouterConfig
assert "importlib.metadata" not in sys.modules, "pydantic's plugin loader was imported"
assert "shutil" not in sys.modules, "shutil was imported"
RouterConfig.model_validate_json(open(sys.argv[1], "rb").read())
from modelroute_sidecar.settings import parse_settings
parse_settings(["--port", "0"], {})
assert "shutil" not in sys.modules, "argparse imported shutil"
print("ok")
"""


def test_sidecar_imports_leave_out_the_plugin_loader_and_shutil() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(FIXTURE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
