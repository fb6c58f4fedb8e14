"""Vocabulary extension as one step: learn from the corpus, extend the tokenizer, resize the model, write it all.

:func:`extend_vocabulary` is what ``cptnb extend-vocab`` and notebook 07 call; a
recipe with ``model.vocab.new_tokens > 0`` calls it through
:func:`extended_model_config` before training. It writes a model folder that
plain transformers loads (the base with its new rows initialised, the extended
tokenizer and ``cptnb_vocab.json``, the record of what was added), and
``report.json`` / ``report.md`` with fertility before and after.

An adapter trained on that folder also applies to the original base once the base
is resized (:func:`cptnb.vocab.adapter.fit_base_to_adapter`).

Example::

    result = extend_vocabulary(ModelConfig(name="smollm2-135m"), vi_texts, "runs/vocab", new_tokens=1000,
                               general_texts=en_texts)
    result.report["corpora"]["domain"]["after"]["tokens_per_word"]
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cptnb.vocab.adapter import read_record, write_record
from cptnb.vocab.config import VocabConfig
from cptnb.vocab.errors import VocabError
from cptnb.vocab.init import resize_and_init
from cptnb.vocab.learn import VocabExtension, extend_tokenizer, learn_extension
from cptnb.vocab.report import extension_report, report_markdown

log = logging.getLogger(__name__)


@dataclass
class ExtensionResult:
    """What :func:`extend_vocabulary` made."""

    extension: VocabExtension
    tokenizer: Any  # the extended fast tokenizer
    model_dir: Path  # base model with new rows + extended tokenizer + cptnb_vocab.json
    record: dict[str, Any]  # resize/init record (rows, padding ids, method, tied)
    report: dict[str, Any]  # extension_report: fertility before/after per corpus


def load_base(model_cfg):
    """The plain transformers model and tokenizer of ``model_cfg.name`` in float32 (for resizing and init)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cptnb.models.loading import from_pretrained_or_explain, resolve_source

    source = resolve_source(model_cfg)
    tokenizer = from_pretrained_or_explain(AutoTokenizer, source, trust_remote_code=model_cfg.trust_remote_code)
    model = from_pretrained_or_explain(AutoModelForCausalLM, source, dtype=torch.float32,
                                       trust_remote_code=model_cfg.trust_remote_code)
    return model, tokenizer


def extend_vocabulary(
    model_cfg,
    texts: list[str],
    out_dir: str | Path,
    new_tokens: int | None = None,
    init: str | None = None,
    general_texts: list[str] | None = None,
    heldout_texts: list[str] | None = None,
    corpus_name: str = "",
) -> ExtensionResult:
    """Learn ``new_tokens`` tokens from ``texts``, extend ``model_cfg.name``'s tokenizer and model, write ``out_dir``.

    ``new_tokens`` and ``init`` default to ``model_cfg.vocab``. ``general_texts``
    (English) and ``heldout_texts`` (held-out domain) join the fertility report;
    learning uses ``texts`` only. Writes ``out_dir/model/`` (loadable with
    ``AutoModelForCausalLM.from_pretrained``), ``out_dir/report.json`` and
    ``out_dir/report.md``.
    """
    vocab = getattr(model_cfg, "vocab", None) or VocabConfig()
    new_tokens = vocab.new_tokens if new_tokens is None else new_tokens
    init = init or vocab.init
    out = Path(out_dir)
    model, base_tokenizer = load_base(model_cfg)
    extension = learn_extension(base_tokenizer, texts, new_tokens, vocab.min_frequency, corpus_name)
    tokenizer = extend_tokenizer(base_tokenizer, extension)
    record = resize_and_init(model, extension, init, vocab.pad_to_multiple_of, seed=model_cfg.seed)
    model_dir = out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_record(model_dir, extension, record)
    corpora = {"domain": texts}
    if heldout_texts:
        corpora["heldout_domain"] = heldout_texts
    if general_texts:
        corpora["general"] = general_texts
    report = extension_report(base_tokenizer, tokenizer, corpora, general="general",
                              first_new_id=extension.base_size, block_tokens=model_cfg.max_seq_len_tokens)
    report["resize"] = record
    report["corpus"] = extension.corpus
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    (out / "report.md").write_text(report_markdown(report) + "\n", encoding="utf-8")
    log.info("extended the vocabulary by %d tokens (%s init): %s", len(extension.new_tokens), init, model_dir)
    return ExtensionResult(extension, tokenizer, model_dir, record, report)


