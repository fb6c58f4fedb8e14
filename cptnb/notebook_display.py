"""What the notebooks show: small illustration inputs, markdown tables, and the forgetting chart.

The stages themselves live in :mod:`cptnb.data`, :mod:`cptnb.train` and
:mod:`cptnb.evaluate`; this module only builds the few planted examples the
notebooks feed them and turns their reports into tables and figures, so that
notebook cells stay a few lines long.

Example::

    from IPython.display import Markdown, display
    display(Markdown(drops_markdown(prepared.report)))
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cptnb.tables import markdown_table

# ----------------------------------------------------------------- planted examples for notebook 01

# Original paragraphs written for these examples (not copied from anywhere, not in data_samples).
MARKET_PARAGRAPH = (
    "Chợ phiên ở thị trấn vùng cao họp vào sáng chủ nhật hằng tuần. Từ lúc trời còn mờ sương, người dân các bản "
    "đã gánh rau, mật ong và vải thổ cẩm xuống núi. Tiếng nói cười rộn rã khắp những lối đi nhỏ giữa các sạp hàng. "
    "Khách du lịch thích nhất là gian bán bánh ngô nướng thơm lừng bên bếp than hồng. Nhiều người mua vài tấm "
    "khăn thêu tay về làm quà cho gia đình. Đến trưa, khi nắng lên cao, chợ mới thưa người dần và ai nấy lại "
    "ngược dốc trở về nhà."
)
READING_CLUB_INTRO = (
    "Trong giờ sinh hoạt câu lạc bộ đọc sách, thầy giáo đọc to một đoạn văn ngắn rồi đố cả nhóm đoán từ cuối cùng. "
    "Các bạn nhỏ chăm chú lắng nghe, có bạn còn ghi lại từng câu vào sổ tay. Thầy bảo trò chơi này giúp rèn khả "
    "năng hiểu ngữ cảnh và đoán ý người viết. Ai đoán đúng sẽ được chọn cuốn sách tiếp theo cho cả câu lạc bộ. "
    "Đoạn văn hôm ấy như sau:"
)
READING_CLUB_OUTRO = (
    "Cả nhóm bàn tán rất lâu trước khi đưa ra câu trả lời. Cuối buổi, thầy khen các bạn đã lắng nghe kỹ và hẹn "
    "tuần sau sẽ mang đến một câu đố khó hơn."
)
MENU_PAGE = (
    "Trang chủ | Giới thiệu | Tin tức | Sản phẩm | Liên hệ\nĐăng nhập | Đăng ký\n"
    "Bản quyền © 2024. Mọi quyền được bảo lưu."
)
SPAM_LINE = "Mua ngay hôm nay để được nhận quà và giao hàng miễn phí cho mọi người trong cả nước!"
ENGLISH_PAGE = (
    "The city council met on Tuesday to discuss the new bus routes. Residents asked for more frequent service in "
    "the evenings, and the council agreed to review the timetable next month."
)
NO_DIACRITICS = "hom nay troi mua to qua nen chung toi o nha doc sach va nau com"


def mojibake(text: str) -> str:
    """``text`` as it looks after its UTF-8 bytes were wrongly decoded as Windows-1252 (a common scrape bug).

    Browsers and old scrapers map the five bytes Windows-1252 leaves undefined to
    control characters instead of failing; ftfy's "sloppy" codec does the same.
    """
    import ftfy.bad_codecs  # noqa: F401  (registers the sloppy-windows-1252 codec)

    return text.encode("utf-8").decode("sloppy-windows-1252")


def near_copy(text: str, every: int = 12) -> str:
    """A near duplicate: every ``every``-th word deleted (what a re-posted, lightly edited article looks like)."""
    words = text.split(" ")
    return " ".join(w for i, w in enumerate(words) if i % every != every - 1)


def messy_scrape_records(corpus_texts: list[str], eval_text: str) -> list[dict[str, str]]:
    """Records of a small "web scrape" with one planted problem each, and the stage expected to catch it.

    ``corpus_texts`` are documents already in the domain corpus (duplicates are made
    from them); ``eval_text`` is an evaluation item that one record quotes.
    """
    return [
        {"problem": "mojibake (repaired, then kept)", "expect": "kept", "text": mojibake(MARKET_PARAGRAPH)},
        {"problem": "decomposed-Unicode copy of a corpus document", "expect": "exact_duplicate",
         "text": unicodedata.normalize("NFD", corpus_texts[0])},
        {"problem": "lightly edited re-post of a corpus document", "expect": "near_duplicate",
         "text": near_copy(corpus_texts[1])},
        {"problem": "English page in the Vietnamese crawl", "expect": "wrong_language", "text": ENGLISH_PAGE},
        {"problem": "navigation menu", "expect": "quality", "text": MENU_PAGE},
        {"problem": "spam: one line repeated", "expect": "quality", "text": "\n".join([SPAM_LINE] * 12)},
        {"problem": "quotes an evaluation item", "expect": "contaminated",
         "text": f"{READING_CLUB_INTRO}\n\n{eval_text}.\n\n{READING_CLUB_OUTRO}"},
        {"problem": "a link label", "expect": "too_short", "text": "Xem thêm >>"},
    ]


def planted_scrape(samples_dir: str | Path) -> list[dict[str, str]]:
    """:func:`messy_scrape_records` made from the shipped samples: news documents and the first lambada_vi item."""
    samples = Path(samples_dir)
    lines = (samples / "vi" / "news.jsonl").read_text(encoding="utf-8").splitlines()
    news = [json.loads(line)["text"] for line in lines]
    lambada = (samples / "eval" / "lambada_vi" / "test.jsonl").read_text(encoding="utf-8").splitlines()[0]
    return messy_scrape_records(news, json.loads(lambada)["text"])


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write ``records`` one JSON object a line (UTF-8); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_broken_jsonl(path: str | Path) -> Path:
    """A 4-line JSONL file: a good line, a broken JSON line (2), a line without ``text`` (3), a good line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"text": "Dòng đầu tiên là một tài liệu hợp lệ, đủ dài để giữ lại."}, ensure_ascii=False),
        '{"text": "dòng này bị cắt giữa chừng',
        json.dumps({"body": "Trường văn bản ở đây tên là body, không phải text."}, ensure_ascii=False),
        json.dumps({"text": "Dòng cuối cùng cũng là một tài liệu hợp lệ như dòng đầu."}, ensure_ascii=False),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def drops_markdown(report: dict[str, Any]) -> str:
    """Per source: documents in, kept, and dropped per reason, plus a total row (from ``report.json``)."""
    reasons = sorted({r for entry in report["sources"].values() for r in entry["dropped"]})
    rows = []
    for source, entry in list(report["sources"].items()) + [("**total**", report["total"])]:
        name = source if source.startswith("**") else Path(source).name
        rows.append([name, entry["docs_in"], entry["docs_kept"], *(entry["dropped"].get(r, 0) for r in reasons)])
    return markdown_table(["source", "in", "kept", *reasons], rows)


