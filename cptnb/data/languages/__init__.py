"""Language profiles and word segmentation: what the corpus stages need to know about each language.

- :mod:`~cptnb.data.languages.segment`: one interface for cutting text into words (whitespace,
  Thai via PyThaiNLP, character bigrams as the fallback for other scripts without spaces).
- :mod:`~cptnb.data.languages.profile`: one YAML file per language (``profiles/<code>.yaml``):
  segmenter, language-id labels, sentence ends, stopwords, filter thresholds.
- :mod:`~cptnb.data.languages.calibrate`: measure the rule statistics on a sample of a language and
  write a profile whose thresholds sit at stated quantiles (``cptnb calibrate``).
"""

from cptnb.data.languages.profile import (
    PROFILE_FILTER_FIELDS,
    LanguageProfile,
    ProfileMissingError,
    builtin_languages,
    find_profile,
    get_profile,
    read_profile,
    write_profile,
)
from cptnb.data.languages.segment import Segmenter, script_spaced

__all__ = [
    "PROFILE_FILTER_FIELDS", "LanguageProfile", "ProfileMissingError", "Segmenter", "builtin_languages",
    "find_profile", "get_profile", "read_profile", "script_spaced", "write_profile",
]