def learning_texts(data_cfg) -> list[str]:
    """The domain documents a recipe trains on (cleaned, filtered, deduplicated, decontaminated, held-out removed).

    The same stages and the same decisions as :func:`cptnb.data.pipeline.prepare`,
    so the vocabulary is learned from the training text and never from held-out text.
    """
    from cptnb.data import decontam
    from cptnb.data.pipeline import CorpusStream
    from cptnb.data.split import split_heldout

    index = None
    if data_cfg.decontam.enabled and data_cfg.eval_tasks:
        index = decontam.build_contamination_index(
            data_cfg.eval_tasks, data_cfg.decontam.ngram_words, data_cfg.decontam.short_text_min_words
        )
    stream = CorpusStream(data_cfg, data_cfg.sources, data_cfg.language, index)
    return [doc.text for doc, held in split_heldout(stream.documents(), data_cfg.heldout_share, "domain") if not held]


def extended_model_config(recipe, out_dir: str | Path, build: bool = True):
    """``recipe.model``, pointing at the extended base in ``out_dir/vocab/model`` when ``model.vocab.new_tokens > 0``.

    With ``build`` (the main process) the extension is learned from the recipe's
    training documents and written, unless that folder already holds one made
    with the same settings (a resumed run reuses it); other processes only wait
    for it (call this inside ``main_process_first``).
    """
    model_cfg = recipe.model
    if not model_cfg.vocab.new_tokens:
        return model_cfg
    vocab_dir = Path(out_dir) / "vocab"
    model_dir = vocab_dir / "model"
    # What the extension depends on: a changed base, vocab setting or corpus rebuilds it, a resumed run reuses it.
    wanted = json.loads(json.dumps({"base": model_cfg.name, "vocab": model_cfg.vocab.to_dict(),
                                    "data": recipe.data.to_dict()}, default=str))
    settings = vocab_dir / "settings.json"
    if build and not (read_record(model_dir) and settings.is_file() and json.loads(settings.read_text()) == wanted):
        data = recipe.data
        extend_vocabulary(
            model_cfg, learning_texts(data), vocab_dir,
            general_texts=_texts_of(data.replay_sources), heldout_texts=_texts_of(data.heldout_domain),
            corpus_name=", ".join(str(s) for s in data.sources),
        )
        settings.write_text(json.dumps(wanted, indent=1), encoding="utf-8")
    if not read_record(model_dir):
        raise VocabError(f"{model_dir} holds no extended model; run the main process first (it builds it)")
    return model_cfg.replace(name=str(model_dir))


def extend_for_recipe(recipe, out_dir: str | Path) -> ExtensionResult:
    """``cptnb extend-vocab``: learn ``recipe.model.vocab.new_tokens`` tokens from the recipe's training documents."""
    if not recipe.model.vocab.new_tokens:
        raise VocabError("model.vocab.new_tokens is 0: say how many tokens to add, e.g. --model.vocab.new_tokens 1000")
    data = recipe.data
    return extend_vocabulary(
        recipe.model, learning_texts(data), out_dir,
        general_texts=_texts_of([*data.replay_sources, *data.heldout_general]), heldout_texts=_texts_of(data.heldout_domain),
        corpus_name=", ".join(str(s) for s in data.sources),
    )


def _texts_of(paths: list) -> list[str]:
    from cptnb.data import clean_documents, read_documents

    return [d.text for d in clean_documents(read_documents(paths))] if paths else []
