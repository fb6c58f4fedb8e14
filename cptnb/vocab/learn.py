"""Learn new tokens from a domain corpus and extend a fast BPE tokenizer, every old id keeping its meaning.

Mechanism: the base tokenizer's own BPE is *continued*. Each pre-token of the
corpus (the base pre-tokenizer's words, e.g. ``Ġngười``) is first cut into base
tokens exactly as the base tokenizer cuts it; ``tokenizers``' ``BpeTrainer`` then
learns merges over those base tokens (each base id stands for one private
character), so every learned merge joins two tokens that really sit side by side
in the base tokenization. The merges are appended *after* the base merges and the
new tokens get ids after the last old one.

Why merges and not added tokens: BPE applies merges in rank order, so with the new
merges ranked last a text is first cut exactly as before, then adjacent pieces may
be joined further. Old ids keep their strings, decoding is unchanged, and a word
the new merges do not touch (most English) tokenizes exactly as before. Added
tokens are matched in the raw text before pre-tokenization: the added token
``ng`` would split ``thing`` into ``thi`` + ``ng`` and change English everywhere,
and added tokens do not take part in the byte-level vocabulary.

Example::

    ext = learn_extension(tokenizer, vi_texts, num_new_tokens=2000)
    extended = extend_tokenizer(tokenizer, ext)
    assert extended.convert_ids_to_tokens(100) == tokenizer.convert_ids_to_tokens(100)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cptnb.vocab.errors import VocabError

# Base id i is written as chr(_FIRST_CHAR + i) for the trainer: above the surrogates and every whitespace character.
_FIRST_CHAR = 0x10000
RECORD_NAME = "cptnb_vocab.json"


@dataclass
class VocabExtension:
    """What an extension adds to a base tokenizer; enough to rebuild the extended tokenizer and the model rows."""

    base_size: int  # len(base tokenizer): ids below this keep their meaning; new ids start here
    new_tokens: list[str]  # token strings in the base vocabulary's alphabet (e.g. 'Ġngười'), id = base_size + i
    merges: list[list[str]]  # [left, right] pairs appended after the base merges, in rank order
    pieces: list[list[int]]  # the base ids each new token is made of (what the old tokenizer cut it into)
    corpus: dict[str, Any] = field(default_factory=dict)  # where it was learned: docs, words, bytes, name
    min_frequency: int = 2

    @property
    def new_ids(self) -> range:
        return range(self.base_size, self.base_size + len(self.new_tokens))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "VocabExtension":
        path = Path(path)
        if path.is_dir():
            path = path / RECORD_NAME
        if not path.is_file():
            raise VocabError(f"{path} does not exist; pass the folder extend_vocabulary wrote (it holds {RECORD_NAME})")
        data = json.loads(path.read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def check_extendable(tokenizer) -> dict[str, Any]:
    """The tokenizer's ``tokenizer.json`` as a dict, or a :class:`VocabError` saying why it cannot be extended."""
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise VocabError(
            f"{type(tokenizer).__name__} has no fast (tokenizers) backend, which vocabulary extension edits. "
            "Load it with AutoTokenizer.from_pretrained(name) (use_fast=True is the default) or convert it once "
            "with transformers' convert_slow_tokenizer; models that ship only a slow tokenizer cannot be extended."
        )
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise VocabError(
            f"the tokenizer's model is {model.get('type')!r}; only BPE tokenizers (GPT-2, Llama 3, SmolLM, Qwen, "
            "Mistral converted to BPE) can be extended by merges. Use a BPE model, or extend this one by hand."
        )
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise VocabError("BPE tokenizers with a continuing_subword_prefix or end_of_word_suffix are not supported")
    if model.get("dropout"):
        raise VocabError("the tokenizer uses BPE dropout; set it to None before extending (tokenization must be fixed)")
    return spec


def _pre_tokens(tokenizer, texts: Iterable[str]) -> tuple[Counter, dict[str, int]]:
    """Counts of the base pre-tokenizer's words over ``texts``, and the corpus size in docs, words and bytes."""
    backend = tokenizer.backend_tokenizer
    counts: Counter = Counter()
    size = {"docs": 0, "words": 0, "bytes": 0}
    for text in texts:
        if not isinstance(text, str):
            raise VocabError(f"texts must be strings; document {size['docs']} is a {type(text).__name__}")
        if not text:
            continue
        size["docs"] += 1
        size["words"] += len(text.split())
        size["bytes"] += len(text.encode("utf-8"))
        normalized = backend.normalizer.normalize_str(text) if backend.normalizer is not None else text
        pre = backend.pre_tokenizer.pre_tokenize_str(normalized) if backend.pre_tokenizer is not None else [(normalized, None)]
        counts.update(word for word, _ in pre)
    return counts, size


