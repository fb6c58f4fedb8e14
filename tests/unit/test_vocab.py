"""Vocabulary extension on tiny-llama: learning, the extended tokenizer, embedding init, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cptnb.paths import data_samples_dir
from cptnb.vocab import (
    VocabError,
    VocabExtension,
    extend_tokenizer,
    extension_report,
    learn_extension,
    resize_and_init,
)
from cptnb.vocab.compare import approx_bpb_curve, gap_at, gap_by_step, runs_markdown, step_seconds, verdict
from cptnb.vocab.init import padded_rows


def _texts(folder: str) -> list[str]:
    return [json.loads(line)["text"] for p in sorted((data_samples_dir() / folder).glob("*.jsonl"))
            for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def base_tok():
    from cptnb.config import ModelConfig
    from cptnb.models.loading import load_tokenizer

    return load_tokenizer(ModelConfig(name="tiny-llama"))


@pytest.fixture(scope="module")
def vi():
    return _texts("vi")


@pytest.fixture(scope="module")
def en():
    return _texts("en")


@pytest.fixture(scope="module")
def extended(base_tok, vi):
    ext = learn_extension(base_tok, vi, 200)
    return ext, extend_tokenizer(base_tok, ext)


def _base_model(seed: int = 0, tie: bool = True):
    from transformers import AutoConfig, AutoModelForCausalLM

    from cptnb.config import ModelConfig
    from cptnb.models.loading import resolve_source

    source = resolve_source(ModelConfig(name="tiny-llama"))
    if tie:
        return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    config = AutoConfig.from_pretrained(source)
    config.tie_word_embeddings = False
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def test_old_ids_keep_their_strings_and_new_ids_follow(base_tok, extended):
    ext, tok = extended
    assert len(ext.new_tokens) == 200 and len(tok) == len(base_tok) + 200
    old = base_tok.get_vocab()
    new = tok.get_vocab()
    assert all(new[t] == i for t, i in old.items())
    assert [new[t] for t in ext.new_tokens] == list(range(len(base_tok), len(base_tok) + 200))
    # each new token is exactly the concatenation of the base pieces it was learned from
    for token, pieces in zip(ext.new_tokens[:50], ext.pieces[:50]):
        assert "".join(base_tok.convert_ids_to_tokens(pieces)) == token


def test_domain_text_gets_cheaper_and_round_trips(base_tok, extended, vi):
    _, tok = extended
    before = sum(len(base_tok(t)["input_ids"]) for t in vi)
    after = sum(len(tok(t)["input_ids"]) for t in vi)
    assert after < 0.95 * before
    assert all(tok.decode(tok(t, add_special_tokens=False)["input_ids"]) == t for t in vi[:40])


def test_extended_tokenization_is_the_old_one_then_more_merges(base_tok, extended, en):
    """Merges ranked after the base ones: the extended ids decode piece-wise to runs of the old ids."""
    _, tok = extended
    for text in en[:30]:
        old = base_tok(text, add_special_tokens=False)["input_ids"]
        new = tok(text, add_special_tokens=False)["input_ids"]
        pieces = [t.id for token in tok.convert_ids_to_tokens(new) for t in base_tok.backend_tokenizer.model.tokenize(token)]
        assert pieces == old


def test_report_counts_fertility_and_new_id_share(base_tok, extended, vi, en):
    ext, tok = extended
    report = extension_report(base_tok, tok, {"domain": vi, "general": en}, general="general",
                              first_new_id=ext.base_size, block_tokens=64)
    domain = report["corpora"]["domain"]
    assert domain["after"]["tokens_per_word"] < domain["before"]["tokens_per_word"]
    assert 0 < domain["after"]["new_id_share"] < 1
    assert domain["after"]["blocks_per_epoch"] < domain["before"]["blocks_per_epoch"]
    assert report["corpora"]["general"]["general"] is True


def test_extension_saves_and_loads(tmp_path, extended):
    ext, _ = extended
    again = VocabExtension.load(ext.save(tmp_path / "cptnb_vocab.json"))
    assert again == ext


def test_too_many_tokens_for_the_corpus_says_how_many_fit(base_tok):
    with pytest.raises(VocabError, match=r"supports only \d+ new tokens.*ask for at most"):
        learn_extension(base_tok, ["Hà Nội là thủ đô của Việt Nam."] * 3, 500)


def test_bad_arguments_are_explained(base_tok):
    with pytest.raises(VocabError, match="num_new_tokens must be an integer > 0"):
        learn_extension(base_tok, ["xin chào"], 0)
    with pytest.raises(VocabError, match="every document is empty"):
        learn_extension(base_tok, ["", ""], 5)


def test_slow_or_non_bpe_tokenizers_are_refused():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    class Slow:
        is_fast = False

    with pytest.raises(VocabError, match="no fast"):
        learn_extension(Slow(), ["xin chào"], 5)
    unigram = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.Unigram([("a", -1.0), ("b", -2.0)], 0)))
    with pytest.raises(VocabError, match="only BPE tokenizers"):
        learn_extension(unigram, ["ab"], 1)


def test_extending_the_wrong_tokenizer_is_refused(base_tok, extended):
    ext, tok = extended
    with pytest.raises(VocabError, match="learned for a tokenizer of"):
        extend_tokenizer(tok, ext)


def test_mean_of_pieces_init_padding_and_old_rows(base_tok, extended, en):
    ext, tok = extended
    model = _base_model()
    old = model.get_input_embeddings().weight.detach().clone()
    ids = torch.tensor([base_tok(en[0])["input_ids"][:32]])
    logits_before = model(input_ids=ids).logits
    record = resize_and_init(model, ext, "mean_of_pieces", pad_to_multiple_of=64)
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == padded_rows(len(tok), 64) == record["rows_after"] and weight.shape[0] % 64 == 0
    assert torch.equal(weight[: ext.base_size], old[: ext.base_size])
    for i in (0, 57, 199):
        assert torch.allclose(weight[ext.base_size + i], old[ext.pieces[i]].mean(0))
    assert record["tied"] and model.get_output_embeddings().weight is weight
    start, end = record["padding_ids"]
    assert start == len(tok) and end == weight.shape[0] and not weight[start:].any()
    assert set(range(start, end)) <= set(model.generation_config.suppress_tokens)
    # old text, old ids, old rows: the logits over the old vocabulary are unchanged
    assert torch.allclose(model(input_ids=ids).logits[..., : ext.base_size], logits_before, atol=1e-6)


def test_untied_output_rows_are_initialised_too(extended):
    ext, _ = extended
    model = _base_model(tie=False)
    out_old = model.get_output_embeddings().weight.detach().clone()
    record = resize_and_init(model, ext, "mean_of_pieces", pad_to_multiple_of=8)
    out = model.get_output_embeddings().weight
    assert not record["tied"] and out is not model.get_input_embeddings().weight
    assert torch.allclose(out[ext.base_size + 3], out_old[ext.pieces[3]].mean(0))


def test_global_mean_and_random_init(extended):
    ext, _ = extended
    model = _base_model()
    old = model.get_input_embeddings().weight.detach().clone()
    resize_and_init(model, ext, "global_mean", pad_to_multiple_of=1)
    new = model.get_input_embeddings().weight[ext.base_size :]
    assert model.get_input_embeddings().weight.shape[0] == ext.base_size + 200
    assert torch.allclose(new, old[: ext.base_size].mean(0).expand_as(new))
    model = _base_model()
    resize_and_init(model, ext, "random", pad_to_multiple_of=1, seed=3)
    rows = model.get_input_embeddings().weight.detach()[ext.base_size :]
    assert abs(float(rows.std()) - model.config.initializer_range) < 0.005
    with pytest.raises(VocabError, match="init method must be one of"):
        resize_and_init(_base_model(), ext, "zeros")


def test_models_that_cannot_be_resized_are_explained(tiny, extended):
    ext, _ = extended
    with pytest.raises(VocabError, match="already carries LoRA adapters"):
        resize_and_init(tiny().model, ext)

    class NoEmbeddings(torch.nn.Module):
        config = type("C", (), {"quantization_config": None})()

        def get_input_embeddings(self):
            raise NotImplementedError

    with pytest.raises(VocabError, match="cannot be resized"):
        resize_and_init(NoEmbeddings(), ext)


def test_the_gap_curve_puts_the_extended_run_on_the_plain_runs_step_axis():
    plain = [(6, 2.0), (12, 1.8), (18, 1.7)]
    # The extended run's steps come after 3 embeddings-only steps; a repeated final point counts once.
    extended = [(6, 2.3), (12, 1.9), (15, 1.8), (15, 1.8), (16, 1.75)]
    gaps = gap_by_step(plain, extended, offset=3)
    assert [s for s, _ in gaps] == [9, 15, 18]  # step 19 lies beyond the plain curve: not extrapolated
    assert gaps[0][1] == pytest.approx(2.3 - 1.9) and gaps[1][1] == pytest.approx(1.9 - 1.75)
    assert gaps[2][1] == pytest.approx(1.8 - 1.7) and gap_by_step([], extended) == []


def test_runs_compare_by_seconds_in_training_steps_not_by_their_evaluation():
    events = [{"step": 1, "train_loss": 2.0, "train_step_seconds": 1.5}, {"step": 1, "heldout_domain_loss": 2.1},
              {"step": 2, "train_loss": 1.9, "train_step_seconds": 3.25}, {"step": 2, "heldout_domain_loss": 2.0}]
    assert step_seconds(events) == 3.25 and step_seconds([{"step": 1, "heldout_domain_loss": 2.0}]) == 0.0
    score = {"bits_per_byte": 2.0, "items": [{"id": i, "nll_nats": 1.0 + i, "bytes": 10} for i in range(4)]}
    runs = {name: {"seconds": s, "wall_seconds": w, "steps": 2, "train_bytes_seen": 100, "scores": {"domain": score}}
            for name, s, w in (("plain", 20.0, 50.0), ("extended", 18.0, 30.0))}
    assert "| plain | 20 | 50 | 2 |" in runs_markdown(runs, "plain")
    assert verdict(runs, "plain", "extended", [])[0].startswith("At 18 s vs 20 s of training steps (0.90x;")


def test_the_equal_time_gap_reads_both_curves_where_the_shorter_run_ended():
    plain_events = [{"step": 3, "heldout_domain_loss": 2.0, "train_step_seconds": 20.0},
                    {"step": 6, "heldout_domain_loss": 1.0, "train_step_seconds": 40.0}, {"step": 6, "train_loss": 1.5}]
    ext_events = [{"step": 3, "heldout_domain_loss": 3.0, "train_step_seconds": 10.0}]
    plain = approx_bpb_curve(plain_events, {"domain": math.log(2)}, x="train_step_seconds")["domain"]
    extended = approx_bpb_curve(ext_events, {"domain": math.log(2)}, x="train_step_seconds", x_offset=20.0)["domain"]
    assert plain == [(20.0, pytest.approx(2.0)), (40.0, pytest.approx(1.0))] and extended == [(30.0, pytest.approx(3.0))]
    assert gap_at(plain, extended, 30.0) == pytest.approx(3.0 - 1.5)  # plain interpolated halfway
    assert gap_at(plain, extended, 45.0) is None and gap_at([], extended, 30.0) is None
    score = {"bits_per_byte": 2.0, "items": [{"id": i, "nll_nats": 1.0 + i, "bytes": 10} for i in range(4)]}
    runs = {name: {"seconds": s, "steps": 6, "train_bytes_seen": 100, "scores": {"domain": score}}
            for name, s in (("plain", 40.0), ("extended", 30.0))}
    lines = verdict(runs, "plain", "extended", [], time_curves=(plain, extended))
    assert "At equal training time (30 s in optimizer steps, where the extended run ended)" in lines[-1]
    assert "extended run +1.5000 bits per byte from the plain run" in lines[-1]
    assert not any("equal training time" in line for line in verdict(runs, "plain", "extended", []))
