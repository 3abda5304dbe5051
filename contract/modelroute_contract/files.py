"""Noticing that a mounted file changed, the one way both sides do it.

Kubernetes rewrites mounted ConfigMaps and Secrets by swapping a `..data` symlink; `os.stat` follows it,
so a new version shows as a new (modification time, size, inode). The sidecar's config file, upstream
credentials, admin token and upstream TLS material, and the operator's webhook serving certificate are
all re-read when their stamp changes. Standard library only (like the whole contract package).
"""

from __future__ import annotations

import os
from pathlib import Path

FileStamp = tuple[int, int, int]
"""(mtime in ns, size, inode) of a file, as `stat` follows symlinks."""


def file_stamp(path: str | os.PathLike[str] | Path) -> FileStamp:
    """The file's stamp; equal stamps mean an unchanged file. Raises OSError when it cannot be read."""
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)
