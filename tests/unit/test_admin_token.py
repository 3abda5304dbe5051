"""The sidecar's admin token: a Secret file that may appear or rotate after the sidecar started."""

from __future__ import annotations

import os
from pathlib import Path

from modelroute_sidecar.admin import AdminToken


def test_missing_file_refuses_until_it_appears_then_follows_rotation(tmp_path: Path) -> None:
    file = tmp_path / "token"
    token = AdminToken(str(file))
    assert token.current() == "", "no token yet: every admin call is refused"
    file.write_text("first\n")
    assert token.current() == "first"
    file.write_text("second-token")
    os.utime(file, ns=(1, 2))  # a different mtime even on coarse clocks
    assert token.current() == "second-token"
    file.unlink()
    assert token.current() == ""


def test_fixed_token_without_a_file() -> None:
    assert AdminToken(fixed="from-env").current() == "from-env"