def learn_extension(
    tokenizer,
    texts: Iterable[str],
    num_new_tokens: int,
    min_frequency: int = 2,
    corpus_name: str = "",
) -> VocabExtension:
    """The ``num_new_tokens`` most frequent merges of base tokens in ``texts`` that make strings the base lacks.

    The merges are learned by ``tokenizers``' ``BpeTrainer`` over the base
    tokenization (see the module docstring), so their order is their frequency
    rank and each new token is made of base tokens the old tokenizer really
    produces. Raises :class:`VocabError` when the tokenizer cannot be extended or
    when the corpus cannot support ``num_new_tokens`` (the message gives the most
    it can support at ``min_frequency``).
    """
    if not isinstance(num_new_tokens, int) or isinstance(num_new_tokens, bool) or num_new_tokens <= 0:
        raise VocabError(f"num_new_tokens must be an integer > 0, got {num_new_tokens!r}")
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise VocabError(f"min_frequency must be an integer >= 1, got {min_frequency!r}")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    check_extendable(tokenizer)
    counts, size = _pre_tokens(tokenizer, texts)
    if not counts:
        raise VocabError("no text to learn from: every document is empty; pass the domain corpus's documents")
    backend_model = tokenizer.backend_tokenizer.model
    id_to_token = {i: t for t, i in tokenizer.get_vocab().items()}
    vocab = dict(tokenizer.get_vocab())  # token string -> id, grows as tokens are added
    first_new_id = tokenizer_size(tokenizer)
    to_chars = {w: "".join(chr(_FIRST_CHAR + t.id) for t in backend_model.tokenize(w)) for w in counts}
    alphabet = {c for s in to_chars.values() for c in s}

    def words() -> Iterable[str]:
        for word, n in counts.items():
            yield " ".join([to_chars[word]] * n)

    # Ask for some extra merges: a merge whose string the vocabulary already has adds no token.
    wanted = num_new_tokens + max(16, num_new_tokens // 10)
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + wanted, min_frequency=min_frequency,
                                  show_progress=False, limit_alphabet=len(alphabet))
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    learner.train_from_iterator(words(), trainer=trainer)
    learned = json.loads(learner.to_str())["model"]["merges"]

    as_text = {chr(_FIRST_CHAR + i): id_to_token[i] for i in (ord(c) - _FIRST_CHAR for c in alphabet)}
    as_pieces = {chr(_FIRST_CHAR + i): [i] for i in (ord(c) - _FIRST_CHAR for c in alphabet)}
    new_tokens: list[str] = []
    merges: list[list[str]] = []
    pieces: list[list[int]] = []
    for merge in learned:
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        text, made_of = as_text[left] + as_text[right], as_pieces[left] + as_pieces[right]
        as_text[left + right], as_pieces[left + right] = text, made_of
        if len(new_tokens) == num_new_tokens and text not in vocab:
            continue  # full: later merges that only reuse known strings still help, new strings do not fit
        merges.append([as_text[left], as_text[right]])
        if text not in vocab:
            vocab[text] = first_new_id + len(new_tokens)
            new_tokens.append(text)
            pieces.append(made_of)
    if len(new_tokens) < num_new_tokens:
        raise VocabError(
            f"the corpus supports only {len(new_tokens)} new tokens at min_frequency={min_frequency} "
            f"({size['docs']} documents, {size['words']:,} words, {len(counts):,} distinct pre-tokens), "
            f"not {num_new_tokens}: ask for at most {len(new_tokens)} (model.vocab.new_tokens), lower "
            "model.vocab.min_frequency, or learn from more text."
        )
    merges = _trim_unused_tail(merges, vocab, new_tokens)
    return VocabExtension(
        base_size=first_new_id, new_tokens=new_tokens, merges=merges, pieces=pieces,
        corpus={**size, "distinct_pre_tokens": len(counts), "name": corpus_name}, min_frequency=min_frequency,
    )


def _trim_unused_tail(merges: list[list[str]], vocab: dict[str, int], new_tokens: list[str]) -> list[list[str]]:
    """Drop merges with a part that was not kept, and repeats of a pair (two learned paths to one string)."""
    known, seen, kept = set(vocab), set(), []
    for left, right in merges:
        if left in known and right in known and left + right in known and (left, right) not in seen:
            seen.add((left, right))
            kept.append([left, right])
    return kept


def tokenizer_size(tokenizer) -> int:
    """Number of ids the tokenizer can produce: its vocabulary plus added tokens, i.e. one past the largest id."""
    return max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)


def extend_tokenizer(tokenizer, extension: VocabExtension):
    """A new fast tokenizer: ``tokenizer`` with ``extension``'s tokens and merges; ``tokenizer`` is not modified.

    Special tokens, the chat template and every other setting are kept (the
    tokenizer is saved, its ``tokenizer.json`` edited, and loaded back).
    """
    from transformers import AutoTokenizer

    spec = check_extendable(tokenizer)
    if tokenizer_size(tokenizer) != extension.base_size:
        raise VocabError(
            f"this extension was learned for a tokenizer of {extension.base_size} ids, but this one has "
            f"{tokenizer_size(tokenizer)}: extend the tokenizer it was learned from"
        )
    model = spec["model"]
    clash = [t for t in extension.new_tokens if t in model["vocab"]]
    if clash:
        raise VocabError(f"the tokenizer already has {len(clash)} of the new tokens (e.g. {clash[:3]}): already extended?")
    for i, token in enumerate(extension.new_tokens):
        model["vocab"][token] = extension.base_size + i
    as_strings = bool(model["merges"]) and isinstance(model["merges"][0], str)
    model["merges"] += [" ".join(m) if as_strings else list(m) for m in extension.merges]
    folder = Path(tempfile.mkdtemp(prefix="cptnb-vocab-"))
    try:
        tokenizer.save_pretrained(folder)
        (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        extended = AutoTokenizer.from_pretrained(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if extended.pad_token is None and tokenizer.pad_token is not None:
        extended.pad_token = tokenizer.pad_token
    return extended
