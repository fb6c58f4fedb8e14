"""Scoring (cptnb.evaluate.scoring) against log-likelihoods computed by hand on tiny-llama."""

import json
import math
import statistics

import pytest
import torch

from cptnb.config import EvalConfig
from cptnb.evaluate.scoring import (
    encode_pair,
    evaluate_task,
    evaluate_tasks,
    loglikelihoods,
    mean_stderr,
    pooled_stderr,
)
from cptnb.evaluate.suite import tasks_from
from cptnb.evaluate.tasks import context, continuations, fewshot_plan, load_tasks
from cptnb.paths import REPO_ROOT

EVAL = REPO_ROOT / "data_samples" / "eval"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The CPU is shared; one thread per process keeps these small forward passes fast and steady.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _task(name, **overrides):
    (task,) = load_tasks(EVAL / name, **overrides)
    return task


def _by_hand(model, tok, ctx: str, cont: str, max_len: int | None = None) -> tuple[float, bool]:
    """lm-eval's recipe spelled out: move trailing spaces, tokenize whole and context, one plain forward pass."""
    spaces = len(ctx) - len(ctx.rstrip())
    if spaces:
        ctx, cont = ctx[:-spaces], ctx[-spaces:] + cont
    ctx_ids = tok.encode(ctx)
    cont_ids = tok.encode(ctx + cont)[len(ctx_ids):]
    ids = ctx_ids + cont_ids
    if max_len is not None:
        ids = ids[-(max_len + 1):]
    inp = ids[:-1]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([inp])).logits[0].float(), dim=-1)
    rows = logprobs[len(inp) - len(cont_ids):]
    target = torch.tensor(cont_ids)
    return float(rows.gather(1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all())


def _argmax(xs):
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


@pytest.mark.parametrize("name,limit", [("wikipediaqa_vi", 3), ("comprehension_vi", 2), ("exams_vi", 1)])
def test_multiple_choice_equals_a_hand_computed_forward_pass(tiny, name, limit):
    loaded = tiny(method="full")
    task = _task(name)
    result = evaluate_task(loaded.model, loaded.tokenizer, task, batch_size=4, limit=limit)
    plan = fewshot_plan(task, limit)
    assert result.n == len(plan) == len(result.items)
    for (item, shots), got in zip(plan, result.items):
        ctx = context(task, item, shots)
        hand = [_by_hand(loaded.model, loaded.tokenizer, ctx, c)[0] for c in continuations(task, item)]
        assert got["loglikelihoods"] == pytest.approx(hand, abs=1e-4)
        texts = item["choices"]["text"]
        gold = item["choices"]["label"].index(item["answerKey"])
        assert got["gold"] == gold and got["id"] == item["id"]
        assert got["acc"] == int(_argmax(hand) == gold)
        assert got["acc_norm"] == int(_argmax([ll / len(t) for ll, t in zip(hand, texts)]) == gold)
        assert got["acc_bytes"] == int(_argmax([ll / len(t.encode()) for ll, t in zip(hand, texts)]) == gold)
    assert result.metrics["acc"] == pytest.approx(statistics.mean(i["acc"] for i in result.items))


def test_lambada_equals_a_hand_computed_forward_pass(tiny):
    loaded = tiny(method="full")
    task = _task("lambada_vi")
    result = evaluate_task(loaded.model, loaded.tokenizer, task, batch_size=3, limit=5)
    hand = [_by_hand(loaded.model, loaded.tokenizer, item["context"], item["target"]) for item in task.items[:5]]
    assert [i["loglikelihood"] for i in result.items] == pytest.approx([h[0] for h in hand], abs=1e-4)
    assert [i["acc"] for i in result.items] == [int(h[1]) for h in hand]
    assert result.metrics["perplexity"] == pytest.approx(math.exp(-statistics.mean(h[0] for h in hand)), rel=1e-4)
    assert result.items[0]["target"] == task.items[0]["target"].strip()


def test_greedy_match_is_detected(tiny):
    # The model's own greedy continuation must count as a greedy match; a different one must not.
    loaded = tiny(method="full")
    tok, model = loaded.tokenizer, loaded.model
    prompt = "Hà Nội là thủ đô của"
    ids = tok.encode(prompt)
    with torch.no_grad():
        for _ in range(3):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    greedy_text = tok.decode(ids[len(tok.encode(prompt)):])
    assert encode_pair(tok, prompt, greedy_text)[1] == ids[len(tok.encode(prompt)):]
    (scores,) = loglikelihoods(model, tok, [(prompt, [greedy_text, " nước Việt Nam"])])
    assert scores[0][1] is True and scores[1][1] is False
    assert [s[0] for s in scores] == pytest.approx(
        [_by_hand(model, tok, prompt, c)[0] for c in (greedy_text, " nước Việt Nam")], abs=1e-4)


def test_encoding_moves_trailing_spaces_and_uses_a_prefix_for_empty_context(tiny):
    tok = tiny(method="full").tokenizer
    assert encode_pair(tok, "Câu hỏi: 2 + 2?\nTrả lời: ", "4") == encode_pair(tok, "Câu hỏi: 2 + 2?\nTrả lời:", " 4")
    ctx_ids, cont_ids = encode_pair(tok, "Trả lời:", " bốn")
    assert ctx_ids == tok.encode("Trả lời:") and ctx_ids + cont_ids == tok.encode("Trả lời: bốn")
    # Empty context: the prefix token (BOS, else EOS) stands in, unless the continuation already starts with it.
    assert encode_pair(tok, "", " xin chào") == ([tok.eos_token_id], tok.encode(" xin chào", add_special_tokens=False))
    starts_with_eos = tok.eos_token + " xin chào"
    ids = tok.encode(starts_with_eos, add_special_tokens=False)
    assert ids[0] == tok.eos_token_id and encode_pair(tok, "", starts_with_eos) == (ids[:1], ids[1:])


def test_shared_context_equals_plain_scoring_at_any_batch_size(tiny):
    loaded = tiny(method="full")
    task = _task("exams_vi")
    runs = [
        evaluate_task(loaded.model, loaded.tokenizer, task, batch_size=8, limit=1),
        evaluate_task(loaded.model, loaded.tokenizer, task, batch_size=1, limit=1),
        evaluate_task(loaded.model, loaded.tokenizer, task, batch_size=8, limit=1, share_context=False),
    ]
    first = runs[0].items
    for other in runs[1:]:
        for a, b in zip(first, other.items):
            assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=1e-4)
            assert (a["acc"], a["acc_norm"]) == (b["acc"], b["acc_norm"])


