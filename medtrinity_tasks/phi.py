"""Personal data in free text: found and replaced by typed placeholders (``[NAME]``, ``[DATE]``, ...).

Every text that comes from a source (reports, captions and QA answers kept as ``reference_text``,
table cells and headers quoted in reasons, DICOM text attributes, reader errors) passes through
``deidentify`` before it reaches a record, a reject reason, a failure record or a log line; the
gate's PHI check (``find_phi``) looks for what is left in every text column of a record.

Detection is Microsoft Presidio's pattern recognizers (phone numbers through Google's
libphonenumber, dates, US SSN, credit card, IBAN), which need no language model, plus the
project's recognizers for what medical text carries: record numbers (MRN, accession, patient and
hospital numbers), dates of birth in the common formats, dates with month names, ages over 89,
phone numbers of any region (fictional 555 numbers included), e-mail addresses (Presidio's e-mail
recognizer fetches the public suffix list from the network), street addresses, institutions, and
names after titles, after "Patient:"-style labels and in DICOM's ``FAMILY^GIVEN`` form.
Presidio loads lazily (it imports spaCy, a second or two), once per process, and only when there is
text to look at.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
from functools import lru_cache

REASON_CHARS = 300
"""The longest reject or quarantine reason kept: reasons are for counting and reading, not for dumps."""
QUOTE_CHARS = 80
"""The most source text a message quotes."""
MIN_SCORE = 0.5
"""Presidio scores its weakest date patterns (``3/19``, ``3/2019``) 0.1-0.2: too many sizes and
ratios in medical text look like them. Those dates are caught where a label says what they are."""

PLACEHOLDERS = {
    "PERSON": "[NAME]",
    "DATE_TIME": "[DATE]",
    "DATE_OF_BIRTH": "[DATE]",
    "AGE": "[AGE]",
    "RECORD_NUMBER": "[ID]",
    "US_SSN": "[ID]",
    "CREDIT_CARD": "[ID]",
    "IBAN_CODE": "[ID]",
    "PHONE_NUMBER": "[PHONE]",
    "EMAIL_ADDRESS": "[EMAIL]",
    "ADDRESS": "[ADDRESS]",
    "INSTITUTION": "[INSTITUTION]",
}
"""Entity -> the placeholder that replaces it. Placeholders are never detected as PHI themselves."""

_NAME = r"[A-Z][a-z'’-]+\.?(?:\s+[A-Z]\.)?(?:\s+[A-Z][a-z'’-]+){0,2}"
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?"
    r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_NUMERIC_DATE = r"\d{1,4}[/.-]\d{1,2}[/.-]\d{2,4}|(?:19|20)\d{6}"
_WORDED_DATE = (
    rf"{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}|\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\.?,?\s+\d{{4}}"
)
_STREET = r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Square|Sq)"

PROJECT_PATTERNS = {
    "PERSON": [
        # titles: "Dr. Jane Roe", "Mrs Smith"
        (r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Professor|Sir|Madam)\.?\s+" + _NAME, 0.85),
        # labels: "Patient: John Smith", "Name: DOE, JANE", "referring physician: ..."
        (
            r"(?i:\b(?:patient(?:'s)?(?:\s+name)?|pt|name|surname|first\s+name|last\s+name|physician|doctor|"
            r"radiologist|referring(?:\s+physician)?|reported\s+by|signed\s+by|dictated\s+by|attending|"
            r"technologist|next\s+of\s+kin|mother|father))\s*[:=]\s*"
            r"(?:[A-Z][A-Za-z'’-]+,?(?:\s+[A-Z][A-Za-z'’.-]*){0,3})",
            0.85,
        ),
        # "Patient John Smith", "patient DOE, Jane": the label, then capitalised words
        (r"(?i:\b(?:patient|pt)\.?)\s+(?:[A-Z][A-Za-z'’-]+,?(?:\s+[A-Z][A-Za-z'’.-]*){1,3})", 0.8),
        # DICOM person names: "DOE^JOHN", "Doe^Jane^Q"
        (r"\b[A-Za-z][A-Za-z'-]*\^[A-Za-z][A-Za-z'^ -]*", 0.85),
    ],
    "RECORD_NUMBER": [
        (
            r"(?i:\b(?:MRN|medical\s+record(?:\s+(?:number|no))?|record\s+(?:number|no)|accession(?:\s+(?:number|no))?|"
            r"acc|patient\s+(?:id|number|no)|pat(?:ient)?[\s_-]?id|PID|hospital\s+(?:number|no)|NHS(?:\s+number)?|"
            r"chart(?:\s+number)?|case\s+(?:number|no)|encounter(?:\s+(?:id|number))?|visit\s+(?:id|number)|"
            r"study\s+id|SSN|social\s+security(?:\s+number)?|insurance(?:\s+(?:id|number))?|member\s+id))"
            r"\.?\s*(?:#|no\.?|number)?\s*[:#=]?\s*[A-Za-z]{0,3}[-/]?\d[\dA-Za-z/-]{2,}(?:\s\d{2,})*",
            0.9,
        ),
    ],
    "DATE_OF_BIRTH": [
        (
            rf"(?i:\b(?:DOB|D\.O\.B\.?|date\s+of\s+birth|birth\s*date|born(?:\s+on)?|b\.)\s*[:=]?\s*)"
            rf"(?:{_NUMERIC_DATE}|{_WORDED_DATE}|\d{{1,2}}/\d{{4}}|(?:19|20)\d{{2}})",
            0.95,
        ),
    ],
    "DATE_TIME": [
        (rf"\b(?:{_WORDED_DATE})\b", 0.7),
        # ISO-like, in names too ("_2019-03-04."), but not inside a dotted UID
        (r"(?<![\d.])(?:19|20)\d{2}([-._])(?:0[1-9]|1[0-2])\1(?:0[1-9]|[12]\d|3[01])(?!\.?\d)", 0.7),
        (r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b", 0.6),
    ],
    "AGE": [
        (
            r"(?i:\b(?:9\d|1[0-4]\d)\s*(?:-\s*|\s)?(?:years?|yrs?|y)\.?(?:\s*-?\s*old)?\b|\b(?:9\d|1[0-4]\d)\s*(?:yo|y/o)\b|"
            r"\bage[ds]?\s*[:=]?\s*(?:9\d|1[0-4]\d)\b|\b(?:09\d|1[0-4]\d)Y\b)",
            0.85,
        ),
    ],
    "EMAIL_ADDRESS": [(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b", 0.9)],
    "PHONE_NUMBER": [
        (r"(?<![\w.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)|\d{3})[\s.-]?\d{3}[\s.-]?\d{4}(?!\w|\.\d)", 0.7),
        (
            r"(?i:\b(?:phone|tel|telephone|fax|mobile|cell|pager)\b\.?\s*(?:no\.?|number)?\s*[:=]?\s*)"
            r"\+?\d[\d\s().-]{5,}\d",
            0.9,
        ),
    ],
    "ADDRESS": [
        (rf"\b\d{{1,5}}\s+(?:[A-Z][a-z]+\s+){{1,3}}{_STREET}\b\.?", 0.8),
        (r"\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?,\s+[A-Z]{2}\s+\d{5}(?:-\d{4})?\b", 0.8),  # "Boston, MA 02115"
        (r"(?i:\b(?:address|addr|residence|lives\s+at)\s*[:=]\s*)[^\n;]{3,80}", 0.85),
    ],
    "INSTITUTION": [
        (
            r"\b(?:(?:St\.?|Saint)\s+)?(?:[A-Z][A-Za-z'’.-]+\s+){1,4}"
            r"(?:Hospital|Medical\s+Cent(?:er|re)|Clinic|Infirmary|Health\s+System|Healthcare|Hospice|Imaging\s+Cent(?:er|re))\b",
            0.8,
        ),
        (r"(?i:\b(?:institution|hospital|facility|site)\s*(?:name)?\s*[:=]\s*)[A-Z][^\n;,]{2,60}", 0.85),
    ],
}
"""The project's recognizers: entity -> (regular expression, score). A match covers the label too
("DOB: 01/02/1950" becomes "[DATE]"), so no dangling "Patient:" is left to wonder about."""

PLACEHOLDER_TAGS = frozenset(p[1:-1] for p in [*PLACEHOLDERS.values(), "[PHI]"])
"""The words inside the placeholders, e.g. NAME: a bracketed placeholder is not a citation."""
_PLACEHOLDER = re.compile(r"\[(?:" + "|".join(sorted(PLACEHOLDER_TAGS)) + r")\]")


@lru_cache(maxsize=1)
def _recognizers() -> tuple:
    try:
        from presidio_analyzer import Pattern, PatternRecognizer
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            DateRecognizer,
            IbanRecognizer,
            PhoneRecognizer,
            UsSsnRecognizer,
        )
    except ImportError as exc:  # a core dependency: a broken install, said plainly
        raise ImportError(
            "de-identification needs Presidio: pip install presidio-analyzer presidio-anonymizer"
        ) from exc
    project = [
        PatternRecognizer(
            supported_entity=entity,
            name=f"medtrinity_{entity.lower()}",
            patterns=[Pattern(f"{entity}_{n}", regex, score) for n, (regex, score) in enumerate(patterns)],
            global_regex_flags=re.DOTALL | re.MULTILINE,  # case matters to names: Presidio's default ignores it
        )
        for entity, patterns in PROJECT_PATTERNS.items()
    ]
    presidio = [
        PhoneRecognizer(),
        DateRecognizer(),
        UsSsnRecognizer(),
        CreditCardRecognizer(),
        IbanRecognizer(),
    ]
    return tuple(presidio + project)


@lru_cache(maxsize=1)
def _anonymizer():
    from presidio_anonymizer import AnonymizerEngine
    from presidio_anonymizer.entities import OperatorConfig

    operators = {entity: OperatorConfig("replace", {"new_value": value}) for entity, value in PLACEHOLDERS.items()}
    operators["DEFAULT"] = OperatorConfig("replace", {"new_value": "[PHI]"})
    return AnonymizerEngine(), operators


_PHONE_DIGITS = re.compile(r"\d(?:[\s().+-]*\d){6,}")
"""Seven digits with at most separators between them: libphonenumber's matcher (nearly all of the
time Presidio takes) runs only on texts that have such a run."""


def _results(text: str, generic: bool = True) -> list:
    if not text or not text.strip():
        return []
    found = []
    for recognizer in _recognizers():
        if not generic and not recognizer.name.startswith("medtrinity_"):
            continue
        if recognizer.name == "PhoneRecognizer" and not _PHONE_DIGITS.search(text):
            continue
        for result in recognizer.analyze(text, entities=recognizer.supported_entities, nlp_artifacts=None):
            if result.score >= MIN_SCORE and not _PLACEHOLDER.fullmatch(text[result.start : result.end]):
                found.append(result)
    return found


def find_phi(text: str | None) -> list[str]:
    """The kinds of personal data ``text`` still holds, by placeholder word ("name", "date", ...);
    placeholders that ``deidentify`` left are not personal data."""
    return sorted({PLACEHOLDERS.get(r.entity_type, "[PHI]")[1:-1].lower() for r in _results(text or "")})


def phi_in_path(relpath: str) -> list[str]:
    """The kinds of personal data a file or folder name holds ("DOE^JOHN_19500102.png"). Only the
    project's recognizers look: Presidio's generic dates and phone numbers take the dotted UIDs and
    digit runs that name public datasets' files (``1.3.6.1.4.1...``, ``00000013_005.png``) for them."""
    words = relpath.replace("_", " ")  # "_19500102." has no word boundary before its date
    return sorted({PLACEHOLDERS.get(r.entity_type, "[PHI]")[1:-1].lower() for r in _results(words, generic=False)})


