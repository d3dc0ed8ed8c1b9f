"""Paths kept inside a source directory: every path a layout lists, pairs or reads, every file a first stage
opens and every object a mirror writes goes through ``confined``, so a name climbing out of the directory or a
link leading out of it becomes a reject instead of a read."""

from __future__ import annotations

import errno
import posixpath
from pathlib import Path

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.phi import quote

NAME_MAX = 255
"""The longest file or folder name, in bytes, that Linux file systems hold."""
LINK_LEADS_OUT = "symbolic link leads outside the source directory"
BROKEN_LINK = "broken or looping symbolic link"


def confined(root: Path, relpath: str) -> Path:
    """``root / relpath`` once it is known to stay inside ``root`` with the symbolic links of every
    component resolved; otherwise ``InputRejected`` with the reason. Layouts call it for every path
    they list or pair, and the first stages for every file they open: a link swapped after the
    listing is caught when the file is opened. The path comes back as named, not resolved, because
    readers judge formats by file name and reasons name files by it."""
    if _unsafe_name(relpath):
        raise InputRejected("path leaves the source directory", quote(relpath))
    try:
        relpath.encode()
    except UnicodeEncodeError:  # bytes the file system gave that are not UTF-8: no record can name them
        raise InputRejected("file name is not valid UTF-8", quote(relpath)) from None
    if any(len(part.encode()) > NAME_MAX for part in relpath.split("/")):
        raise InputRejected(f"file name is longer than {NAME_MAX} bytes", quote(relpath))
    path = root / relpath
    try:
        target = path.resolve(strict=True)
    except RuntimeError:  # a loop, on Python before 3.13
        raise InputRejected(BROKEN_LINK) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP or _is_link(path):
            raise InputRejected(BROKEN_LINK) from None
        target = path.resolve()  # missing or unreadable: where it would be must still lie inside
    if not target.is_relative_to(root.resolve()):
        raise InputRejected(LINK_LEADS_OUT)
    return path


def escapes_root(relpath: str) -> bool:
    """Whether a path named by a source (a listing, a table, an archive member, an object key) would
    land outside the source directory: absolute (POSIX or a Windows drive) or climbing out with ".."."""
    normalised = posixpath.normpath(relpath.replace("\\", "/"))
    return normalised.startswith(("/", "../")) or normalised == ".." or relpath[1:2] == ":"


def _unsafe_name(relpath: str) -> bool:
    """Names refused before any join: NUL, backslashes (a separator elsewhere), any ".." and what
    ``escapes_root`` refuses (absolute or drive-letter paths)."""
    return "\0" in relpath or "\\" in relpath or ".." in relpath.split("/") or escapes_root(relpath)


def _is_link(path: Path) -> bool:
    try:
        return path.is_symlink()
    except OSError:  # a name the file system refuses outright is no link
        return False