def test_inputs_longer_than_the_model_are_cut_from_the_left(tiny):
    loaded = tiny(method="full")
    model, tok = loaded.model, loaded.tokenizer
    task = _task("wikipediaqa_vi")
    model.config.max_position_embeddings = 48  # lm-eval reads the limit from here
    try:
        result = evaluate_task(model, tok, task, batch_size=4, limit=2)
        for (item, shots), got in zip(fewshot_plan(task, 2), result.items):
            ctx = context(task, item, shots)
            assert len(tok.encode(ctx)) > 48
            hand = [_by_hand(model, tok, ctx, c, max_len=48)[0] for c in continuations(task, item)]
            assert got["loglikelihoods"] == pytest.approx(hand, abs=1e-4)
    finally:
        model.config.max_position_embeddings = 2048


def test_peft_adapter_and_its_merged_model_score_alike(tiny):
    loaded = tiny(method="lora")
    model, tok = loaded.model, loaded.tokenizer
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter: LoRA B starts at zero, which would change nothing
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    task = _task("general_en")
    adapted = evaluate_task(model, tok, task, limit=4)
    with model.disable_adapter():
        base = evaluate_task(model, tok, task, limit=4)
    merged = evaluate_task(model.merge_and_unload(), tok, task, limit=4)
    lls = lambda r: [ll for i in r.items for ll in i["loglikelihoods"]]
    assert lls(merged) == pytest.approx(lls(adapted), abs=1e-4)
    assert max(abs(a - b) for a, b in zip(lls(adapted), lls(base))) > 1e-2


