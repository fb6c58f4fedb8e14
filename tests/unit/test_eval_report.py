"""Results files, base-vs-adapted comparison with paired-bootstrap intervals, chart and retention."""

import json
import math

import numpy as np
import pytest

from cptnb.errors import CptnbError, DataError
from cptnb.evaluate.compare import bootstrap_mean_delta, compare_results, retention
from cptnb.evaluate.heldout import measure
from cptnb.evaluate.report import scores_markdown, write_before_after, write_comparison
from cptnb.evaluate.results import build_results, load_results, task_summary, write_results

SUBJECTS = ("dia", "hoa", "su")


def _scores(items, metrics=("acc", "acc_norm")):
    n = len(items)
    out = {"n": n, "metrics": {}, "stderr": {}}
    for m in metrics:
        x = np.array([i[m] for i in items], dtype=float)
        out["metrics"][m] = float(x.mean())
        out["stderr"][m] = float(x.std(ddof=1) / math.sqrt(n))
    return out


def mc_task(correct, role="domain", subjects=None, prefix="q"):
    """A multiple-choice TaskResult.to_dict() whose numbers follow from its items."""
    items = []
    for i, c in enumerate(correct):
        item = {"id": f"{prefix}{i}", "acc": int(c), "acc_norm": int(c), "loglikelihoods": [-1.0, -2.0], "gold": 0}
        if subjects:
            item["subject"] = subjects[i]
        items.append(item)
    task = {"kind": "multiple_choice", "role": role, "num_fewshot": 5, **_scores(items), "items": items}
    if subjects:
        task["subjects"] = {s: _scores([i for i in items if i["subject"] == s]) for s in sorted(set(subjects))}
    return task


def lambada_task(correct, loglikelihoods):
    items = [{"id": f"l{i}", "acc": int(c), "loglikelihood": float(ll), "target": "x"} for i, (c, ll) in enumerate(zip(correct, loglikelihoods))]
    task = {"kind": "lambada", "role": "domain", "num_fewshot": 0, **_scores(items, ("acc",)), "items": items}
    task["metrics"]["perplexity"] = float(np.exp(-np.mean(loglikelihoods)))
    return task


def heldout_set(nll_per_doc, tokens=100, n_bytes=300, with_items=True):
    items = [{"id": f"{i}-doc", "nll_nats": float(x), "tokens": tokens, "bytes": n_bytes} for i, x in enumerate(nll_per_doc)]
    nll, t, b = sum(nll_per_doc), tokens * len(items), n_bytes * len(items)
    scores = {"loss": nll / t, "perplexity": math.exp(nll / t), "bits_per_byte": nll / math.log(2) / b, "tokens": t, "bytes": b, "docs": len(items)}
    return {**scores, "items": items} if with_items else scores


def doc(tasks, heldout=None, generations=None, model="base-model"):
    return build_results(tasks, heldout, {"model": model, "limit": None}, generations)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# --------------------------------------------------------------------------- bootstrap


def test_identical_runs_give_zero_delta_and_zero_width_intervals(rng):
    correct = rng.random(120) < 0.4
    subjects = [SUBJECTS[i % 3] for i in range(120)]
    d = doc({"exams_vi": mc_task(correct, subjects=subjects), "lambada_vi": lambada_task(correct, -rng.gamma(2, 2, 120))},
            {"domain": heldout_set(rng.uniform(100, 200, 15))})
    rows = compare_results(d, json.loads(json.dumps(d)), n_boot=2000)
    assert {r.label for r in rows} >= {"exams_vi", "exams_vi_dia", "exams_vi_su", "lambada_vi", "held-out domain"}
    assert any(r.metric == "perplexity" for r in rows) and any(r.metric == "bits_per_byte" for r in rows)
    for r in rows:
        assert r.delta == 0 and r.ci_low == 0 and r.ci_high == 0, r
        assert r.verdict == "unclear"


def test_adapted_right_wherever_base_was_wrong_gives_an_interval_above_zero(rng):
    base_correct = rng.random(150) < 0.3
    rows = compare_results(doc({"wikipediaqa_vi": mc_task(base_correct)}), doc({"wikipediaqa_vi": mc_task(np.ones(150))}))
    acc = next(r for r in rows if r.metric == "acc")
    assert acc.delta == pytest.approx(1 - base_correct.mean())
    assert 0 < acc.ci_low < acc.delta < acc.ci_high <= 1 - base_correct.mean() + 0.2
    assert acc.verdict == "better" and acc.n == 150


