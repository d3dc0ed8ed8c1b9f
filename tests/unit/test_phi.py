"""De-identification of free text: every kind of identifier medical text carries is replaced by its
typed placeholder, and the measurements, grades and versions such text is full of are left alone."""

import logging

import pytest

from medtrinity_tasks.phi import (
    REASON_CHARS,
    clean_reason,
    deidentify,
    find_phi,
    project_logger,
    quote,
)


@pytest.mark.parametrize(
    ("text", "secret", "placeholder"),
    [
        ("Patient: John Smith, 64 years.", "John Smith", "[NAME]"),
        ("patient name: DOE, JANE", "DOE, JANE", "[NAME]"),
        ("Seen by Dr. Gregory House today.", "Gregory House", "[NAME]"),
        ("Mrs Roe was referred.", "Roe", "[NAME]"),
        ("Patient John Smith presented with cough.", "John Smith", "[NAME]"),
        ("Referring physician: Jane Q. Public", "Jane", "[NAME]"),
        ("PatientName DOE^JOHN^Q", "DOE^JOHN", "[NAME]"),
        ("MRN: 4471-2209", "4471-2209", "[ID]"),
        ("medical record number 88812345", "88812345", "[ID]"),
        ("Accession #ACC20190042", "ACC20190042", "[ID]"),
        ("patient id: PID-000123", "PID-000123", "[ID]"),
        ("NHS number 943 476 5919", "943 476 5919", "[ID]"),
        ("SSN 123-45-6789", "123-45-6789", "[ID]"),
        ("DOB: 01/02/1950", "01/02/1950", "[DATE]"),
        ("date of birth 1950-01-02", "1950-01-02", "[DATE]"),
        ("born 19500102", "19500102", "[DATE]"),
        ("D.O.B. 2 January 1950", "January 1950", "[DATE]"),
        ("DOB Jan. 2, 1950", "Jan. 2, 1950", "[DATE]"),
        ("Exam of 03/04/2021 and 2021-03-04.", "2021", "[DATE]"),
        ("Study on March 3, 2019.", "March 3, 2019", "[DATE]"),
        ("A 93-year-old woman.", "93-year-old", "[AGE]"),
        ("aged 101, frail", "101", "[AGE]"),
        ("95 yo male", "95 yo", "[AGE]"),
        ("PatientAge 097Y", "097Y", "[AGE]"),
        ("Call (555) 123-4567.", "123-4567", "[PHONE]"),
        ("tel: +44 20 7946 0958", "7946 0958", "[PHONE]"),
        ("Phone 617.555.0199", "555.0199", "[PHONE]"),
        ("Write to j.smith@example.org please.", "j.smith@example.org", "[EMAIL]"),
        ("Lives at 12 Elm Street.", "12 Elm Street", "[ADDRESS]"),
        ("Boston, MA 02115", "02115", "[ADDRESS]"),
        ("address: 4 Rue de la Paix, Paris", "Rue de la Paix", "[ADDRESS]"),
        ("Imaged at Princeton Plainsboro Teaching Hospital.", "Plainsboro", "[INSTITUTION]"),
        ("institution: Springfield General", "Springfield", "[INSTITUTION]"),
    ],
)
def test_each_kind_of_identifier_is_replaced_by_its_placeholder(text, secret, placeholder):
    cleaned = deidentify(text)
    assert secret not in cleaned and placeholder in cleaned, cleaned
    assert find_phi(text) and not find_phi(cleaned)  # what is left is clean, placeholders included


@pytest.mark.parametrize(
    "text",
    [
        "CT, axial slice 42 of 120, 0.75 x 0.75 x 5.0 mm spacing.",
        "A hypodense lesion of 24 x 18 mm in the right liver lobe, HU 30-45, window -160 to 240.",
        "The lesion measures about 1.5 x 2.0 cm; grade 3/4; T1w; 2/3 of the lobe; 5/10 slices.",
        "score 0.85, version 0.3.0, prompt medtrinity-v1, template-v2, series-3f9c0a1b2c3d4e5f60718293",
        "Cardiomegaly|Effusion; view PA; follow-up 3; patient age 065Y; 2 mm nodules; age 45.",
        "The patient is a 64-year-old man. Patient orientation L, P. Name of the finding: nodule.",
        'Background [demo-0042]: "Hepatocellular carcinoma is the most common primary liver cancer."',
        "imagesTr/liver_017.nii.gz, case_00012/imaging.nii.gz, ISIC_0024306.jpg, 00000013_005.png",
        "Medical Segmentation Decathlon, CC-BY-SA 4.0; the NIH Clinical Center chest X-ray set",
    ],
)
def test_measurements_grades_versions_and_dataset_names_are_not_phi(text):
    assert find_phi(text) == [] and deidentify(text) == text


def test_reasons_are_deidentified_on_one_line_and_capped():
    reason = clean_reason("label 'Patient: John Smith'\nis not defined " + "x" * 5000)
    assert "John" not in reason and "\n" not in reason and len(reason) == REASON_CHARS and reason.endswith("...")
    assert clean_reason("file is missing: a.png") == "file is missing: a.png"


def test_quoted_source_text_is_deidentified_and_capped():
    assert quote("DOB 01/02/1950") == "'[DATE]'"
    assert len(quote("y" * 10_000)) <= 82


def test_project_log_lines_are_deidentified_before_any_handler(caplog):
    logger = project_logger("medtrinity_tasks.test_phi")
    with caplog.at_level(logging.INFO):
        logger.info("read %s for %s", "MRN 12345678", "Mrs Jane Roe")
        logger.info("nothing to hide in %d slices", 3)
    assert "12345678" not in caplog.text and "Jane Roe" not in caplog.text and "[ID]" in caplog.text
    assert "nothing to hide in 3 slices" in caplog.text
    assert project_logger("medtrinity_tasks.test_phi") is logger and len(logger.filters) == 1


def test_reasons_keep_the_numbers_they_are_made_of():
    sizes = "volume too large: claims 32767 x 32767 x 32767 voxels, more than the 536870912 allowed"
    uid = "not an image: SOP class 1.2.840.10008.5.1.4.1.1.88.11 in 1.3.6.1.4.1.14519.5.2.1.6279.6001"
    assert clean_reason(sizes) == sizes and clean_reason(uid) == uid
    assert clean_reason("cannot read DOE^JANE_2019-03-04.dcm") == "cannot read [NAME]_[DATE].dcm"
