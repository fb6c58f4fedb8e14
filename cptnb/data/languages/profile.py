"""Language profiles: what the corpus stages need to know about one language, in one small YAML file.

A profile holds the language's word segmentation (:mod:`cptnb.data.languages.segment`),
the language-id labels that count as this language, its sentence ends, its stopwords,
extra C4 boilerplate phrases, and the filter thresholds that differ by language (the
fields in :data:`PROFILE_FILTER_FIELDS`). The built-in ones live beside this module in
``profiles/<code>.yaml`` (vi, en, th, id); ``cptnb calibrate`` writes new ones from a
sample of the language's own text, and ``data.filters.profile`` points at such a file.

Example::

    th = get_profile("th")
    th.segmenter, th.filters["gopher_min_words"]   # ("thai", ...)
    get_profile("xx")   # ProfileMissingError naming `cptnb calibrate` and the file to write
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cptnb.data.languages.segment import SEGMENTERS, Segmenter
from cptnb.errors import ConfigError

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"

# The FilterConfig fields a profile sets (a FilterConfig field left at None takes the profile's value).
PROFILE_FILTER_FIELDS = (
    "gopher_min_words",
    "gopher_max_words",
    "gopher_min_mean_word_length",
    "gopher_max_mean_word_length",
    "gopher_min_stopwords",
    "fineweb_min_line_punct_ratio",
    "c4_drop_lines_without_terminal_punct",
    "c4_min_sentences",
)
# C4's sentence end: . ! ? … and their CJK forms, followed by a space, a closing quote or bracket, or the end.
DEFAULT_SENTENCE_END = "[.!?\u2026\u3002\uff01\uff1f]+(?=[\\s\"'\u201d\u2019\u00bb)]|$)"


class ProfileMissingError(ConfigError):
    """A language has no profile: the filters would apply thresholds made for another language."""

    def __init__(self, language: str, field: str = "language"):
        self.language = language
        super().__init__([missing_profile_message(language)], where=f"FilterConfig.{field}")


def missing_profile_message(language: str) -> str:
    """What to do when ``language`` has no profile: the command to write one and where it goes."""
    code = language if re.fullmatch(r"[a-z]{2,3}", str(language)) else "xx"
    return (
        f"no language profile for {language!r} (built in: {', '.join(builtin_languages())}): the quality filters "
        f"would judge it by another language's word counts and drop most of it. Write one from a sample of clean "
        f"{code} text: `cptnb calibrate --lang {code} --source my_{code}_sample.jsonl --out languages/{code}.yaml` "
        f"(add --segmenter char_ngram for a script without spaces between words), then use it with "
        f"`--data.filters.profile languages/{code}.yaml` (recipe YAML: data.filters.profile), or copy it to "
        f"{PROFILE_DIR}/{code}.yaml to make it built in. Or switch the filters off: --data.filters.enabled false"
    )


@dataclass(frozen=True)
class LanguageProfile:
    """One language: segmentation, language-id labels, sentence ends, stopwords and filter thresholds."""

    language: str
    name: str = ""
    segmenter: str = "whitespace"
    langid_labels: tuple[str, ...] = ()  # model labels that count as this language; empty: (language,)
    stopwords: frozenset[str] = frozenset()
    sentence_end: str = DEFAULT_SENTENCE_END  # regex that ends a sentence (C4's sentence count)
    spaces_end_sentences: bool = False  # Thai, Lao, Khmer: a space between two runs of text ends a sentence
    boilerplate_phrases: tuple[str, ...] = ()  # lowercased; lines containing one are removed (C4 policy rule)
    filters: dict[str, Any] = field(default_factory=dict)  # values of PROFILE_FILTER_FIELDS
    notes: str = ""
    calibration: dict[str, Any] | None = None  # what `cptnb calibrate` measured, when it wrote this profile
    path: str = ""  # the file it was read from

    @property
    def labels(self) -> list[str]:
        """Language-id labels to keep for this language."""
        return list(self.langid_labels or (self.language,))

    @property
    def word_segmenter(self) -> Segmenter:
        return Segmenter(self.segmenter)

    @property
    def sentence_pattern(self) -> re.Pattern[str]:
        """Compiled sentence splitter: ``sentence_end``, or whitespace too when spaces end sentences."""
        return _compile(self.sentence_end, self.spaces_end_sentences)

    def to_yaml_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("path")
        out["langid_labels"] = list(self.langid_labels)
        out["stopwords"] = sorted(self.stopwords)
        out["boilerplate_phrases"] = list(self.boilerplate_phrases)
        if out["calibration"] is None:
            out.pop("calibration")
        return out


@functools.lru_cache(maxsize=32)
def _compile(sentence_end: str, spaces_end_sentences: bool) -> re.Pattern[str]:
    return re.compile(f"(?:{sentence_end})|\\s+" if spaces_end_sentences else sentence_end)


_KEYS = {f for f in LanguageProfile.__dataclass_fields__ if f != "path"}


def read_profile(path: str | Path) -> LanguageProfile:
    """Read and check a profile YAML; every problem is reported at once, naming the file."""
    path = Path(path)
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError([f"cannot read the language profile: {err.strerror or err}"], where=where) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"not valid YAML: {err}"], where=where) from None
    if not isinstance(raw, dict):
        raise ConfigError(["a language profile is a mapping with at least `language:`"], where=where)
    problems = [f"unknown key {k!r} (known: {', '.join(sorted(_KEYS))})" for k in raw if k not in _KEYS]
    language = raw.get("language")
    if not (isinstance(language, str) and re.fullmatch(r"[a-z]{2,3}", language)):
        problems.append(f"language must be a lowercase language code such as 'th', got {language!r}")
    if raw.get("segmenter", "whitespace") not in SEGMENTERS:
        problems.append(f"segmenter must be one of {', '.join(SEGMENTERS)}, got {raw.get('segmenter')!r}")
    filters = raw.get("filters") or {}
    if not isinstance(filters, dict):
        problems.append("filters must be a mapping of FilterConfig fields to values")
        filters = {}
    problems += [
        f"filters.{k} is not a language field (language fields: {', '.join(PROFILE_FILTER_FIELDS)})"
        for k in filters if k not in PROFILE_FILTER_FIELDS
    ]
    problems += [f"filters.{k} is missing" for k in PROFILE_FILTER_FIELDS if k not in filters]
    for key in ("stopwords", "langid_labels", "boilerplate_phrases"):
        value = raw.get(key) or []
        if not (isinstance(value, list) and all(isinstance(w, str) and w.strip() for w in value)):
            problems.append(f"{key} must be a list of strings, got {value!r}")
    try:
        re.compile(str(raw.get("sentence_end", DEFAULT_SENTENCE_END)))
    except re.error as err:
        problems.append(f"sentence_end is not a valid regular expression: {err}")
    if problems:
        raise ConfigError(problems, where=where)
    return LanguageProfile(
        language=language,
        name=str(raw.get("name", "")),
        segmenter=raw.get("segmenter", "whitespace"),
        langid_labels=tuple(raw.get("langid_labels") or ()),
        stopwords=frozenset(w.lower() for w in raw.get("stopwords") or ()),
        sentence_end=str(raw.get("sentence_end", DEFAULT_SENTENCE_END)),
        spaces_end_sentences=bool(raw.get("spaces_end_sentences", False)),
        boilerplate_phrases=tuple(p.lower() for p in raw.get("boilerplate_phrases") or ()),
        filters=dict(filters),
        notes=str(raw.get("notes", "")),
        calibration=raw.get("calibration"),
        path=where,
    )


def write_profile(profile: LanguageProfile, path: str | Path) -> Path:
    """Write ``profile`` as YAML (creating folders); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(profile.to_yaml_dict(), allow_unicode=True, sort_keys=False, width=110)
    path.write_text(text, encoding="utf-8")
    return path