def test_interval_covers_a_known_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    n, true_delta, covered, widths = 200, 0.1, 0, []
    for experiment in range(200):
        base = (rng.random(n) < 0.5).astype(float)
        adapted = (rng.random(n) < 0.5 + true_delta).astype(float)
        _, low, high = bootstrap_mean_delta(base, adapted, n_boot=1000, seed=experiment)
        covered += low <= true_delta <= high
        widths.append(high - low)
    assert 0.90 <= covered / 200 <= 0.99
    # Width near the normal-theory 2 * 1.96 * sd(delta_i) / sqrt(n), sd^2 = .25 + .24 for independent items.
    assert np.mean(widths) == pytest.approx(2 * 1.96 * math.sqrt(0.49 / n), rel=0.1)


def test_intervals_are_reproducible_with_the_seed_and_independent_of_other_tasks(rng):
    base = {"a": mc_task(rng.random(80) < 0.4, prefix="a"), "b": mc_task(rng.random(60) < 0.5, prefix="b")}
    adapted = {"a": mc_task(rng.random(80) < 0.6, prefix="a"), "b": mc_task(rng.random(60) < 0.5, prefix="b")}
    first = compare_results(doc(base), doc(adapted), n_boot=500, seed=3)
    again = compare_results(doc(base), doc(adapted), n_boot=500, seed=3)
    other = compare_results(doc(base), doc(adapted), n_boot=500, seed=4)
    only_a = compare_results(doc({"a": base["a"]}), doc({"a": adapted["a"]}), n_boot=500, seed=3)
    key = lambda rows: [(r.label, r.metric, r.ci_low, r.ci_high) for r in rows]
    assert key(first) == key(again)
    assert key(first) != key(other)
    assert key(only_a) == [k for k in key(first) if k[0] == "a"]


def test_lambada_perplexity_gets_an_interval_from_per_item_loglikelihoods(rng):
    correct = rng.random(100) < 0.3
    ll = -rng.gamma(2, 2, 100)
    rows = compare_results(doc({"lambada_vi": lambada_task(correct, ll)}), doc({"lambada_vi": lambada_task(correct, ll + 0.5)}))
    ppl = next(r for r in rows if r.metric == "perplexity")
    assert ppl.delta == pytest.approx(np.exp(-(ll + 0.5).mean()) - np.exp(-ll.mean()))
    assert ppl.ci_low <= ppl.delta <= ppl.ci_high < 0 and ppl.verdict == "better"


def test_mismatched_item_ids_are_refused_naming_task_and_id(rng):
    correct = rng.random(30) < 0.5
    adapted = mc_task(correct)
    adapted["items"][4]["id"] = "other-4"
    with pytest.raises(DataError, match=r"comprehension_vi.*'q4' is in base but not in adapted"):
        compare_results(doc({"comprehension_vi": mc_task(correct)}), doc({"comprehension_vi": adapted}))
    adapted["items"][4]["id"] = "q5"
    with pytest.raises(DataError, match=r"'q5' appears more than once in adapted"):
        compare_results(doc({"comprehension_vi": mc_task(correct)}), doc({"comprehension_vi": adapted}))


# --------------------------------------------------------------------------- groups, tables, chart


def test_exams_mean_is_the_size_weighted_subject_mean_with_pooled_stderr():
    subjects = ["dia"] * 10 + ["hoa"] * 40
    correct = [1] * 9 + [0] + [1] * 10 + [0] * 30  # dia 0.9 on 10 items, hoa 0.25 on 40
    metrics, stderr, n = task_summary(mc_task(correct, subjects=subjects))
    assert n == 50 and metrics["acc"] == pytest.approx(0.38)  # pooled, not (0.9 + 0.25) / 2
    pooled_var = (9 * 0.1 * 0.9 * 10 / 9 + 39 * 0.25 * 0.75 * 40 / 39) / 48
    assert stderr["acc"] == pytest.approx(math.sqrt(pooled_var / 50))


def _two_runs(rng, n=90):
    subjects = [SUBJECTS[i % 3] for i in range(n)]
    base_correct = rng.random(n) < 0.3
    base = doc(
        {"exams_vi": mc_task(base_correct, subjects=subjects), "general_en": mc_task(rng.random(60) < 0.5, "general", prefix="g")},
        {"domain": heldout_set(rng.uniform(100, 200, 12)), "general": heldout_set(rng.uniform(100, 200, 12), with_items=False)},
        [{"prompt": "Hà Nội là", "output": "một"}],
    )
    adapted = doc(
        {"exams_vi": mc_task(base_correct | (rng.random(n) < 0.3), subjects=subjects), "general_en": base["tasks"]["general_en"]},
        {"domain": heldout_set(np.array([i["nll_nats"] for i in base["heldout"]["domain"]["items"]]) * 0.8),
         "general": base["heldout"]["general"]},
        [{"prompt": "Hà Nội là", "output": "thủ đô của Việt Nam"}],
        model="adapted-model",
    )
    return base, adapted


