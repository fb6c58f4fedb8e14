"""Quality filters: every rule fires on a crafted bad document and spares good prose.

All paragraphs below were written for these tests.
"""

from __future__ import annotations

import json

import pytest

from cptnb.data.documents import Document, DropCounter
from cptnb.data.filters import (
    REASONS,
    FilterConfig,
    c4_filter,
    count_sentences,
    dup_ngram_char_ratio,
    filter_documents,
    quality_reason,
    top_ngram_char_ratio,
)
from cptnb.errors import ConfigError

VI_NEWS = (
    "Sáng nay, Ủy ban nhân dân quận tổ chức lễ khánh thành thư viện cộng đồng mới trên đường Nguyễn Trãi. "
    "Công trình rộng gần tám trăm mét vuông, có phòng đọc cho thiếu nhi, khu máy tính và một góc nhỏ dành cho "
    "người cao tuổi. Theo ban quản lý, thư viện sẽ mở cửa tất cả các ngày trong tuần, kể cả thứ bảy và chủ nhật.\n\n"
    "Bà Trần Thị Mai, một giáo viên nghỉ hưu sống gần đó, cho biết bà đã chờ ngày này từ lâu. Trước đây, muốn mượn "
    "sách, bà phải đi xe buýt gần một tiếng đồng hồ. Nhiều phụ huynh cũng vui mừng vì con em họ có thêm chỗ học bài "
    "sau giờ tan trường. Dự kiến trong năm tới, thư viện sẽ nhận thêm khoảng năm nghìn đầu sách do người dân và các "
    "doanh nghiệp quyên góp."
)
VI_ESSAY = (
    "Cà phê được người Pháp đưa vào Việt Nam từ cuối thế kỷ mười chín, ban đầu trồng thử ở một số nhà thờ tại miền "
    "Bắc. Về sau, vùng đất đỏ ba-dan ở Tây Nguyên tỏ ra thích hợp hơn cả, nhờ khí hậu có hai mùa mưa nắng rõ rệt. "
    "Ngày nay, nước ta là một trong những nơi sản xuất cà phê vối lớn nhất thế giới. Hạt cà phê vối có vị đắng đậm "
    "và hàm lượng caffeine cao, nên thường được rang đậm rồi pha bằng phin. Ly cà phê sữa đá, với lớp sữa đặc ngọt "
    "dưới đáy, đã trở thành hình ảnh quen thuộc trên vỉa hè của nhiều thành phố."
)
# Simple prose of short syllables: mean "word" length 2.8, under Gopher's English minimum of 3.
VI_SIMPLE = (
    "Nhà bé Na ở gần bờ sông. Sáng nào bé cũng đi bộ ra chợ với mẹ. Mẹ mua cá, mua rau và cho bé một quả chuối. "
    "Bé ăn hết rồi bỏ vỏ vào giỏ rác. Trên cây đa đầu ngõ có tổ chim sẻ. Bé đứng nhìn lũ chim con há mỏ chờ mẹ về. "
    "Mẹ bé gọi: “Đi thôi con, kẻo trễ giờ học.” Bé dạ to một câu rồi chạy theo mẹ, tay vẫn vẫy vẫy đàn chim nhỏ. "
    "Tới cổng trường, mẹ xoa đầu bé và dặn bé ngoan."
)
# Vietnamese fiction opens dialogue lines with a dash: they must not look like a bulleted list.
VI_DIALOGUE = (
    "Chiều hôm ấy, ông Sáu dắt chiếc xe đạp cũ ra đầu ngõ, định mang đi sửa ở tiệm quen.\n"
    "- Ông ơi, xe hư chỗ nào mà ông dắt bộ vậy? - thằng Tí nhà bên hỏi vọng ra.\n"
    "- Tuột xích từ hôm qua, ông tra dầu mấy lần mà nó vẫn kêu lạch cạch.\n"
    "Thằng bé chạy lại, ngồi xổm xuống nhìn một lúc rồi chỉ vào cái bánh răng đã mòn vẹt.\n"
    "- Chắc phải thay cái này ông ạ, để con dẫn ông tới chỗ chú Ba, chú làm kỹ lắm.\n"
    "Hai ông cháu đi chầm chậm dưới hàng me, vừa đi vừa kể chuyện trường lớp, chuyện mùa mưa năm nay đến sớm."
)
EN_NEWS = (
    "The new community library opened on Saturday morning in a former post office near the river. It has a reading "
    "room for children, a small computer lab and a quiet corner with large-print books for older visitors. "
    "Volunteers spent most of the summer painting the walls and building shelves from donated timber.\n\n"
    "The head librarian said that the building will stay open every day of the week, including Sunday afternoons. "
    "Several parents told us they were glad to have a safe place where their children can do homework after school. "
    "The council hopes to add a café and a meeting room next year if funding allows."
)
EN_ESSAY = (
    "Coffee reached Vietnam with French missionaries in the late nineteenth century, and the first trees were planted "
    "in the gardens of a few churches in the north. The red basalt soil of the Central Highlands later proved far "
    "better suited to the crop, thanks to a climate with a clear wet and dry season. Today the country is one of the "
    "largest producers of robusta in the world. Robusta beans taste bitter and carry more caffeine than arabica, so "
    "they are usually roasted dark and brewed slowly through a small metal filter. A glass of iced coffee with "
    "condensed milk has become a familiar sight on the pavements of many cities."
)
GOOD_VI = [VI_NEWS, VI_ESSAY, VI_SIMPLE, VI_DIALOGUE]
GOOD_EN = [EN_NEWS, EN_ESSAY]

