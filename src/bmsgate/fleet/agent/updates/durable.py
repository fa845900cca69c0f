"""Making what the updates write survive a power cut: flushing files and directories to disk.

A Raspberry Pi on an SD card loses power routinely; a rename is durable only once its directory is
flushed, and a file's content only once the file is. The journal, the slots and the software switch all
use these before they name what they wrote as the truth.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["sync_directory", "sync_tree"]


def sync_directory(directory: Path) -> None:
    """Flush a directory's entries (renames, new files) to disk.

    Raises:
        OSError: the file system refused.
    """
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_tree(root: Path) -> None:
    """Flush every file below `root` to disk, then every directory (deepest first), then `root` itself.

    Raises:
        OSError: the file system refused.
    """
    directories = [root]
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            directories.append(path)
            continue
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    for directory in sorted(directories, key=lambda path: len(path.parts), reverse=True):
        sync_directory(directory)