def test_result_dict_shape_and_subject_aggregation(tiny):
    loaded = tiny(method="full")
    result = evaluate_task(loaded.model, loaded.tokenizer, _task("exams_vi"), limit=3).to_dict()
    json.dumps(result)
    assert set(result) == {"kind", "role", "num_fewshot", "n", "metrics", "stderr", "subjects", "items"}
    assert (result["kind"], result["role"], result["num_fewshot"], result["n"]) == ("multiple_choice", "domain", 5, 21)
    assert set(result["metrics"]) == set(result["stderr"]) == {"acc", "acc_norm", "acc_bytes"}
    assert set(result["items"][0]) == {"id", "subject", "acc", "acc_norm", "acc_bytes", "loglikelihoods", "gold"}
    assert list(result["subjects"]) == ["dia", "hoa", "su", "sinh", "toan", "van", "vatly"]
    for subject, sub in result["subjects"].items():
        accs = [i["acc"] for i in result["items"] if i["subject"] == subject]
        assert sub["n"] == 3 and sub["metrics"]["acc"] == pytest.approx(statistics.mean(accs))
        assert sub["stderr"]["acc"] == pytest.approx(statistics.stdev(accs) / math.sqrt(3))
    assert result["metrics"]["acc"] == pytest.approx(statistics.mean(i["acc"] for i in result["items"]))
    errs = [s["stderr"]["acc"] for s in result["subjects"].values()]
    assert result["stderr"]["acc"] == pytest.approx(pooled_stderr(errs, [3] * 7))


def test_lambada_result_dict_shape(tiny):
    loaded = tiny(method="full")
    result = evaluate_task(loaded.model, loaded.tokenizer, _task("lambada_vi"), limit=4).to_dict()
    assert result["kind"] == "lambada" and result["n"] == 4 and result["subjects"] == {}
    assert set(result["metrics"]) == {"acc", "perplexity"} and set(result["stderr"]) == {"acc"}
    assert set(result["items"][0]) == {"id", "acc", "loglikelihood", "target"}


def test_standard_errors_follow_lm_eval():
    values = [1, 0, 1, 1, 0]
    assert mean_stderr(values) == pytest.approx(statistics.stdev(values) / math.sqrt(5))
    assert mean_stderr([1]) is None
    # Two subjects of 4: within-subject sample variances 1/3 and 1/4, pooled over 8 - 2 degrees of freedom.
    a, b = [1, 0, 1, 0], [1, 1, 1, 0]
    se = [mean_stderr(a), mean_stderr(b)]
    assert pooled_stderr(se, [4, 4]) == pytest.approx(math.sqrt((3 * (1 / 3) + 3 * 0.25) / 6 / 8))


def test_tasks_from_config_apply_its_overrides(tiny):
    loaded = tiny(method="full")
    cfg = EvalConfig(tasks=[str(EVAL / "general_en"), str(EVAL / "lambada_vi")], limit=2, num_fewshot=1, batch_size=2)
    results = evaluate_tasks(loaded.model, loaded.tokenizer, tasks_from(cfg), cfg.batch_size, cfg.limit)
    assert list(results) == ["general_en", "lambada_vi"]
    assert (results["general_en"].n, results["general_en"].num_fewshot) == (2, 1)
    assert (results["lambada_vi"].n, results["lambada_vi"].num_fewshot) == (2, 0)


def test_a_model_without_a_kv_cache_is_scored_the_plain_way(tiny):
    loaded = tiny(method="full")

    class NoCache(torch.nn.Module):
        """A causal LM that never returns a cache (as some custom model code does)."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids, use_cache=None, logits_to_keep=0, **kwargs):
            return self.inner(input_ids=input_ids, use_cache=False, logits_to_keep=logits_to_keep, **kwargs)

    task = _task("general_en")
    plain = evaluate_task(NoCache(loaded.model), loaded.tokenizer, task, limit=3)
    cached = evaluate_task(loaded.model, loaded.tokenizer, task, limit=3)
    for a, b in zip(plain.items, cached.items):
        assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=1e-4)


def test_near_ties_are_rescored_plainly_and_go_to_the_first_choice(tiny, tmp_path, caplog):
    from cptnb.evaluate.tasks import load_task

    folder = tmp_path / "tie"
    folder.mkdir()
    item = {"id": "t1", "question": "Chọn một đáp án?", "choices": {"label": ["A", "B", "C"], "text": ["hai", "hai", "ba"]},
            "answerKey": "B"}
    (folder / "test.jsonl").write_text(json.dumps(item, ensure_ascii=False) + "\n", encoding="utf-8")
    loaded = tiny(method="full")
    with caplog.at_level("INFO", logger="cptnb.evaluate.scoring"):
        result = evaluate_task(loaded.model, loaded.tokenizer, load_task(folder))
    (got,) = result.items
    assert got["loglikelihoods"][0] == got["loglikelihoods"][1]
    assert "near-tie" in caplog.text
    assert got["acc"] == 0  # equal scores go to the first choice (A), as np.argmax does, never to the gold B