VI = FilterConfig.for_language("vi")
EN = FilterConfig.for_language("en")

# Sentences of a town report, each one distinct, used to build long documents.
VI_SENTENCES = [
    "Chợ phiên họp vào sáng thứ năm hằng tuần ở bãi đất trống cạnh ủy ban xã.",
    "Người dân các bản trên núi gánh măng, nấm và mật ong xuống bán từ lúc trời còn tối.",
    "Năm nay giá mật ong rừng tăng nhẹ vì mùa hoa đến muộn hơn mọi năm.",
    "Cô Lò Thị Hoa cho biết gia đình cô nuôi hơn ba mươi đàn ong dưới tán rừng già.",
    "Xã đang làm hồ sơ để sản phẩm mật ong của bà con được cấp nhãn hiệu tập thể.",
    "Khách du lịch thường ghé chợ để chụp ảnh và mua vài món quà mang về xuôi.",
    "Một số hộ đã mở thêm dịch vụ cho khách ngủ nhà sàn và ăn cơm cùng gia đình.",
    "Con đường từ trung tâm huyện lên xã vừa được trải nhựa nên xe khách đi lại dễ hơn.",
    "Trạm y tế xã cũng tranh thủ ngày chợ để khám bệnh miễn phí cho người già và trẻ nhỏ.",
    "Đến gần trưa, chợ vãn dần, người bán thu dọn hàng rồi rủ nhau ngồi uống bát nước chè.",
    "Cán bộ văn hóa xã ghi lại những làn điệu dân ca mà các cụ già còn nhớ để dạy cho lớp trẻ.",
    "Mùa đông năm ngoái, sương muối làm chết nhiều luống rau nhưng năm nay thời tiết khá thuận.",
]


def reason(text: str, cfg: FilterConfig = VI) -> str | None:
    return quality_reason(text, cfg)[0]


def town_report(n_sentences: int = 12, per_line: int = 3) -> str:
    """A clean Vietnamese report of distinct sentences, ``per_line`` sentences per line."""
    sentences = [VI_SENTENCES[i % len(VI_SENTENCES)] for i in range(n_sentences)]
    lines = [" ".join(sentences[i : i + per_line]) for i in range(0, n_sentences, per_line)]
    return "\n".join(lines)


# --- good prose ---------------------------------------------------------------


@pytest.mark.parametrize("text", GOOD_VI + [town_report()])
def test_good_vietnamese_passes_vietnamese_defaults_unchanged(text):
    assert quality_reason(text, VI) == (None, text)


@pytest.mark.parametrize("text", GOOD_EN)
def test_good_english_passes_english_defaults_unchanged(text):
    assert quality_reason(text, EN) == (None, text)