def builtin_languages() -> list[str]:
    """Codes of the profiles shipped with the kit."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


@functools.lru_cache(maxsize=64)
def _cached(path: str, mtime: float) -> LanguageProfile:
    return read_profile(path)


def find_profile(language: str, path: str | Path = "") -> LanguageProfile | None:
    """The profile for ``language``: the file at ``path`` if it is for that language, else the built-in one, else None.

    ``path`` is a profile for one language (the domain's); asked for another one (the replay language),
    the built-in profiles answer.
    """
    if path:
        file = Path(path)
        if not file.is_file():
            raise ConfigError([f"profile: no such file {str(path)!r} (write one with `cptnb calibrate`)"],
                              where="FilterConfig.profile")
        profile = _cached(str(file.resolve()), file.stat().st_mtime)
        if profile.language == language:
            return profile
    builtin = PROFILE_DIR / f"{language}.yaml"
    if isinstance(language, str) and re.fullmatch(r"[a-z]{2,3}", language) and builtin.is_file():
        return _cached(str(builtin), builtin.stat().st_mtime)
    return None


def get_profile(language: str, path: str | Path = "") -> LanguageProfile:
    """Like :func:`find_profile`, but a missing profile raises :class:`ProfileMissingError`."""
    profile = find_profile(language, path)
    if profile is None:
        raise ProfileMissingError(language)
    return profile


def segmentation_report(language: str, path: str | Path = "") -> dict[str, str]:
    """What ``report.json`` says about word segmentation for a corpus in ``language``."""
    from cptnb.data.languages.segment import dedup_segmentation

    profile = find_profile(language, path) if language else None
    filters = profile.word_segmenter.describe() if profile is not None else "whitespace tokens (no profile)"
    return {"language": language, "profile": profile.path if profile is not None else "",
            "filters": filters, "dedup_and_decontamination": dedup_segmentation()}
