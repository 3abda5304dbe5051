"""The one throttled reloader (`modelroute_contract.files.FileCache`) behind upstream keys, client keys,
upstream TLS and the admin token: nothing is stat'ed within the interval, a changed file is loaded once, a
broken file is looked at once per interval and never answered with the value it replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelroute_contract import CredentialRef
from modelroute_contract.files import FileCache, file_stamp
from modelroute_sidecar.credentials import ClientKeys, CredentialError, UpstreamCredentials


class Counting:
    """A file behind a FileCache, counting the stats and loads the cache makes."""

    def __init__(self, path: Path) -> None:
        self.path, self.stats, self.loads = path, 0, 0

    def stamps(self) -> tuple[tuple[int, int, int], ...]:
        self.stats += 1
        return (file_stamp(self.path),)

    def load(self) -> str:
        self.loads += 1
        return self.path.read_text()


def rotate(path: Path, text: str) -> None:
    """Replace the file as the kubelet does (a new inode behind the same name)."""
    new = path.with_suffix(".new")
    new.write_text(text)
    os.replace(new, path)


def test_within_the_interval_no_file_is_looked_at(tmp_path: Path) -> None:
    now = [0.0]
    cache: FileCache[str, str] = FileCache(2.0, clock=lambda: now[0])
    f = Counting(tmp_path / "key")
    f.path.write_text("one")
    assert cache.get("k", f.stamps, f.load) == "one"
    rotate(f.path, "two")
    now[0] = 1.9
    assert cache.fresh("k") == "one" and cache.get("k", f.stamps, f.load) == "one"
    assert (f.stats, f.loads) == (1, 1)
    now[0] = 2.0
    assert cache.fresh("k") is None
    assert cache.get("k", f.stamps, f.load) == "two"
    assert (f.stats, f.loads) == (2, 2)
    now[0] = 4.5  # unchanged since: stat'ed, not loaded
    assert cache.get("k", f.stamps, f.load) == "two"
    assert (f.stats, f.loads) == (3, 2)


def test_a_broken_file_is_retried_once_per_interval_and_never_answered_stale(tmp_path: Path) -> None:
    now = [0.0]
    cache: FileCache[str, str] = FileCache(2.0, clock=lambda: now[0])
    f = Counting(tmp_path / "key")
    f.path.write_text("good")
    assert cache.get("k", f.stamps, f.load) == "good"
    f.path.unlink()
    now[0] = 3.0
    for _ in range(100):  # a request storm against a missing file: one stat, the same error each time
        with pytest.raises(FileNotFoundError):
            cache.get("k", f.stamps, f.load)
    assert f.stats == 2 and cache.fresh("k") is None
    f.path.write_text("back")
    now[0] = 5.0
    assert cache.get("k", f.stamps, f.load) == "back"


def test_forget_reloads_whatever_the_stamps_say(tmp_path: Path) -> None:
    cache: FileCache[str, str] = FileCache(60.0, clock=lambda: 0.0)
    f = Counting(tmp_path / "key")
    f.path.write_text("one")
    cache.get("k", f.stamps, f.load)
    cache.forget("k")
    cache.get("k", f.stamps, f.load)
    assert f.loads == 2


def test_upstream_keys_follow_a_rotation_on_the_injected_clock(tmp_path: Path) -> None:
    now = [0.0]
    (tmp_path / "openai").mkdir()
    key = tmp_path / "openai" / "api-key"
    key.write_text("sk-one\n")
    creds = UpstreamCredentials(tmp_path, clock=lambda: now[0])
    ref = CredentialRef(secret="openai", key="api-key")
    assert creds.authorization(ref) == "Bearer sk-one"
    rotate(key, "sk-two\n")
    assert creds.authorization(ref) == "Bearer sk-one"  # within the interval
    now[0] = 10.0
    assert creds.authorization(ref) == "Bearer sk-two"
    rotate(key, "two\nlines\n")
    now[0] = 20.0
    with pytest.raises(CredentialError, match="several lines") as caught:
        creds.authorization(ref)
    assert "lines" not in str(caught.value).replace("several lines", "")  # the secret is not quoted
    with pytest.raises(CredentialError):  # not the previous key: the attempt fails closed
        creds.authorization(ref)


def test_client_keys_keep_the_last_good_table_and_retry_per_interval(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "keys.json"
    path.write_text('{"k1": "team-a"}')
    keys = ClientKeys(path, clock=lambda: now[0])
    assert keys.lookup("k1") is not None and keys.lookup("k1").tenant == "team-a"  # type: ignore[union-attr]
    rotate(path, "{not json")
    now[0] = 5.0
    assert keys.lookup("k1") is not None  # a bad edit keeps the last good table
    rotate(path, '{"k2": "team-b"}')
    assert keys.lookup("k2") is None  # still within the interval of the failed look
    now[0] = 10.0
    assert keys.lookup("k2") is not None and keys.lookup("k1") is None


def test_a_broken_yaml_keys_file_is_named_by_place_never_quoted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from modelroute_sidecar.credentials import parse_client_keys

    with pytest.raises(ValueError, match="not valid YAML") as refused:
        parse_client_keys("sk-live-first: team-a\nsk-live-second: [team-b\n")
    assert "line 3" in str(refused.value) and "sk-live" not in str(refused.value)
    now = [0.0]
    path = tmp_path / "keys.yaml"
    path.write_text("sk-live-first: team-a\n")
    keys = ClientKeys(path, clock=lambda: now[0])
    rotate(path, "sk-live-first: team-a\nsk-live-second: [team-b\n")
    with caplog.at_level("ERROR"):
        for step in range(1, 4):  # within one interval the same failure is answered, and logged once
            now[0] = 5.0 + step * 0.1
            assert keys.lookup("sk-live-first") is not None
    errors = [r.getMessage() for r in caplog.records if "client keys" in r.getMessage()]
    assert len(errors) == 1 and "sk-live" not in errors[0]
