"""De-identification end to end: DICOM files and folder names carry fake PHI; no output may."""

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.phi import pseudonym
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.sources.deid import salt_for

SOURCE = "synthetic_ct_dicom"


def test_real_dicom_sources_need_a_salt_and_pseudonyms_depend_on_it():
    source = get_source(SOURCE).model_copy(update={"synthetic": False})
    with pytest.raises(MedtrinityError, match="needs MEDTRINITY_DEID_SALT"):
        salt_for(source, load_settings({}))
    assert salt_for(source, load_settings({"MEDTRINITY_DEID_SALT": "s3cret"})) == "s3cret"
    assert pseudonym("a", "1.2.3", "series") != pseudonym("b", "1.2.3", "series")
    assert pseudonym("a", "1.2.3", "series") == pseudonym("a", "1.2.3", "series")