@pytest.mark.parametrize(
    ("text", "english_reason"),
    [(VI_NEWS, "gopher_stopwords"), (VI_ESSAY, "gopher_stopwords"), (VI_SIMPLE, "gopher_mean_word_length")],
)
def test_english_defaults_would_wrongly_drop_good_vietnamese(text, english_reason):
    assert reason(text, VI) is None
    assert reason(text, EN) == english_reason


def test_vietnamese_stopwords_reject_english_prose():
    assert reason(EN_NEWS, VI) == "gopher_stopwords"


# --- Gopher quality -----------------------------------------------------------


def test_too_few_words():
    text = "Hôm nay trời đẹp. Chúng tôi đi dạo. Công viên rất đông. Trẻ em chơi đùa. Ai cũng vui."
    assert reason(text) == "gopher_word_count"
    assert reason(VI_NEWS, FilterConfig(gopher_max_words=100)) == "gopher_word_count"


def test_mean_word_length_too_long():
    blob = " ".join(f"Mãhóa{i:03d}xyzqwertyuiop." for i in range(80))
    assert reason(blob) == "gopher_mean_word_length"


def test_hashtags_raise_the_symbol_ratio():
    places = [
        "dulich",
        "amthuc",
        "review",
        "checkin",
        "sanvemaybay",
        "giare",
        "taybac",
        "sapa",
        "mocchau",
        "hagiang",
        "dalat",
        "phuquoc",
        "vungtau",
        "nhatrang",
        "quynhon",
    ]
    tags = " ".join(f"#{t}" for t in places)
    assert reason(VI_ESSAY + "\n" + tags) == "gopher_symbol_ratio"


def test_bulleted_list():
    text = "\n".join("• " + s for s in VI_SENTENCES[:10])
    assert reason(text) == "gopher_bullet_lines"


def test_lines_ending_in_ellipsis():
    lines = [s[:-1] + "…" if i % 2 else s for i, s in enumerate(VI_SENTENCES[:10])]
    assert reason("\n".join(lines)) == "gopher_ellipsis_lines"


def test_numbers_instead_of_words():
    table = " ".join(f"{1200 + 37 * i}.000" for i in range(40))
    assert reason(VI_ESSAY + "\n" + table + ".") == "gopher_alpha_words"


KEYWORDS = (
    "Điện thoại giá rẻ, máy tính bảng chính hãng, tai nghe không dây, sạc dự phòng, ốp lưng silicon, "
    "đồng hồ thông minh, loa bluetooth mini, chuột quang, bàn phím cơ, màn hình cong, ổ cứng di động, "
    "thẻ nhớ tốc độ cao, cáp sạc nhanh, giá đỡ điện thoại, camera an ninh, bộ phát wifi, máy ảnh cũ, "
    "ống kính máy ảnh, đèn học chống cận, quạt tích điện, nồi chiên không dầu, máy lọc nước, bếp từ đôi."
)


def test_keyword_list_without_stopwords():
    assert reason(KEYWORDS) == "gopher_stopwords"  # 80 syllables, only 2 distinct stopwords ("không", "từ")


# --- Gopher repetition ---------------------------------------------------------


def test_repeated_paragraphs():
    text = VI_ESSAY + "\n\nMời bạn đọc thêm các bài viết khác của chúng tôi.\n\n" * 3
    assert reason(text) == "gopher_dup_paragraphs"


def test_one_long_repeated_paragraph_by_characters():
    paragraphs = [VI_NEWS, VI_ESSAY, VI_SIMPLE, VI_ESSAY]  # 1 of 4 repeats (25% <= 30%) but holds ~25% of chars
    assert reason("\n\n".join(paragraphs)) == "gopher_dup_paragraph_chars"


def test_repeated_lines_inside_one_paragraph():
    lines = VI_SENTENCES[:6] + ["Xem thêm tin tức mới nhất tại đây nhé bạn."] * 5  # 4 of 11 lines repeat
    assert reason("\n".join(lines)) == "gopher_dup_lines"