def deidentify(text: str | None, generic: bool = True) -> str | None:
    """``text`` with every piece of personal data replaced by its typed placeholder. ``generic=False``
    leaves out Presidio's generic dates and phone numbers, which take sizes and UIDs for them."""
    if text is None:
        return None
    results = _results(text, generic)
    if not results:
        return text
    engine, operators = _anonymizer()
    return engine.anonymize(text=text, analyzer_results=results, operators=operators).text


def pseudonym(salt: str, value: str, kind: str) -> str:
    """E.g. 'series-3f9c...': stable for one salt, not reversible without it."""
    digest = hashlib.sha256("\x1f".join((salt, value)).encode()).hexdigest()
    return f"{kind}-{digest[:24]}"


def scrub(text: str, names: dict[str, str]) -> str:
    """``text`` with every name in ``names`` replaced by its pseudonym, longest first."""
    for name, alias in sorted(names.items(), key=lambda item: -len(item[0])):
        text = text.replace(name, alias)
    return text


def published_path(relpath: str, salt: str) -> str:
    """``relpath`` with each folder or file name that holds personal data replaced by a pseudonym
    (a file keeps its extensions, which say its format): 'DOE_JOHN/19500102_ct.nii.gz' becomes
    'folder-3f9c.../file-a1b2....nii.gz'. A clean path comes back as it is."""
    parts = relpath.split("/")
    for n, part in enumerate(parts):
        if phi_in_path(part):
            last = n == len(parts) - 1
            suffix = "".join(f".{ext}" for ext in part.split(".")[1:][-2:] if ext.isalnum() and len(ext) <= 4)
            alias = pseudonym(salt, "/".join(parts[: n + 1]), "file" if last else "folder")
            parts[n] = alias + suffix if last else alias
    return "/".join(parts)