def test_comparison_markdown_lists_tasks_subjects_heldout_and_generations(tmp_path, rng):
    base, adapted = _two_runs(rng)
    payload = write_comparison(tmp_path, base, adapted, title="smoke", n_boot=1000)
    md = (tmp_path / "comparison.md").read_text(encoding="utf-8")
    rows = {(r["label"], r["metric"]): r for r in payload["comparison"]}
    exams = rows[("exams_vi", "acc")]
    line = next(l for l in md.splitlines() if l.startswith("| exams_vi (mean) | acc |"))
    assert f"| {exams['base']:.4f} | {exams['adapted']:.4f} | {exams['delta']:+.4f} [{exams['ci_low']:+.4f}, {exams['ci_high']:+.4f}]" in line
    for s in SUBJECTS:
        assert f"| exams_vi_{s} | acc | 30 |" in md
    assert "size-weighted mean" in md
    # Held-out general has no per-document values in these files, so its interval is n/a; domain has one.
    assert next(l for l in md.splitlines() if l.startswith("| held-out general | bits_per_byte")).count("[n/a]") == 1
    domain_bpb = rows[("held-out domain", "bits_per_byte")]
    assert domain_bpb["relative_change"] == pytest.approx(-0.2) and domain_bpb["verdict"] == "better"
    assert "- base: một\n- adapted: thủ đô của Việt Nam" in md
    assert "base: base-model · adapted: adapted-model" in md
    assert json.loads((tmp_path / "comparison.json").read_text())["retention"] == payload["retention"]


