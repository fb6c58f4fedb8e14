"""Thresholds from data: measure the filter statistics on a sample of a language and write its profile.

The way FineWeb-2 set its per-language values: take clean reference text of the
language, measure each rule's statistic per document, and put the threshold where a
stated share of that clean text would fall outside it. Here, per document of the sample
(after :func:`~cptnb.data.clean.clean_text`), with words from the chosen segmenter:

==================================  =====================================================================
statistic                           threshold written
==================================  =====================================================================
words                               ``gopher_min_words`` = low quantile x (1 - slack)
mean word length                    ``gopher_min/max_mean_word_length`` = low / high quantile -/+ slack
distinct stopwords                  ``gopher_min_stopwords`` = low quantile x (1 - slack), stopwords being
                                    the sample's ``stopword_count`` words found in the most documents
share of lines ending in . ! ? ...  ``fineweb_min_line_punct_ratio`` = low quantile x (1 - slack), at most
                                    FineWeb's 0.12 (a clean sample never makes it stricter than FineWeb), 0
                                    under 0.05; C4's line-punctuation removal off when most lines lack it
sentences left after C4's lines     ``c4_min_sentences`` = low quantile x (1 - slack), at most C4's 5
words per character                 ``gopher_max_words`` = Gopher's 100,000 English words scaled by it
language-id labels                  ``langid_labels``: every label given to >= 10% of the sample
==================================  =====================================================================

Repetition, symbol, bullet and short-line thresholds keep Gopher's/FineWeb's values
(they are shares of the document itself, not of a language's vocabulary). The report
then runs every rule alone on the sample with the written profile and gives the share of
the sample each would drop, and the share the whole filter keeps.

Example::

    result = calibrate("th", ["data_samples/th"], out="languages/th.yaml")
    print(result.markdown())
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cptnb.data.clean import clean_text
from cptnb.data.filters import (
    C4_POLICY_PHRASES,
    DOCUMENT_RULES,
    TERMINAL_PUNCTUATION,
    FilterConfig,
    _Text,
    c4_filter,
    count_sentences,
)
from cptnb.data.languages.profile import DEFAULT_SENTENCE_END, LanguageProfile, write_profile
from cptnb.data.languages.segment import _ANY_SPACELESS, _THAI_RUN, Segmenter, thai_available
from cptnb.data.sources import read_documents
from cptnb.errors import DataError

ENGLISH_CHARS_PER_WORD = 5.7  # an English word and its space: what Gopher's 100,000-word ceiling was set for
GOPHER_MAX_WORDS = 100_000
FINEWEB_LINE_PUNCT = 0.12  # FineWeb's own value: the calibrated one may be lower (Thai: 0), never higher
MIN_SAMPLE_DOCS = 20


@dataclass
class Calibration:
    """The profile written, the statistics behind it and what each rule would drop of the sample."""

    profile: LanguageProfile
    docs: int
    quantiles: dict[str, float]
    statistics: dict[str, dict[str, float]] = field(default_factory=dict)  # per statistic: min, low q, median...
    drop_share: dict[str, float] = field(default_factory=dict)  # per rule alone: share of the sample it drops
    kept_share: float = 0.0  # share of the sample the whole filter keeps
    langid: dict[str, float] = field(default_factory=dict)  # label -> share of sample documents
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"language": self.profile.language, "docs": self.docs, "quantiles": self.quantiles,
                "segmenter": self.profile.segmenter, "statistics": self.statistics, "langid": self.langid,
                "thresholds": self.profile.filters, "drop_share": self.drop_share, "kept_share": self.kept_share,
                "profile": self.path}

    def markdown(self) -> str:
        """The report: thresholds, sample statistics, and per rule the share of the sample it would drop."""
        p, q = self.profile, self.quantiles
        lines = [f"# Calibration of `{p.language}` ({self.docs} sample documents)", "",
                 f"Segmenter: {p.word_segmenter.describe()}. Thresholds at the {q['low']:.0%} / {q['high']:.0%} "
                 f"quantiles of the sample with {q['slack']:.0%} slack. Profile: `{self.path or '(not written)'}`.",
                 "", "| statistic | min | low q | median | high q | max |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, s in self.statistics.items():
            lines.append(f"| {name} | {s['min']:.3g} | {s['low']:.3g} | {s['median']:.3g} | {s['high']:.3g} "
                         f"| {s['max']:.3g} |")
        lines += ["", "| threshold | value |", "| --- | ---: |"]
        lines += [f"| {k} | {v} |" for k, v in p.filters.items()]
        lines += ["", "Language-id labels of the sample: "
                  + ", ".join(f"{k} {v:.0%}" for k, v in self.langid.items()) + f" (kept: {', '.join(p.labels)})",
                  "", "| rule (alone) | share of the sample it drops |", "| --- | ---: |"]
        lines += [f"| {k} | {v:.1%} |" for k, v in self.drop_share.items()]
        lines += ["", f"The whole filter keeps {self.kept_share:.1%} of the sample."]
        return "\n".join(lines) + "\n"


def guess_segmenter(texts: list[str]) -> str:
    """``thai`` when most letters are Thai (``char_ngram`` without PyThaiNLP), ``char_ngram`` for other
    space-less scripts, else ``whitespace``."""
    letters = sum(ch.isalpha() for t in texts for ch in t) or 1
    thai = sum(len(m) for t in texts for m in _THAI_RUN.findall(t))
    spaceless = sum(1 for t in texts for ch in t if _ANY_SPACELESS.match(ch))
    if thai > letters / 2:
        return "thai" if thai_available() else "char_ngram"
    return "char_ngram" if spaceless > letters / 2 else "whitespace"


def _stats(values: list[float], low: float, high: float) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"min": float(a.min()), "low": float(np.quantile(a, low)), "median": float(np.median(a)),
            "high": float(np.quantile(a, high)), "max": float(a.max())}


def _langid_shares(texts: list[str]) -> dict[str, float]:
    from cptnb.data.langid import identify

    counts = Counter(identify(t)[0] for t in texts)
    return {k: round(v / len(texts), 4) for k, v in counts.most_common()}


def calibrate(
    language: str,
    sources: Iterable[Any],
    out: str | Path | None = None,
    segmenter: str = "auto",
    low_quantile: float = 0.02,
    high_quantile: float = 0.98,
    slack: float = 0.1,
    stopword_count: int = 30,
    name: str = "",
    text_field: str = "text",
) -> Calibration:
    """Measure ``sources`` (clean text of ``language``), derive a profile, write it to ``out`` when given."""
    texts = [t for t in (clean_text(d.text) for d in read_documents(list(sources), text_field)) if t.strip()]
    if len(texts) < MIN_SAMPLE_DOCS:
        raise DataError(f"calibrate needs at least {MIN_SAMPLE_DOCS} sample documents of {language!r} to set "
                        f"thresholds from, got {len(texts)} from {list(sources)}")
    seg = Segmenter(guess_segmenter(texts) if segmenter == "auto" else segmenter)
    spaceless = seg.splits_text
    base = LanguageProfile(language=language, segmenter=seg.name, spaces_end_sentences=spaceless)
    views = [_Text(t, seg) for t in texts]
    doc_freq = Counter(w for v in views for w in set(v.ngram_words) if any(ch.isalpha() for ch in w))
    stopwords = frozenset(w for w, _ in doc_freq.most_common(stopword_count))
    lo, hi = low_quantile, high_quantile

    words = [len(v.ngram_words) for v in views]
    mean_len = [v.word_chars / max(1, len(v.ngram_words)) for v in views]
    stops = [len(stopwords.intersection(v.ngram_words)) for v in views]
    punct = [_line_punct_ratio(v) for v in views]
    words_per_char = sum(words) / max(1, sum(len(t) for t in texts))
    drop_c4_lines = float(np.median(punct)) >= 0.5
    probe = _profile_config(base, stopwords, {"gopher_min_words": 0, "gopher_max_words": 10**9,
                                              "gopher_min_mean_word_length": 0.0, "gopher_max_mean_word_length": 1e9,
                                              "gopher_min_stopwords": 0, "fineweb_min_line_punct_ratio": 0.0,
                                              "c4_drop_lines_without_terminal_punct": drop_c4_lines,
                                              "c4_min_sentences": 0})
    sentences = [_sentences_after_c4(t, probe) for t in texts]
    statistics = {"words": _stats(words, lo, hi), "mean_word_length": _stats(mean_len, lo, hi),
                  "distinct_stopwords": _stats(stops, lo, hi), "line_punct_ratio": _stats(punct, lo, hi),
                  "sentences_after_c4_lines": _stats(sentences, lo, hi)}
    line_punct = min(FINEWEB_LINE_PUNCT, statistics["line_punct_ratio"]["low"] * (1 - slack))
    thresholds = {
        "gopher_min_words": int(statistics["words"]["low"] * (1 - slack)),
        "gopher_max_words": int(round(GOPHER_MAX_WORDS * ENGLISH_CHARS_PER_WORD * words_per_char, -3)),
        "gopher_min_mean_word_length": math.floor(statistics["mean_word_length"]["low"] * (1 - slack) * 10) / 10,
        "gopher_max_mean_word_length": math.ceil(statistics["mean_word_length"]["high"] * (1 + slack) * 10) / 10,
        "gopher_min_stopwords": int(statistics["distinct_stopwords"]["low"] * (1 - slack)),
        "fineweb_min_line_punct_ratio": round(line_punct, 2) if line_punct >= 0.05 else 0.0,
        "c4_drop_lines_without_terminal_punct": drop_c4_lines,
        "c4_min_sentences": max(1, min(5, int(statistics["sentences_after_c4_lines"]["low"] * (1 - slack)))),
    }
    shares = _langid_shares(texts)
    labels = [k for k, v in shares.items() if v >= 0.1]
    labels = sorted(labels, key=lambda k: k != language)  # the language's own code first when the model knows it
    quantiles = {"low": lo, "high": hi, "slack": slack}
    profile = LanguageProfile(
        language=language, name=name, segmenter=seg.name, langid_labels=tuple(labels or [language]),
        stopwords=stopwords, sentence_end=DEFAULT_SENTENCE_END, spaces_end_sentences=spaceless,
        filters=thresholds,
        notes=f"Written by `cptnb calibrate` from {len(texts)} documents; see calibration for the statistics.",
        calibration={"sources": [str(s) for s in sources], "docs": len(texts), "quantiles": quantiles,
                     "statistics": {k: {s: round(x, 4) for s, x in v.items()} for k, v in statistics.items()},
                     "langid": shares},
    )
    cfg = _profile_config(profile, stopwords, thresholds)
    result = Calibration(profile=profile, docs=len(texts), quantiles=quantiles, statistics=statistics,
                         langid=shares)
    result.drop_share, result.kept_share = _drop_shares(texts, cfg)
    if out is not None:
        result.path = str(write_profile(profile, out))
        Path(out).with_suffix(".report.md").write_text(result.markdown(), encoding="utf-8")
        Path(out).with_suffix(".report.json").write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False),
                                                         encoding="utf-8")
    return result


def _line_punct_ratio(view: _Text) -> float:
    """The FineWeb line rule's statistic: share of lines ending in terminal punctuation."""
    return sum(line.endswith(TERMINAL_PUNCTUATION) for line in view.lines) / max(1, len(view.lines))