def fertility_markdown(fertility: dict[str, dict[str, float]], labels: dict[str, str] | None = None) -> str:
    """Tokens per word and per byte for each side of the corpus (``report["fertility"]``)."""
    labels = labels or {}
    rows = [
        [labels.get(side, side), f["tokens_per_word"], f["tokens_per_byte"], f["tokens"], f["words"], f["bytes"]]
        for side, f in fertility.items()
    ]
    return markdown_table(["corpus", "tokens / word", "tokens / byte", "tokens", "words", "bytes"], rows)


def token_pieces(tokenizer, text: str) -> list[str]:
    """How ``tokenizer`` cuts ``text``: each token decoded alone (a piece of a split UTF-8 character shows as �)."""
    return [tokenizer.decode([i]) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def single_token_share(tokenizer, words: Iterable[str]) -> float:
    """Share of distinct ``words`` (with a leading space, as inside a sentence) that are one token."""
    distinct = sorted(set(words))
    if not distinct:
        return 0.0
    lengths = tokenizer([" " + w for w in distinct], add_special_tokens=False)["input_ids"]
    return sum(len(ids) == 1 for ids in lengths) / len(distinct)


# ----------------------------------------------------------------- the forgetting experiment (notebook 04)


@dataclass
class RunResult:
    """One CPT run of the forgetting experiment and its held-out scores before and after."""

    name: str  # e.g. "lora · replay 20%"
    method: str  # lora | qlora | full
    replay_share_target: float  # share of training tokens asked from general (English) text
    replay_share_achieved: float  # share the prepared corpus really has (lower when replay text ran out)
    steps: int
    train_seconds: float
    final_train_loss: float
    before: dict[str, float] = field(default_factory=dict)  # held-out set -> bits per byte of the base model
    after: dict[str, float] = field(default_factory=dict)  # held-out set -> bits per byte after this run

    @classmethod
    def measured(cls, name: str, method: str, replay_share: float, prepared, result, seconds: float,
                 before: dict[str, Any], after: dict[str, Any]) -> RunResult:
        """From ``prepare``'s corpus, ``train``'s result and the two :func:`~cptnb.evaluate.heldout.measure` results."""
        achieved = prepared.report["tokens"]["replay_share_achieved"]
        return cls(name, method, replay_share, achieved, result.steps, seconds, result.final_train_loss,
                   bits_per_byte(before), bits_per_byte(after))

    def change(self, heldout: str) -> float:
        """Relative change in bits per byte on ``heldout``: below 0 is better; above 0 on general text is forgetting."""
        return (self.after[heldout] - self.before[heldout]) / self.before[heldout]


def bits_per_byte(measurement: dict[str, Any]) -> dict[str, float]:
    """Held-out set -> bits per byte, from a :func:`cptnb.evaluate.heldout.measure` result."""
    return {name: scores["bits_per_byte"] for name, scores in measurement["heldout"].items()}


def forgetting_figure(results: list[RunResult], domain: str = "domain", general: str = "general", title: str = ""):
    """Domain gain (x, % fewer bits per byte) against general change (y, % more bits per byte = forgetting).

    The base model sits at the origin; an arrow leads to each run. Good runs go
    right (learned the domain) and not up (did not forget).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.6), dpi=100)
    ax = fig.subplots()
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    xs, ys = [0.0], [0.0]
    for i, r in enumerate(results):
        x, y = -100 * r.change(domain), 100 * r.change(general)
        xs.append(x)
        ys.append(y)
        color = f"C{i}"
        ax.annotate("", xy=(x, y), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": color, "lw": 1.6})
        ax.plot([x], [y], "o", color=color, label=f"{r.name}: {x:+.1f}% / {y:+.1f}%")
    ax.plot([0], [0], "ks", label="base model")
    pad_x = max(1.0, 0.15 * (max(xs) - min(xs)))
    pad_y = max(0.5, 0.25 * (max(ys) - min(ys)))
    ax.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
    ax.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    ax.set_xlabel(f"held-out {domain} gain: % fewer bits per byte (right is better)")
    ax.set_ylabel(f"held-out {general} change: % bits per byte (up = forgetting)")
    ax.set_title(title or "What each run learned and what it forgot")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def forgetting_markdown(results: list[RunResult], domain: str = "domain", general: str = "general") -> str:
    """One row per run: replay share, bits per byte before -> after on both held-out sets, time."""
    rows = []
    for r in results:
        rows.append([
            r.name,
            f"{100 * r.replay_share_target:.0f}% / {100 * r.replay_share_achieved:.1f}%",
            f"{r.before[domain]:.4f} → {r.after[domain]:.4f}",
            f"{100 * r.change(domain):+.2f}%",
            f"{r.before[general]:.4f} → {r.after[general]:.4f}",
            f"{100 * r.change(general):+.2f}%",
            r.steps,
            f"{r.train_seconds:.0f} s",
        ])
    header = ["run", "replay target / achieved", f"{domain} bits/byte", "change", f"{general} bits/byte", "change",
              "steps", "train time"]
    return markdown_table(header, rows, right=range(1, len(header)))


def forgetting_verdict(results: list[RunResult], domain: str = "domain", general: str = "general") -> list[str]:
    """Plain sentences read off the numbers: per run, then replay against no replay for each method."""
    lines = []
    for r in results:
        g = r.change(general)
        state = "forgot (general text got harder)" if g > 0 else "did not forget (general text got easier or stayed)"
        lines.append(f"{r.name}: {domain} {100 * r.change(domain):+.2f}%, {general} {100 * g:+.2f}% -> {state}.")
    by_method: dict[str, list[RunResult]] = {}
    for r in results:
        by_method.setdefault(r.method, []).append(r)
    for method, runs in by_method.items():
        runs = sorted(runs, key=lambda r: r.replay_share_target)
        if len(runs) < 2 or runs[0].replay_share_target > 0:
            continue
        none, most = runs[0], runs[-1]
        d_gen = 100 * (most.change(general) - none.change(general))
        d_dom = 100 * (most.change(domain) - none.change(domain))
        effect = "less" if d_gen < 0 else "more"
        cost = "a smaller" if d_dom > 0 else "an equal or larger"
        lines.append(
            f"{method}: with {100 * most.replay_share_target:.0f}% replay the {general} change was "
            f"{abs(d_gen):.2f} points {effect} damaging than without replay, for {cost} {domain} gain "
            f"({100 * most.change(domain):+.2f}% vs {100 * none.change(domain):+.2f}%)."
        )
    lines.append(
        "One seed and a short run: rerun with another SEED before trusting a difference of a few tenths of a percent."
    )
    return lines


def write_forgetting(out_dir: str | Path, results: list[RunResult], title: str = "") -> dict[str, Any]:
    """Write ``results.json``, ``results.md`` and ``forgetting.png`` into ``out_dir``; return the JSON payload."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "runs": [{**asdict(r), "change": {k: r.change(k) for k in r.after}} for r in results],
        "verdict": forgetting_verdict(results),
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    md = [f"# {title or 'Forgetting experiment'}", "", forgetting_markdown(results), "", *payload["verdict"], ""]
    (out / "results.md").write_text("\n".join(md), encoding="utf-8")
    forgetting_figure(results, title=title).savefig(out / "forgetting.png")
    return payload


def packing_attention_figure(seq_lengths: list[int], title: str = ""):
    """Which token may attend to which inside one packed block, ``concat`` beside ``document`` packing.

    ``seq_lengths`` are the block's document pieces (the ``seq_lengths`` column of a block packed with
    ``packing="document"``). A coloured cell (row = the token predicting the next one, column = a token
    it reads) is allowed; colours tell the documents apart. In ``concat`` mode every later document reads
    the earlier ones; in ``document`` mode the pattern is one triangle per document. The document pattern is
    the one transformers derives from the position ids (:func:`cptnb.train.document_packing.piece_index`).
    """
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    from cptnb.train.document_packing import piece_index

    piece = piece_index(seq_lengths).numpy()
    size = len(piece)
    causal = np.tril(np.ones((size, size), dtype=bool))
    # Colour = the document of the token being read (+1; 0 is "not allowed").
    reads = np.broadcast_to(piece[None, :] + 1, (size, size))
    concat = np.where(causal, reads, 0)
    document = np.where(causal & (piece[:, None] == piece[None, :]), reads, 0)
    colors = ["white"] + [f"C{i % 10}" for i in range(len(seq_lengths))]
    cmap = ListedColormap(colors)
    fig = Figure(figsize=(9.0, 4.4), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, grid, name in ((axes[0], concat, "concat"), (axes[1], document, "document")):
        allowed = int((grid > 0).sum())
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=len(colors) - 1, interpolation="nearest")
        ax.set_title(f"packing: {name} ({allowed:,} token pairs attend)", fontsize=10)
        ax.set_xlabel("token read (position in the block)")
        ax.set_ylabel("token predicting the next one")
    fig.suptitle(title or f"One block of {size} tokens holding {len(seq_lengths)} document pieces", fontsize=11)
    fig.tight_layout()
    return fig
