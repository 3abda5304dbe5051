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


def test_rotation_by_the_kubelets_symlink_swap_is_followed(tmp_path: Path) -> None:
    # the kubelet's Secret volume: token -> ..data/token, ..data -> ..<timestamp>/, swapped by rename
    def publish(stamp: str, value: str) -> None:
        directory = tmp_path / f"..{stamp}"
        directory.mkdir()
        (directory / "token").write_text(value)
        os.utime(directory / "token", ns=(5, 5))  # same mtime and length: only the inode tells
        staged = tmp_path / "..data_tmp"
        staged.symlink_to(directory.name)
        staged.replace(tmp_path / "..data")

    publish("2026_12_01_22_00_00", "token-aaaa")
    (tmp_path / "token").symlink_to("..data/token")
    token = AdminToken(str(tmp_path / "token"))
    assert token.current() == "token-aaaa"
    publish("2026_12_01_22_05_00", "token-bbbb")
    assert token.current() == "token-bbbb"