def test_chart_is_a_non_empty_png(tmp_path, rng):
    write_comparison(tmp_path, *_two_runs(rng), n_boot=200)
    png = (tmp_path / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


# --------------------------------------------------------------------------- retention


def _general_runs(rng, general_after):
    base_general = rng.random(200) < 0.6
    domain = rng.random(100) < 0.3
    base = doc({"lambada_vi": lambada_task(domain, -rng.gamma(2, 2, 100)), "general_en": mc_task(base_general, "general", prefix="g")})
    adapted = json.loads(json.dumps(base))
    adapted["tasks"]["lambada_vi"] = lambada_task(np.ones(100), [i["loglikelihood"] for i in base["tasks"]["lambada_vi"]["items"]])
    adapted["tasks"]["general_en"] = mc_task(general_after(base_general), "general", prefix="g")
    return base, adapted


def test_retention_says_forgetting_when_general_ability_drops_beyond_the_interval(rng):
    summary = retention(compare_results(*_general_runs(rng, lambda c: c & (np.arange(200) % 2 == 0)), n_boot=2000))
    assert summary.forgetting and summary.general_task_ci[1] < 0
    assert "forgetting" in summary.sentence and "general_en" in summary.sentence
    assert summary.domain_task_delta > 0 and summary.domain_task_ci[0] > 0


def test_retention_says_retained_when_the_general_interval_straddles_zero(rng):
    flip_some = lambda c: np.where(np.arange(200) < 15, ~c, c)  # some right->wrong, some wrong->right
    summary = retention(compare_results(*_general_runs(rng, flip_some), n_boot=2000))
    assert summary.general_task_delta < 0  # a small drop, within noise
    assert not summary.forgetting and summary.general_task_ci[0] < 0 < summary.general_task_ci[1]
    assert "retained" in summary.sentence and "forgetting" not in summary.sentence


def test_retention_without_intervals_gives_no_verdict():
    base = {"heldout": {"domain": heldout_set([200.0] * 3, with_items=False), "general": heldout_set([100.0] * 3, with_items=False)}}
    adapted = {"heldout": {"domain": heldout_set([150.0] * 3, with_items=False), "general": heldout_set([130.0] * 3, with_items=False)}}
    summary = retention(compare_results(base, adapted))
    assert not summary.forgetting and "forgetting" not in summary.sentence
    assert "cannot be judged" in summary.sentence and "-25.0%" in summary.sentence


# --------------------------------------------------------------------------- files


def test_results_round_trip_and_report(tmp_path, rng):
    base, _ = _two_runs(rng)
    files = write_results(tmp_path, base)
    assert load_results(tmp_path) == load_results(files.json) == json.loads(json.dumps(base))
    report = files.markdown.read_text(encoding="utf-8")
    acc, err = base["tasks"]["exams_vi"]["subjects"]["dia"]["metrics"]["acc"], base["tasks"]["exams_vi"]["subjects"]["dia"]["stderr"]["acc"]
    assert f"| exams_vi_dia |  |  | acc | {acc:.4f} | {err:.4f} | 30 |" in report
    assert "| exams_vi (mean) | domain | 5 | acc |" in report and "| domain | " in report
    assert base["meta"]["cptnb_version"] and base["meta"]["created"]


def test_load_results_explains_missing_garbled_and_misshapen_files(tmp_path):
    with pytest.raises(DataError, match="no results file"):
        load_results(tmp_path / "nowhere" / "results.json")
    garbled = tmp_path / "garbled.json"
    garbled.write_text('{"meta": {},\n "tasks": {', encoding="utf-8")
    with pytest.raises(DataError, match=r"garbled.json, line 2.*not valid JSON"):
        load_results(garbled)
    wrong = tmp_path / "wrong.json"
    task = mc_task([1, 0, 1])
    task["role"], task["metrics"]["acc"] = "vietnamese", "high"
    wrong.write_text(json.dumps({"meta": {}, "tasks": {"exams_vi": task}}), encoding="utf-8")
    with pytest.raises(CptnbError) as err:
        load_results(wrong)
    assert "tasks.exams_vi.role" in str(err.value) and "tasks.exams_vi.metrics.acc" in str(err.value)
    assert "2 problem(s)" in str(err.value)


def test_build_results_refuses_a_task_without_metrics():
    with pytest.raises(DataError, match="tasks.lambada_vi has no 'metrics'"):
        build_results({"lambada_vi": {"kind": "lambada", "role": "domain", "n": 3}}, None, {"model": "m"})


# --------------------------------------------------------------------------- with a real model


def test_real_task_results_and_measurement_flow_through_results_and_comparison(tiny, tmp_path):
    from cptnb.config import EvalConfig
    from cptnb.evaluate.perplexity import score_texts
    from cptnb.evaluate.scoring import evaluate_tasks
    from cptnb.evaluate.tasks import load_task
    from cptnb.paths import data_samples_dir

    loaded = tiny(method="full")
    texts = {"domain": ["Con mèo nằm ngủ trên mái nhà.", "Sông Hồng chảy qua Hà Nội.", "Trời hôm nay trong xanh."],
             "general": ["The cat sleeps on the roof.", "Rivers flow to the sea."]}
    cfg = EvalConfig(window_tokens=64, stride_tokens=32, batch_size=2)
    before = measure(loaded.model, loaded.tokenizer, texts, cfg)
    whole = score_texts(loaded.model, loaded.tokenizer, texts["domain"], 64, 32, 2)
    domain = before["heldout"]["domain"]
    assert len(domain["items"]) == 3 and sum(i["tokens"] for i in domain["items"]) == whole.tokens
    assert domain["bits_per_byte"] == pytest.approx(whole.bits_per_byte, rel=1e-5)
    assert f"| domain | {domain['loss']:.4f} |" in scores_markdown(before)

    tasks = [load_task(data_samples_dir() / "eval" / name) for name in ("exams_vi", "lambada_vi")]
    scored = evaluate_tasks(loaded.model, loaded.tokenizer, tasks, batch_size=4, limit=2)
    base = build_results({k: r.to_dict() for k, r in scored.items()}, before["heldout"], {"model": "tiny-llama", "limit": 2})
    write_results(tmp_path / "base", base)
    # The adapted model here halves every held-out document's loss; its tasks are the base's.
    after = json.loads(json.dumps(base))
    for item in after["heldout"]["domain"]["items"]:
        item["nll_nats"] *= 0.5
    for metric in ("bits_per_byte", "loss"):
        after["heldout"]["domain"][metric] *= 0.5
    after["heldout"]["domain"]["perplexity"] = math.exp(after["heldout"]["domain"]["loss"])
    report = write_before_after(tmp_path, load_results(tmp_path / "base"), after, n_boot=500)
    rows = {(r["label"], r["metric"]): r for r in report["comparison"]}
    assert rows[("held-out domain", "bits_per_byte")]["ci_high"] < 0
    assert rows[("held-out general", "bits_per_byte")]["ci_high"] == 0
    assert rows[("exams_vi", "acc")]["n"] == 14 and rows[("exams_vi_toan", "acc")]["n"] == 2
    assert rows[("lambada_vi", "perplexity")]["ci_low"] == 0 == rows[("lambada_vi", "perplexity")]["ci_high"]
    assert report["after"]["heldout"]["domain"]["docs"] == 3
    assert {"before_after.json", "before_after.md", "before_after.png"} <= {p.name for p in tmp_path.iterdir()}