def test_one_long_repeated_line_by_characters():
    long_line = town_report(6, per_line=6)
    lines = VI_SENTENCES[:8] + [long_line, long_line]
    assert reason("\n".join(lines)) == "gopher_dup_line_chars"


@pytest.mark.parametrize(
    ("phrase", "times", "expected"),
    [
        ("giá vàng", 30, "gopher_top_2gram"),
        ("trường chuyên nghiệp", 10, "gopher_top_3gram"),
        ("trường nghiệp chuyên nghiệp", 8, "gopher_top_4gram"),
    ],
)
def test_most_frequent_ngram_share(phrase, times, expected):
    # One phrase woven through distinct sentences: no line repeats, only the n-gram does.
    sentences = list(VI_SENTENCES)
    for i in range(times):
        sentences[i % len(sentences)] = sentences[i % len(sentences)][:-1] + f", {phrase}."
    assert reason(" ".join(sentences)) == expected


def test_repeated_sentence_inside_a_line_is_a_duplicated_5gram():
    text = " ".join(VI_SENTENCES[:8] + VI_SENTENCES[:2])
    assert reason(text) == "gopher_dup_5gram"


def test_ngram_ratios_are_exact_on_known_texts():
    words = ["một", "hai", "ba", "bốn", "năm", "sáu", "bảy", "tám", "chín", "mười"]
    assert dup_ngram_char_ratio(words + words, 5) == pytest.approx(0.5)
    assert dup_ngram_char_ratio(words, 5) == 0.0
    assert top_ngram_char_ratio(["ha"] * 4, 2) == pytest.approx(1.5)  # 3 overlapping "ha ha" over 8 characters
    assert top_ngram_char_ratio(words, 2) == 0.0  # nothing repeats


# --- FineWeb-style ------------------------------------------------------------


def test_lines_without_punctuation():
    lines = [s.rstrip(".") for s in VI_SENTENCES[:10]]
    assert reason("\n".join(lines)) == "fineweb_line_punct"


def test_a_short_line_repeated_is_a_fineweb_duplicate():
    lines = VI_SENTENCES[:6] + ["Ảnh: Minh Anh."] + VI_SENTENCES[6:] + ["Ảnh: Minh Anh."]
    text = "\n".join(lines)
    assert reason(text) == "fineweb_dup_line_chars"
    assert reason(text, FilterConfig(fineweb_max_dup_line_char_ratio=0.05)) is None


def test_list_of_short_lines():
    todo = [
        "Mua hai ký gạo tẻ.",
        "Trả tiền điện tháng tư.",
        "Gọi thợ sửa máy giặt.",
        "Đón con lúc năm giờ.",
        "Mang áo mưa cho bố.",
        "Tưới mấy chậu lan.",
        "Gửi thư cho cô giáo.",
        "Đặt bánh sinh nhật.",
        "Lau cửa kính phòng khách.",
        "Cắt tóc cho thằng út.",
        "Hỏi giá vé tàu Tết.",
        "Nộp học phí học kỳ hai.",
        "Mua thuốc ho cho bà.",
        "Rửa xe máy.",
        "Thay bóng đèn bếp.",
        "Dọn tủ lạnh.",
        "Ủi đồng phục.",
    ]
    text = "Việc cần làm trong tuần này, nhớ đừng để quên nhé.\n" + "\n".join(todo)
    assert reason(text) == "fineweb_short_lines"


# --- C4 -----------------------------------------------------------------------


def test_c4_removes_boilerplate_lines_and_citations():
    text = (
        "Trang chủ » Tin tức » Đời sống\n"
        + VI_NEWS.replace("Nguyễn Trãi.", "Nguyễn Trãi.[3]")
        + "\nVui lòng bật JavaScript để xem video này.\n"
        "Trang web này sử dụng cookie để cải thiện trải nghiệm của bạn.\n"
        "Đọc tiếp.\n"
        "Chia sẻ bài viết"
    )
    why, edited = quality_reason(text, VI)
    assert why is None
    assert edited == VI_NEWS  # exactly the article: menu, javascript, cookie and short lines gone, [3] deleted


