"""clean_text's fast paths give exactly what the original code gave; ftfy still repairs every mojibake it can.

The pre-check (`may_have_mojibake`) may only skip ftfy where ftfy would change nothing,
i.e. where ftfy's detector `ftfy.badness.is_bad` is false. All sentences were written for these tests.
"""

from __future__ import annotations

import random
import re
import string
import unicodedata

import _data_reference as original
import ftfy
import ftfy.bad_codecs  # registers the sloppy-windows-* codecs
import pytest
from ftfy.badness import BADNESS_RE, is_bad

from cptnb.data import clean
from cptnb.data.clean import clean_text, may_have_mojibake

SENTENCES = {
    "vi": "Tiếng Việt có sáu thanh điệu; người Hà Nội và người Sài Gòn đọc chữ “ư” hơi khác nhau.",
    "fr": "L'été dernier, nous avons mangé des crêpes à Québec — c'était délicieux, même à 30 °C.",
    "de": "Größere Straßen führen über die Brücke nach Köln; der Preis beträgt 12,50 € pro Person.",
    "es": "¿Dónde está la estación? El niño pidió un café con leche y una tostada.",
    "ru": "Москва — столица России, а Санкт-Петербург стоит на Неве.",
    "el": "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
}
# Codecs that turn UTF-8 bytes into the mojibake ftfy knows how to undo.
CODECS = ["cp1252", "latin-1", "cp1251", "mac_roman", "cp1253", "cp1257", "cp1250", "sloppy-windows-1252"]


def _regex_alphabet(pattern: re.Pattern[str]) -> set[str]:
    """Every character a compiled regex names, literally or inside a class range."""
    from re import _constants as c
    from re import _parser

    found: set[str] = set()

    def walk(items):
        for op, av in items:
            if op is c.LITERAL:
                found.add(chr(av))
            elif op is c.IN:
                for kind, arg in av:
                    if kind is c.LITERAL:
                        found.add(chr(arg))
                    elif kind is c.RANGE:
                        found.update(map(chr, range(arg[0], arg[1] + 1)))
            elif op is c.BRANCH:
                for branch in av[1]:
                    walk(branch)
            elif op is c.SUBPATTERN:
                walk(av[-1])
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT):
                walk(av[2])

    walk(_parser.parse(pattern.pattern, pattern.flags))
    return found


VI_LETTERS = "ăâđêôơưàằầèềìòồờùừỳáắấéếíóốớúứýảẳẩẻểỉỏổởủửỷãẵẫẽễĩõỗỡũữỹạặậẹệịọộợụựỵ"
ALPHABET = sorted(_regex_alphabet(BADNESS_RE) | set(string.printable) | set(VI_LETTERS) | set(VI_LETTERS.upper()))


@pytest.mark.slow
def test_precheck_catches_every_two_character_sequence_ftfy_flags():
    # Exhaustive over the ~600 characters ftfy's detector names plus ASCII and Vietnamese letters.
    flagged = [a + b for a in ALPHABET for b in ALPHABET if is_bad(a + b)]
    assert len(flagged) > 10_000  # the check really exercises the detector
    assert [s for s in flagged if not may_have_mojibake(s)] == []


@pytest.mark.slow
def test_precheck_catches_longer_sequences_ftfy_flags():
    rng = random.Random(7)
    # Mostly text-like characters with a few mojibake ones, so that the 3-6 character rules get hit too.
    common = list(string.ascii_letters + "  .,!?'\"\n") + list(VI_LETTERS) + list(VI_LETTERS.upper())
    pool = common * 3 + ALPHABET
    samples = ["".join(rng.choice(pool) for _ in range(rng.randint(3, 8))) for _ in range(60_000)]
    flagged = [s for s in samples if is_bad(s)]
    assert len(flagged) > 2_000
    assert [s for s in flagged if not may_have_mojibake(s)] == []


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_real_mojibake_is_repaired_exactly_as_before(lang, codec):
    good = SENTENCES[lang]
    broken = good.encode("utf-8").decode(codec, errors="replace")  # bytes a codec lacks become U+FFFD
    assert broken != good
    assert clean_text(broken) == original.clean_text(broken)
    if ftfy.fix_encoding(broken) != broken:
        assert may_have_mojibake(broken)


def test_typical_mojibake_comes_back_as_the_original_text():
    codec = "sloppy-windows-1252"  # Windows-1252 as browsers decode it: what scraped mojibake is made of
    for lang in ("vi", "fr", "de"):
        good = unicodedata.normalize("NFC", SENTENCES[lang])
        once = good.encode("utf-8").decode(codec)
        assert once != good and clean_text(once) == good
        twice = once.encode("utf-8").decode(codec)
        assert clean_text(twice) == good == original.clean_text(twice)


def test_clean_prose_does_not_reach_ftfy(monkeypatch):
    calls = []
    monkeypatch.setattr(clean.ftfy, "fix_encoding", lambda text: calls.append(text) or text)
    for text in SENTENCES.values():
        clean_text(text)
    # Vietnamese, French and Spanish skip ftfy; the euro sign, Cyrillic and Greek letters are ftfy's to judge.
    assert calls == [SENTENCES["de"], SENTENCES["ru"], SENTENCES["el"]]


TRICKY = [
    "a  b\t\tc\u00a0\u00a0d\u2003e \u3000 f",
    "Xin\u200b chào\x07  \t bạn\r\n\r\n\r\n\r\nnhé ",
    "\ufeffđầu\u00addòng\u2060 x\x0b\x0c\x1c y",
    "dòng một  \n   \n\n\n  dòng hai\u202f\u205f!",
    unicodedata.normalize("NFD", "Tiếng Việt rất đẹp, phở Hà Nội"),
    "only ascii   text\r\rwith CR",
    "\x85next line\u2028sep\u2029para",
    "",
    "   ",
    "Â ÃÂ Ã¡ Ã©t Ø… ©2024 “nhà” và ‘đi’…",
]


@pytest.mark.parametrize("text", TRICKY)
def test_whitespace_and_invisible_characters_as_before(text):
    assert clean_text(text) == original.clean_text(text)


def test_lone_surrogates_become_replacement_characters():
    text = clean_text("trước\ud800sau  nữa")
    assert text == "trước\ufffdsau nữa"
    text.encode("utf-8")  # writable, unlike the input


def test_unknown_ftfy_version_runs_ftfy_on_everything(monkeypatch):
    monkeypatch.setattr(clean.ftfy, "__version__", "7.0.0")
    assert clean._mojibake_precheck() is None
    monkeypatch.setattr(clean, "_MAYBE_MOJIBAKE", None)
    assert may_have_mojibake("plain ascii")
