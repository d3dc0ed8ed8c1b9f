"""Sources staged on S3: a local mirror that every listing brings in step with the bucket, so
layouts and readers work on files whatever the staging. Objects are fetched when new or changed
(size or modification time), and files whose objects are gone are removed."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.phi import project_logger
from medtrinity_tasks.sources.confinement import confined
from medtrinity_tasks.storage import open_store

log = project_logger(__name__)  # de-identified log lines


def mirror(uri: str, destination: Path, settings: Settings) -> dict[str, int]:
    """Bring ``destination`` in step with the objects under ``uri``; returns what it did."""
    store = open_store(uri, settings)  # an unreachable endpoint or a missing bucket fails here
    destination.mkdir(parents=True, exist_ok=True)
    done = {"fetched": 0, "kept": 0, "removed": 0, "refused": 0}
    present = set()
    for key, size, modified in store.objects():
        if key.endswith("/"):
            continue  # folder markers
        relpath = posixpath.normpath(key)
        folder, name = posixpath.split(relpath)
        try:  # the key, and any link already in the mirror: nothing is written outside it
            local = confined(destination, relpath)
            partial = confined(destination, posixpath.join(folder, f".{name}.partial-{os.getpid()}"))
        except InputRejected:
            done["refused"] += 1
            log.warning("source mirror: an object key or a link in the mirror leads outside it; not mirrored")
            continue
        present.add(relpath)
        stamp = modified.timestamp()
        if local.is_file() and local.stat().st_size == size and abs(local.stat().st_mtime - stamp) < 1:
            done["kept"] += 1
            continue
        local.parent.mkdir(parents=True, exist_ok=True)
        store.download(key, partial)
        os.utime(partial, (stamp, stamp))
        os.replace(partial, local)  # atomic: a reader sees the old file or the new one
        done["fetched"] += 1
    for folder, _, names in os.walk(destination):
        for name in names:
            path = Path(folder, name)
            if path.relative_to(destination).as_posix() not in present and ".partial-" not in name:
                path.unlink()
                done["removed"] += 1
    log.info("source mirror %s: %s", destination, done)
    return done