def _profile_config(profile: LanguageProfile, stopwords: frozenset[str], thresholds: dict[str, Any]) -> FilterConfig:
    """A FilterConfig using ``profile`` (not yet written anywhere) with ``thresholds`` given by hand."""
    cfg = FilterConfig(language=profile.language, stopwords=sorted(stopwords), **thresholds)
    # The profile being written (not on disk yet): its segmenter, sentence ends and boilerplate phrases.
    object.__setattr__(cfg, "_profile", profile)
    object.__setattr__(cfg, "_segmenter", profile.word_segmenter)
    object.__setattr__(cfg, "_policy_phrases", C4_POLICY_PHRASES + profile.boilerplate_phrases)
    return cfg


def _sentences_after_c4(text: str, cfg: FilterConfig) -> int:
    kept, _ = c4_filter(text, cfg)
    return count_sentences(kept, cfg.language_profile.sentence_pattern)


def _drop_shares(texts: list[str], cfg: FilterConfig) -> tuple[dict[str, float], float]:
    fired: Counter[str] = Counter()
    kept = 0
    for text in texts:
        view = _Text(text, cfg.segmenter)
        failed = [reason for group, reason, rule in DOCUMENT_RULES if getattr(cfg, group) and rule(view, cfg)]
        c4_reason = c4_filter(text, cfg)[1] if cfg.c4 else None
        fired.update(failed + ([c4_reason] if c4_reason else []))
        kept += not failed and c4_reason is None
    order = [reason for _, reason, _ in DOCUMENT_RULES] + ["c4_lorem_ipsum", "c4_curly_bracket",
                                                           "c4_too_few_sentences"]
    return {r: round(fired[r] / len(texts), 4) for r in order}, round(kept / len(texts), 4)