def test_c4_keeps_paragraph_breaks_and_collapses_emptied_ones():
    text = VI_ESSAY + "\n\nQuảng cáo\n\n" + VI_NEWS
    new_text, why = c4_filter(text, VI)
    assert why is None
    assert new_text == VI_ESSAY + "\n\n" + VI_NEWS


def test_lorem_ipsum_drops_the_whole_page():
    assert reason(VI_NEWS + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.") == "c4_lorem_ipsum"


def test_curly_bracket_rule_is_off_by_default():
    text = VI_ESSAY + "\nTập hợp A = {1, 2, 3} có ba phần tử."
    assert reason(text) is None
    assert reason(text, FilterConfig(c4_drop_curly_bracket=True)) == "c4_curly_bracket"


def test_too_few_sentences_after_line_removal():
    text = "\n".join(s.rstrip(".") for s in VI_SENTENCES[:3]) + "\n" + " ".join(VI_SENTENCES[3:7])
    assert count_sentences(text) == 4
    assert reason(text) == "c4_too_few_sentences"
    assert reason(text, FilterConfig(c4_min_sentences=4)) is None


def test_sentence_count_ignores_decimal_points_and_handles_quotes():
    assert count_sentences("Giá 12.500 đồng. Rẻ quá! “Mua không?” Mua.") == 4


# --- filter_documents: accounting ------------------------------------------------


def test_filter_documents_counts_every_drop_once_with_its_reason():
    bad = {
        "gopher_word_count": "Quá ngắn. Chỉ vài chữ. Hết rồi. Thật đấy. Xong.",
        "gopher_bullet_lines": "\n".join("• " + s for s in VI_SENTENCES[:10]),
        "gopher_dup_paragraphs": VI_ESSAY + "\n\nMời bạn đọc thêm các bài viết khác của chúng tôi.\n\n" * 3,
        "c4_lorem_ipsum": VI_NEWS + "\nLorem ipsum dolor sit amet.",
    }
    docs = [Document(t, "web.jsonl", id=f"g{i}") for i, t in enumerate(GOOD_VI)]
    docs += [Document(t, "web.jsonl", id=r) for r, t in bad.items()]
    docs.append(Document("Chia sẻ bài viết\n" + VI_ESSAY, "blog.jsonl", id="edited", meta={"url": "x"}))
    drops = DropCounter()
    kept = list(filter_documents(docs, VI, drops))
    assert len(docs) == len(kept) + drops.total
    assert drops.by_reason() == {r: 1 for r in bad}
    assert drops.by_reason("blog.jsonl") == {}
    assert sum(drops.chars.values()) == sum(len(t) for t in bad.values())
    assert [d.id for d in kept] == ["g0", "g1", "g2", "g3", "edited"]
    edited = kept[-1]
    assert edited.text == VI_ESSAY and edited.source == "blog.jsonl" and edited.meta == {"url": "x"}
    assert kept[0] is docs[0]  # untouched documents pass through as they are


def test_rules_and_groups_can_be_switched_off():
    assert reason(KEYWORDS, FilterConfig(gopher_min_stopwords=0)) == "c4_too_few_sentences"  # the next rule it fails
    assert reason(KEYWORDS, FilterConfig(gopher_quality=False, c4=False)) is None
    drops = DropCounter()
    docs = [Document("ngắn quá.", "a"), Document(KEYWORDS, "a")]
    assert list(filter_documents(docs, FilterConfig(enabled=False), drops)) == docs
    assert drops.total == 0


def test_every_reason_is_listed():
    assert len(REASONS) == len(set(REASONS))
    assert {
        "gopher_word_count",
        "gopher_mean_word_length",
        "gopher_stopwords",
        "gopher_dup_lines",
        "gopher_top_3gram",
        "c4_too_few_sentences",
        "fineweb_line_punct",
    } <= set(REASONS)


def _sample_texts(pattern: str) -> list[str]:
    from cptnb.paths import data_samples_dir

    texts = []
    for path in sorted(data_samples_dir().glob(pattern)):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                texts.append(json.loads(line)["text"])
            except (json.JSONDecodeError, KeyError):
                continue  # other tests own the format of these files; here only the prose matters
    return texts


@pytest.mark.parametrize(
    ("language", "pattern"),
    [("vi", "vi/*.jsonl"), ("vi", "heldout/vi_*.jsonl"), ("en", "en/*.jsonl"), ("en", "heldout/en_*.jsonl")],
)
def test_sample_corpora_are_kept_by_their_language_defaults(language, pattern):
    texts = _sample_texts(pattern)
    if not texts:
        pytest.skip(f"data_samples/{pattern} has no documents yet")
    cfg = FilterConfig.for_language(language)
    dropped = {t[:50]: reason(t, cfg) for t in texts if reason(t, cfg) is not None}
    assert not dropped


# --- config -------------------------------------------------------------------


def test_language_defaults():
    assert (VI.gopher_min_words, VI.gopher_min_mean_word_length, VI.gopher_min_stopwords) == (70, 2.0, 5)
    assert (EN.gopher_min_words, EN.gopher_min_mean_word_length, EN.gopher_min_stopwords) == (50, 3.0, 2)
    assert "và" in VI.stopword_set and "the" in EN.stopword_set
    assert FilterConfig() == VI  # Vietnamese is the kit's default
    assert FilterConfig(language="en") == EN


def test_vietnamese_stopword_list_is_large_and_lowercase_syllables():
    words = VI.stopword_set
    assert len(words) >= 60
    assert all(w == w.lower() and " " not in w for w in words)
    assert {"và", "của", "là", "có", "được", "trong", "những", "các", "một", "không", "người", "để"} <= words


def test_resolved_keeps_hand_set_values_and_follows_the_language():
    mine = FilterConfig(gopher_min_words=20, c4_min_sentences=3)
    en = mine.resolved("en")
    assert (en.language, en.gopher_min_words, en.c4_min_sentences) == ("en", 20, 3)
    assert (en.gopher_min_mean_word_length, en.gopher_min_stopwords) == (3.0, 2)
    # After a YAML round trip every value is explicit; the language defaults still follow.
    assert FilterConfig(**FilterConfig().to_dict()).resolved("en") == EN
    assert mine.resolved("vi") is mine


def test_language_without_profile_is_refused_with_the_command_to_write_one():
    with pytest.raises(ConfigError) as err:
        FilterConfig.for_language("fr")
    text = str(err.value)
    assert "no language profile for 'fr'" in text and "cptnb calibrate --lang fr" in text
    assert "languages/fr.yaml" in text and "data.filters.profile" in text
    # Every language field given by hand needs no profile: whitespace words, the stopwords given.
    given = {"gopher_min_words": 50, "gopher_max_words": 100_000, "gopher_min_mean_word_length": 3.0,
             "gopher_max_mean_word_length": 10.0, "gopher_min_stopwords": 2, "fineweb_min_line_punct_ratio": 0.1,
             "c4_drop_lines_without_terminal_punct": True, "c4_min_sentences": 3}
    fr = FilterConfig.for_language("fr", stopwords=["le", "la", "de"], **given)
    assert fr.stopword_set == {"le", "la", "de"} and fr.segmenter.name == "whitespace"


def test_validation_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as err:
        FilterConfig(
            gopher_min_words=-1,
            gopher_max_dup_line_ratio=1.5,
            gopher_min_mean_word_length=9.0,
            gopher_max_mean_word_length=8.0,
            c4="yes",
            language="xx",
            gopher_min_stopwords=2,
        )
    problems = err.value.problems
    assert len(problems) == 5, problems
    text = str(err.value)
    assert "FilterConfig" in text
    for needle in (
        "gopher_min_words must be an integer >= 0, got -1",
        "gopher_max_dup_line_ratio must be a ratio",
        "gopher_min_mean_word_length (9.0) must be <= gopher_max_mean_word_length (8.0)",
        "c4 must be true or false",
        "no language profile for 'xx'",
    ):
        assert needle in text


def test_from_dict_names_unknown_fields():
    with pytest.raises(ConfigError, match="unknown field 'min_word'"):
        FilterConfig.from_dict({"min_word": 3})


def test_every_field_has_a_help_sentence():
    helps = FilterConfig.help()
    assert len(helps) > 30
    assert all(h.endswith(".") and len(h) > 20 for h in helps.values()), helps
