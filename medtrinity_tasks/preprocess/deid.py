"""De-identification: salted pseudonyms for anything that could carry identity (DICOM series UIDs,
file and folder names, which often hold patient ids or dates), and reasons scrubbed of names.

What is read from DICOM headers at all is limited by the reader's allow-list
(``sources/readers/dicom.py``); this module covers what the pipeline itself names.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.sources.catalog import SourceEntry

SYNTHETIC_SALT = "medtrinity-synthetic-samples"
"""Only for synthetic sample sources, which hold no identities; real sources need MEDTRINITY_DEID_SALT."""


def salt_for(source: SourceEntry, settings: Settings) -> str:
    if settings.deid_salt:
        return settings.deid_salt
    if source.synthetic:
        return SYNTHETIC_SALT
    raise MedtrinityError(
        f"source {source.id} needs MEDTRINITY_DEID_SALT: a secret that salts the pseudonyms replacing "
        "series and file names (keep it constant across runs so record ids stay stable)"
    )


def pseudonym(salt: str, value: str, kind: str) -> str:
    """E.g. 'series-3f9c...': stable for one salt, not reversible without it."""
    digest = hashlib.sha256("\x1f".join((salt, value)).encode()).hexdigest()
    return f"{kind}-{digest[:24]}"


def scrub(text: str, names: dict[str, str]) -> str:
    """``text`` with every file name in ``names`` replaced by its pseudonym."""
    for name, alias in sorted(names.items(), key=lambda item: -len(item[0])):
        text = text.replace(name, alias)
    return text


def file_aliases(salt: str, relpaths: list[str]) -> dict[str, str]:
    """Base name -> pseudonym, for scrubbing reasons that name a file."""
    return {Path(p).name: pseudonym(salt, p, "file") for p in relpaths}
