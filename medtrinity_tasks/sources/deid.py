"""De-identification of names: the salt of the pseudonyms (``phi.pseudonym``) that replace anything
that could carry identity (DICOM series UIDs, file and folder names, which often hold patient ids or
dates), and the aliases that scrub file names out of reasons.

What is read from DICOM headers at all is limited by the reader's allow-list
(``sources/readers/dicom/header.py``); this module covers what the pipeline itself names.
"""

from __future__ import annotations

from pathlib import Path

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.phi import pseudonym
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


def file_aliases(salt: str, relpaths: list[str]) -> dict[str, str]:
    """Base name -> pseudonym, for scrubbing reasons that name a file."""
    return {Path(p).name: pseudonym(salt, p, "file") for p in relpaths}
