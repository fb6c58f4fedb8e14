"""Language profiles (issue 19): segmentation, each profile's rule decisions, calibration, planted bad documents."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cptnb.config import DataConfig
from cptnb.data import decontam
from cptnb.data.filters import REASONS, FilterConfig, _Text, quality_reason
from cptnb.data.languages import (
    ProfileMissingError,
    Segmenter,
    builtin_languages,
    get_profile,
    read_profile,
    script_spaced,
)
from cptnb.data.languages.calibrate import calibrate
from cptnb.data.languages.segment import char_ngrams, count_words
from cptnb.data.pipeline import CorpusStream
from cptnb.errors import ConfigError
from cptnb.paths import data_samples_dir

ROOT = data_samples_dir()


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _texts(lang: str) -> list[str]:
    return [d["text"] for p in sorted((ROOT / lang).glob("*.jsonl")) for d in _jsonl(p)]


# --- segmentation ---------------------------------------------------------------------------------------------


def test_thai_segmenter_cuts_words_and_leaves_latin_and_numbers_alone():
    words = Segmenter("thai").words("ฉันไปตลาดเมื่อเช้านี้ กับ Somchai 25 คน")
    assert words[:3] == ["ฉัน", "ไป", "ตลาด"]
    assert "Somchai" in words and "25" in words
    assert len(words) >= 8  # whitespace would give 5 tokens


def test_char_ngram_fallback_and_whitespace_identity():
    assert char_ngrams("abcd") == "ab bc cd" and char_ngrams("a") == "a"
    assert Segmenter("char_ngram").words("ສະບາຍດີ") == ["ສະ", "ະບ", "ບາ", "າຍ", "ຍດ", "ດີ"]
    text = "Hà Nội là thủ đô của Việt Nam."
    assert Segmenter("whitespace").spaced(text) is text
    with pytest.raises(ValueError, match="segmenter must be one of"):
        Segmenter("jieba")


def test_script_spaced_changes_only_spaceless_scripts():
    vi = "Sáng nay trời mưa to, đường ngập nước."
    assert script_spaced(vi) is vi and count_words(vi) == len(vi.split())
    th = "วันนี้อากาศดีมาก"
    assert script_spaced(th).split() == Segmenter("thai").words(th)
    assert count_words("ฉันไปตลาด") == 3
    assert script_spaced("line one\nวันนี้ฝนตก").count("\n") == 1  # lines stay where they were


# --- profiles ---------------------------------------------------------------------------------------------------


def test_builtin_profiles_and_vi_en_values_unchanged():
    assert {"vi", "en", "th", "id"} <= set(builtin_languages())
    vi, en = FilterConfig.for_language("vi"), FilterConfig.for_language("en")
    # The values filters.py held before the profiles existed (issue 19 moved them, unchanged).
    assert (vi.gopher_min_words, vi.gopher_max_words, vi.gopher_min_mean_word_length, vi.gopher_max_mean_word_length,
            vi.gopher_min_stopwords) == (70, 140_000, 2.0, 7.0, 5)
    assert (en.gopher_min_words, en.gopher_max_words, en.gopher_min_mean_word_length, en.gopher_max_mean_word_length,
            en.gopher_min_stopwords) == (50, 100_000, 3.0, 10.0, 2)
    for cfg in (vi, en):
        assert (cfg.fineweb_min_line_punct_ratio, cfg.c4_drop_lines_without_terminal_punct, cfg.c4_min_sentences) == (
            0.12, True, 5)
        assert cfg.segmenter.name == "whitespace"
    assert en.stopword_set == {"the", "be", "to", "of", "and", "that", "have", "with"}
    th = get_profile("th")
    assert th.segmenter == "thai" and th.spaces_end_sentences and th.labels == ["th"]
    assert FilterConfig.for_language("th").c4_drop_lines_without_terminal_punct is False


def test_missing_profile_names_calibrate_and_the_file(tmp_path):
    with pytest.raises(ProfileMissingError) as err:
        get_profile("sw")
    text = str(err.value)
    assert "cptnb calibrate --lang sw" in text and "languages/sw.yaml" in text and "data.filters.profile" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text("language: TH\nsegmenter: jieba\nfilters: {gopher_min_words: 3, colour: red}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        read_profile(bad)
    text = str(err.value)
    assert str(bad) in text and "segmenter must be one of" in text and "filters.colour" in text
    assert "filters.c4_min_sentences is missing" in text and "lowercase language code" in text


def test_unsupported_language_stops_prepare_with_the_message_not_a_traceback(capsys, tmp_path):
    from cptnb.cli import main

    code = main(["prepare", "--data.sources", str(ROOT / "th"), "--data.language", "sw", "--model.name",
                 "tiny-llama", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "no language profile for 'sw'" in err and "cptnb calibrate --lang sw" in err
    assert "Traceback" not in err


# --- each profile's rule decisions on crafted documents ---------------------------------------------------------

TH_CLEAN = _texts("th")[0] if (ROOT / "th").is_dir() else ""


@pytest.mark.parametrize("lang", ["th", "id"])
def test_clean_sample_and_heldout_documents_pass_their_profile(lang):
    cfg = FilterConfig.for_language(lang)
    texts = _texts(lang) + [d["text"] for d in _jsonl(ROOT / "heldout" / f"{lang}_heldout.jsonl")]
    dropped = {t[:40]: quality_reason(t, cfg)[0] for t in texts if quality_reason(t, cfg)[0]}
    assert not dropped
    # Thai under the English profile: a paragraph is a handful of whitespace "words", so nearly all would go.
    if lang == "th":
        assert all(quality_reason(t, FilterConfig.for_language("en"))[0] for t in texts)


def test_thai_rules_decide_on_segmented_words():
    cfg = FilterConfig.for_language("th")
    para = TH_CLEAN.split("\n\n")[0]
    assert len(para.split()) < cfg.gopher_min_words <= len(_Text(para, cfg.segmenter).ngram_words) + 200
    assert quality_reason(para, cfg)[0] == "gopher_word_count"  # one paragraph is too short
    spam = "\n\n".join(["ซื้อเลยวันนี้ ลดราคาพิเศษสุดคุ้ม ส่งฟรีทั่วประเทศ"] * 30)
    assert quality_reason(spam, cfg)[0].startswith("gopher_")
    no_stopwords = " ".join(["ทุเรียนหมอนทองกล้วยหอมมะม่วงน้ำดอกไม้มังคุดเงาะลำไย"] * 40)
    assert quality_reason(no_stopwords, cfg)[0] in {"gopher_stopwords", "gopher_top_2gram", "gopher_dup_paragraphs",
                                                    "gopher_top_3gram", "gopher_top_4gram", "gopher_dup_5gram"}
    cookie = TH_CLEAN + "\nเว็บไซต์นี้ใช้คุกกี้ กรุณาอ่านนโยบายความเป็นส่วนตัวของเรา"
    reason, kept = quality_reason(cookie, cfg)
    assert reason is None and "คุกกี้" not in kept and kept.startswith(TH_CLEAN[:50])


def test_indonesian_rules():
    cfg = FilterConfig.for_language("id")
    clean = _texts("id")[0]
    assert quality_reason(clean, cfg)[0] is None
    assert quality_reason(clean.split("\n\n")[0], cfg)[0] == "gopher_word_count"
    english = _jsonl(ROOT / "en" / "general.jsonl")[0]["text"]
    assert quality_reason(english, cfg)[0] == "gopher_stopwords"  # none of the Indonesian stopwords
    reason, kept = quality_reason(clean + "\nSitus ini menggunakan cookie sesuai kebijakan privasi kami.", cfg)
    assert reason is None and "cookie" not in kept


# --- calibration ------------------------------------------------------------------------------------------------


def test_calibrate_writes_quantile_thresholds_and_a_drop_report(tmp_path):
    out = tmp_path / "th.yaml"
    result = calibrate("th", [ROOT / "th"], out=out, low_quantile=0.05, slack=0.2)
    profile = read_profile(out)
    assert profile.segmenter == "thai" and profile.filters == result.profile.filters
    words = [len(_Text(t, Segmenter("thai")).ngram_words) for t in _texts("th")]
    assert profile.filters["gopher_min_words"] == int(np.quantile(words, 0.05) * 0.8)
    assert profile.filters["fineweb_min_line_punct_ratio"] == 0.0  # Thai lines do not end in a full stop
    assert len(profile.stopwords) == 30 and "ที่" in profile.stopwords
    assert result.kept_share >= 0.9 and set(result.drop_share) == set(REASONS)
    report = out.with_suffix(".report.md").read_text(encoding="utf-8")
    assert "gopher_word_count" in report and "share of the sample it drops" in report
    # The written profile is used through data.filters.profile.
    cfg = FilterConfig(language="th", profile=str(out))
    assert cfg.gopher_min_words == profile.filters["gopher_min_words"]
    assert cfg.resolved("en").gopher_min_words == 50  # another language: the built-in profile
    with pytest.raises(Exception, match="at least 20 sample documents"):
        calibrate("th", [ROOT / "heldout" / "th_heldout.jsonl"])


# --- planted bad documents through the corpus stages ------------------------------------------------------------


def _planted(lang: str, wrong_language_text: str) -> list[dict]:
    clean = _texts(lang)
    heldout = [d["text"] for d in _jsonl(ROOT / "heldout" / f"{lang}_heldout.jsonl")]
    lambada = _jsonl(ROOT / f"eval_{lang}" / f"lambada_{lang}" / "test.jsonl")[0]
    # The passage copied whole, target word included (a full stop after it, or C4 would remove that line anyway).
    passage = lambada["text"] + ("" if lang == "th" else ".")
    near = re.sub(r"\S+", lambda m: m.group() + "x" if m.start() % 97 == 0 else m.group(), clean[3], count=0)
    menu = "\n".join(["Home", "About", "Login", "Search"] + [w for w in clean[0].split()[:6]])
    bad = {
        "boilerplate": menu,
        "repetition_spam": "\n\n".join([clean[5].split("\n\n")[0][:80]] * 25),
        "wrong_language": wrong_language_text,
        "mojibake_copy": clean[1].encode("utf-8").decode("latin-1"),  # clean() repairs it: then an exact copy
        "exact_copy": clean[2],
        "near_copy": near,
        "eval_passage": heldout[0] + "\n\n" + passage,
    }
    if lang == "th":  # mojibake that cannot be repaired (its C1 bytes lost on the way): not Thai any more
        bad["mojibake_lost"] = re.sub("[\x80-\x9f]", "", heldout[1].encode("utf-8").decode("latin-1"))
    rows = [{"id": f"clean-{i}", "text": t} for i, t in enumerate(clean)]
    return rows + [{"id": f"bad-{k}", "text": v} for k, v in bad.items()]


@pytest.mark.parametrize("lang", ["th", "id"])
def test_planted_bad_documents_are_dropped_with_reasons_and_clean_ones_kept(lang, tmp_path):
    other = _jsonl(ROOT / "en" / "general.jsonl")[0]["text"] if lang == "th" else _texts("th")[0]
    rows = _planted(lang, other)
    src = tmp_path / "corpus.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cfg = DataConfig(sources=[str(src)], language=lang, num_proc=1, eval_tasks=[str(ROOT / f"eval_{lang}")])
    index = decontam.build_contamination_index(cfg.eval_tasks, cfg.decontam.ngram_words,
                                               cfg.decontam.short_text_min_words)
    stream = CorpusStream(cfg, cfg.sources, lang, index)
    kept = [d.id for d in stream.documents()]
    clean_ids = [r["id"] for r in rows if r["id"].startswith("clean")]
    assert sum(i in kept for i in clean_ids) >= 0.9 * len(clean_ids)
    assert not [i for i in kept if i.startswith("bad-")]
    assert kept == clean_ids  # all of them, here
    # One drop per planted document, each under the first rule it fails: the menu page is too short, the spam's
    # repeated fragment holds too few stopwords, the other language (and Thai mojibake that lost its bytes) fail
    # language id, the exact and the repaired mojibake copy are exact duplicates, then the near copy and the
    # document carrying a lambada passage.
    assert stream.drops.by_reason() == {
        "wrong_language": 2 if lang == "th" else 1, "gopher_word_count": 1, "gopher_stopwords": 1,
        "exact_duplicate": 2, "near_duplicate": 1, "contaminated": 1,
    }
    assert sum(stream.drops.by_reason().values()) == len(rows) - len(clean_ids)


def test_report_says_how_words_were_cut():
    from cptnb.data.languages.profile import segmentation_report

    th = segmentation_report("th")
    assert "PyThaiNLP" in th["filters"] and th["profile"].endswith("th.yaml")
    assert "character bigrams (fallback" in th["dedup_and_decontamination"]
    assert segmentation_report("vi")["filters"] == "whitespace tokens"


@pytest.mark.parametrize("lang", ["th", "id"])
def test_language_id_recognises_the_new_sample_languages(lang):
    from cptnb.data.langid import identify

    texts = _texts(lang) + [d["text"] for d in _jsonl(ROOT / "heldout" / f"{lang}_heldout.jsonl")]
    labels = [identify(t) for t in texts]
    assert all(code == lang and score >= 0.65 for code, score in labels), labels  # FineWeb's 0.65