def name_aliases(row: dict) -> dict[str, str]:
    """Real name -> published pseudonym, for an input renamed because its name held personal data
    (``file_relpath`` is where it lies, ``source_relpath`` what is published)."""
    real, alias = row.get("file_relpath"), row.get("source_relpath")
    if not real or real == alias:
        return {}
    return {real: alias, posixpath.basename(real): posixpath.basename(alias)}


def clean_reason(reason: str, aliases: dict[str, str] | None = None) -> str:
    """A reject or quarantine reason as it may be recorded: renamed files named by their pseudonyms,
    de-identified, on one line, and capped. Reasons quote source text through ``quote`` already;
    this pass catches what a library's message carries, and keeps the numbers reasons are made of
    ("claims 32767 x 32767 x 32767 voxels") that Presidio's phone and date patterns would take."""
    reason = " ".join(deidentify(scrub(reason, aliases or {}), generic=False).split())
    return shortened(reason, REASON_CHARS)


def shortened(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, "..." marking the cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quote(value) -> str:
    """Source text (a cell, a header, a name) as a message may quote it: de-identified and capped."""
    text = deidentify(str(value))
    return repr(shortened(text))


class DeidentifyingFilter(logging.Filter):
    """Log records of the project's loggers with their message de-identified, arguments merged."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = deidentify(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def project_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` whose records are de-identified before any handler sees them."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, DeidentifyingFilter) for f in logger.filters):
        logger.addFilter(DeidentifyingFilter())
    return logger
