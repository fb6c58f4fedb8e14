"""Score evaluation tasks with lm-evaluation-harness 0.4.13 semantics, computing each shared prompt once.

What is reproduced from lm-eval (``lm_eval/api/model.py``, ``models/huggingface.py``,
``api/task.py``, ``api/metrics.py``), so that the numbers equal the harness's on
the same items and model:

* tokenization: trailing whitespace of the context moves to the continuation;
  continuation tokens are ``tokens(context + continuation)[len(tokens(context)):]``
  with the tokenizer's default special tokens (none added when the text already
  starts with the prefix token's text); an empty context becomes the prefix
  token (BOS, else EOS); sequences longer than the model's maximum length + 1
  are cut from the left;
* log-likelihood: the sum of log-softmax scores of the continuation tokens;
  greedy means every continuation token is the argmax;
* multiple choice: ``acc`` = argmax of the summed log-likelihoods (first on ties),
  ``acc_norm`` = argmax of log-likelihood / **characters** of the choice (what
  lm-eval 0.4.x computes, although it is often described as bytes), and
  ``acc_bytes`` = argmax of log-likelihood / UTF-8 bytes of the choice;
* lambada: ``acc`` = greedy match of all target tokens, ``perplexity`` =
  ``exp(-mean(loglikelihood))``;
* standard errors: sample standard deviation / sqrt(n) per (sub-)task; a task
  split by subject reports the size-weighted mean and the pooled standard error,
  as lm-eval's group aggregation does.

The speed-up: lm-eval runs ``context + choice`` once per choice. Here each
item's context runs once with a KV cache, and only the choice tokens of all its
choices run on top of it (batched across items), which gives the same
log-likelihoods up to float32 rounding, about 1e-6 per continuation token
(within 1e-4 of lm-eval on every sample item, ``tests/unit/test_lmeval_parity.py``).
Items whose two best choices are within ``NEAR_TIE`` are scored again the plain
way, so rounding never changes a pick. Log-softmax is taken in float32; pass
``share_context=False`` to run lm-eval's computation row for row.

Example::

    tasks = load_tasks("data_samples/eval")
    results = evaluate_tasks(loaded.model, loaded.tokenizer, tasks, batch_size=8)
    results["exams_vi"].to_dict()["metrics"]   # {"acc": ..., "acc_norm": ..., "acc_bytes": ...}
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from cptnb.errors import DataError
from cptnb.evaluate.tasks import Task, context, continuations, fewshot_plan, gold_index
from cptnb.models.loading import input_device, inputs_up_to

log = logging.getLogger(__name__)

TOKENIZER_INFINITY = 1000000000000000019884624838656  # transformers' "no limit" model_max_length
DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer says
# Reusing the KV cache moves a log-likelihood by ~1e-6 per token (float32 rounding; < 1e-4 on the sample tasks).
# Items whose best two choices are closer than this are rescored the plain way, so no pick can differ from lm-eval's.
NEAR_TIE = 1e-3


@dataclass
class TaskResult:
    """Scores of one task; :meth:`to_dict` is the shape written to results.json."""

    name: str
    kind: str
    role: str
    num_fewshot: int
    n: int
    metrics: dict[str, float]
    stderr: dict[str, float | None]
    subjects: dict[str, dict] = field(default_factory=dict)
    items: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind, "role": self.role, "num_fewshot": self.num_fewshot, "n": self.n,
            "metrics": dict(self.metrics), "stderr": dict(self.stderr),
            "subjects": {k: dict(v) for k, v in self.subjects.items()}, "items": [dict(i) for i in self.items],
        }


# ---------------------------------------------------------------- tokenization (lm-eval semantics)


def prefix_token_id(tokenizer) -> int:
    """The token an empty context becomes: BOS, else EOS (lm-eval's HFLM.prefix_token_id)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def encode(tokenizer, text: str, add_special_tokens: bool | None = None) -> list[int]:
    """Token ids as lm-eval's ``tok_encode``: the tokenizer's defaults, minus special tokens if ``text`` starts with one."""
    kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
    if add_special_tokens is None and text.startswith(tokenizer.decode(prefix_token_id(tokenizer))):
        kwargs["add_special_tokens"] = False
    return list(tokenizer.encode(text, **kwargs))


def encode_pair(tokenizer, ctx: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) for one request, as lm-eval's ``loglikelihood`` builds them."""
    if ctx == "":
        cont = encode(tokenizer, continuation, add_special_tokens=False)
        prefix = prefix_token_id(tokenizer)
        return ([prefix], cont) if prefix != cont[0] else (cont[:1], cont[1:])
    n_spaces = len(ctx) - len(ctx.rstrip())
    if n_spaces:  # a trailing space belongs to the next word's token
        ctx, continuation = ctx[:-n_spaces], ctx[-n_spaces:] + continuation
    ctx_ids = encode(tokenizer, ctx)
    return ctx_ids, encode(tokenizer, ctx + continuation)[len(ctx_ids):]


def max_length(model, tokenizer) -> int:
    """Longest input lm-eval would give the model: config positions, else tokenizer limit, else 2048."""
    config = getattr(model.config, "text_config", None) or model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(config, attr, None) is not None:
            return int(getattr(config, attr))
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit is not None and limit != TOKENIZER_INFINITY else DEFAULT_MAX_LENGTH


# ---------------------------------------------------------------- the log-likelihood engine


@dataclass
class _Group:
    """One context and the continuations scored after it (an item's choices)."""

    context: list[int]
    continuations: list[list[int]]
    results: list[tuple[float, bool]] = field(default_factory=list)


class _Engine:
    """Batched forward passes; a group's context runs once and its continuations reuse the KV cache."""

    def __init__(self, model, tokenizer, batch_size: int, share_context: bool):
        import torch

        self.torch, self.model, self.batch_size = torch, model, max(1, int(batch_size))
        self.device = input_device(model)
        self.max_length = max_length(model, tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0  # padding sits after real tokens, so its value never matters
        config = getattr(model.config, "text_config", None) or model.config
        window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
        self.window = window if isinstance(window, int) and window > 0 else None
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.keep_logits = "logits_to_keep" in inspect.signature(base.forward).parameters
        self.share_context = share_context

    def _shareable(self, g: _Group) -> bool:
        longest = len(g.context) + max(len(c) for c in g.continuations)
        # Left-truncation and sliding-window caches change per choice: those go through the plain path.
        return self.share_context and longest <= self.max_length + 1 and (self.window is None or longest <= self.window)

    def run(self, groups: list[_Group], progress: tqdm | None = None) -> None:
        order = sorted(groups, key=lambda g: -(len(g.context) + max(len(c) for c in g.continuations)))
        shared = [g for g in order if self._shareable(g)]
        plain = [g for g in order if not self._shareable(g)]
        for start in range(0, len(shared), self.batch_size):
            batch = shared[start:start + self.batch_size]
            self._shared_batch(batch)
            if progress is not None:
                progress.update(len(batch))
        rows = [(g, c) for g in plain for c in g.continuations]
        for start in range(0, len(rows), self.batch_size):
            for (g, _), result in zip(rows[start:start + self.batch_size], self._plain_batch(rows[start:start + self.batch_size])):
                g.results.append(result)
        if progress is not None and plain:
            progress.update(len(plain))

    def _score(self, logprobs, tokens: list[int]) -> tuple[float, bool]:
        """Sum of log-probabilities of ``tokens`` under ``logprobs`` [len(tokens), vocab], and whether all are argmax."""
        target = self.torch.tensor(tokens, device=logprobs.device)
        chosen = logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return float(chosen.sum()), bool((logprobs.argmax(-1) == target).all())

    def _plain_batch(self, rows: list[tuple[_Group, list[int]]]) -> list[tuple[float, bool]]:
        """lm-eval's own computation: context + continuation in one row, cut from the left to max_length + 1."""
        torch = self.torch
        inputs = [(g.context + c)[-(self.max_length + 1):][:-1] for g, c in rows]
        width = max(len(i) for i in inputs)
        ids = torch.full((len(inputs), width), self.pad_id, dtype=torch.long)
        for r, seq in enumerate(inputs):
            ids[r, :len(seq)] = torch.tensor(seq)
        logits = self.model(input_ids=ids.to(self.device)).logits
        return [self._score(torch.log_softmax(logits[r, len(seq) - len(c):len(seq)].float(), dim=-1), c)
                for r, ((_, c), seq) in enumerate(zip(rows, inputs))]

    def _shared_batch(self, batch: list[_Group]) -> None:
        torch = self.torch
        lengths = [len(g.context) for g in batch]
        ids = torch.full((len(batch), max(lengths)), self.pad_id, dtype=torch.long)
        for r, g in enumerate(batch):
            ids[r, :lengths[r]] = torch.tensor(g.context)
        last = torch.tensor([n - 1 for n in lengths])
        kwargs = {"input_ids": ids.to(self.device), "use_cache": True}
        if self.keep_logits:  # only the last context position predicts a continuation token
            keep = torch.unique(last)
            kwargs["logits_to_keep"] = keep.to(self.device)
            last = torch.searchsorted(keep, last)
        out = self.model(**kwargs)
        cache = getattr(out, "past_key_values", None)
        if not hasattr(cache, "reorder_cache"):  # a model without a transformers Cache: score the plain way
            if not getattr(self, "_warned", False):
                log.warning("%s returned no reusable KV cache; scoring each choice with its full context", type(self.model).__name__)
                self._warned = True
            for g in batch:
                g.results.extend(self._plain_batch([(g, c) for c in g.continuations]))
            return
        first = out.logits[torch.arange(len(batch)), last.to(out.logits.device)]
        rows = [(r, c) for r, g in enumerate(batch) for c in g.continuations]
        rest = self._continue(rows, lengths, cache)
        for i, (r, c) in enumerate(rows):
            head_ll, head_greedy = self._score(torch.log_softmax(first[r:r + 1].float(), dim=-1), c[:1])
            tail_ll, tail_greedy = (0.0, True)
            if len(c) > 1:
                tail_ll, tail_greedy = self._score(torch.log_softmax(rest[i, :len(c) - 1].float(), dim=-1), c[1:])
            batch[r].results.append((head_ll + tail_ll, head_greedy and tail_greedy))

    def _continue(self, rows: list[tuple[int, list[int]]], lengths: list[int], cache):
        """Logits for continuation tokens 2..n of every row, each row attending to its group's cached context."""
        torch = self.torch
        width = max(len(c) for _, c in rows) - 1
        if width == 0:
            return None
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        context_width = max(lengths)
        mask = torch.zeros((len(rows), context_width + width), dtype=torch.long)
        for i, (r, c) in enumerate(rows):
            ids[i, :len(c) - 1] = torch.tensor(c[:-1])
            mask[i, :lengths[r]] = 1  # the context's own tokens, not its right padding
        mask[:, context_width:] = 1
        positions = torch.tensor([lengths[r] for r, _ in rows]).unsqueeze(1) + torch.arange(width)
        cache.reorder_cache(torch.tensor([r for r, _ in rows], device=self.device))  # one cache row per choice
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), past_key_values=cache, use_cache=True)
        return out.logits


def loglikelihoods(model, tokenizer, requests: Sequence[tuple[str, list[str]]], batch_size: int = 8,
                   share_context: bool = True, desc: str = "scoring",
                   close_call: Callable[[int, list[tuple[float, bool]]], bool] | None = None,
                   ) -> list[list[tuple[float, bool]]]:
    """(log-likelihood, is_greedy) of each continuation after its context, as lm-eval's ``loglikelihood`` returns.

    ``requests`` is a list of ``(context, [continuation, ...])``; the result has
    the same nesting. ``batch_size`` counts contexts per forward pass.
    ``close_call(index, results)`` marks requests whose outcome could flip on
    float rounding; those are scored again the plain lm-eval way (context +
    continuation per row), so that near-ties are decided as the harness decides them.
    """
    encoded = encode_requests(tokenizer, requests)
    return score_encoded(model, tokenizer, encoded, batch_size, share_context, desc, close_call)


# One request's token ids: [(context ids, [continuation ids, ...]), ...], usually one context per request
# (several only for an empty context, where each choice becomes its own).
EncodedRequest = list[tuple[list[int], list[list[int]]]]


def encode_requests(tokenizer, requests: Sequence[tuple[str, list[str]]]) -> list[EncodedRequest]:
    """Token ids of ``(context, [continuation, ...])`` requests, as :func:`loglikelihoods` scores them.

    Encoding once and scoring with :func:`score_encoded` many times (e.g. at every
    evaluation step of a training run) gives exactly what :func:`loglikelihoods` gives.
    """
    encoded: list[EncodedRequest] = []
    for ctx, conts in requests:
        pairs = [encode_pair(tokenizer, ctx, c) for c in conts]
        for (_ctx_ids, cont_ids), text in zip(pairs, conts):
            if not cont_ids:
                raise DataError(f"continuation {text!r} after {ctx[-40:]!r} has no tokens of its own; check the item")
        if all(p[0] == pairs[0][0] for p in pairs):
            encoded.append([(pairs[0][0], [p[1] for p in pairs])])
        else:  # only possible with an empty context: then each choice is its own group
            encoded.append([(p[0], [p[1]]) for p in pairs])
    return encoded


def score_encoded(model, tokenizer, encoded: Sequence[EncodedRequest], batch_size: int = 8,
                  share_context: bool = True, desc: str = "scoring",
                  close_call: Callable[[int, list[tuple[float, bool]]], bool] | None = None,
                  ) -> list[list[tuple[float, bool]]]:
    """:func:`loglikelihoods` on requests already encoded by :func:`encode_requests`."""
    import torch

    groups = [[_Group(ctx, conts) for ctx, conts in request] for request in encoded]
    engine = _Engine(model, tokenizer, batch_size, share_context)
    flat = [g for gs in groups for g in gs]
    was_training = model.training
    model.eval()
    try:
        # Inputs are cut to max_length from the left, as lm-eval does; a model that also cuts them itself
        # (Unsloth's max_seq_length) would see few-shot contexts cut from the right instead.
        with torch.inference_mode(), inputs_up_to(model, engine.max_length + 1), \
                tqdm(total=len(flat), desc=desc, leave=False) as bar:
            engine.run(flat, bar)
        if share_context and close_call is not None:
            close = [g for i, gs in enumerate(groups) if close_call(i, [r for g in gs for r in g.results]) for g in gs]
            if close:
                log.info("%s: %d near-tie item(s) scored again without the shared KV cache", desc, len(close))
                for g in close:
                    g.results.clear()
                engine.share_context = False
                with torch.inference_mode(), inputs_up_to(model, engine.max_length + 1):
                    engine.run(close)
    finally:
        model.train(was_training)
    return [[r for g in gs for r in g.results] for gs in groups]


# ---------------------------------------------------------------- metrics (lm-eval's aggregations)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def mean_stderr(values: Sequence[float]) -> float | None:
    """Sample standard deviation / sqrt(n); None for fewer than 2 values (lm-eval says N/A)."""
    if len(values) < 2:
        return None
    mu = mean(values)
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (len(values) - 1)) / math.sqrt(len(values))


def pooled_stderr(stderrs: Sequence[float], sizes: Sequence[int]) -> float:
    """Standard error of a size-weighted mean of sub-tasks (lm-eval's ``pooled_sample_stderr``)."""
    variance = sum((n - 1) * se**2 * n for se, n in zip(stderrs, sizes)) / (sum(sizes) - len(sizes))
    return math.sqrt(variance / sum(sizes))


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # the first of equal maxima, like np.argmax


def _near_tie(item: dict, scores: list[tuple[float, bool]]) -> bool:
    """Whether the top two choices are within NEAR_TIE under acc, acc_norm or acc_bytes scoring."""
    lls = [ll for ll, _ in scores]
    texts = item["choices"]["text"]
    for values in (lls, [ll / len(t) for ll, t in zip(lls, texts)], [ll / len(t.encode("utf-8")) for ll, t in zip(lls, texts)]):
        top = sorted(values, reverse=True)
        if top[0] - top[1] < NEAR_TIE:
            return True
    return False


def _mc_item_result(item: dict, scores: list[tuple[float, bool]]) -> dict:
    lls = [ll for ll, _ in scores]
    texts = item["choices"]["text"]
    gold = gold_index(item)
    return {
        "id": item["id"], "subject": item["metadata"]["subject"],
        "acc": int(_argmax(lls) == gold),
        "acc_norm": int(_argmax([ll / len(t) for ll, t in zip(lls, texts)]) == gold),
        "acc_bytes": int(_argmax([ll / len(t.encode("utf-8")) for ll, t in zip(lls, texts)]) == gold),
        "loglikelihoods": lls, "gold": gold,
    }


def _summary(items: list[dict], kind: str) -> tuple[dict, dict]:
    if kind == "lambada":
        accs = [i["acc"] for i in items]
        return ({"acc": mean(accs), "perplexity": math.exp(-mean([i["loglikelihood"] for i in items]))},
                {"acc": mean_stderr(accs)})
    names = ("acc", "acc_norm", "acc_bytes")
    return {m: mean([i[m] for i in items]) for m in names}, {m: mean_stderr([i[m] for i in items]) for m in names}


@dataclass
class PreparedTask:
    """A task's scored items with their few-shot prompts built and tokenized once (see :func:`prepare_task`)."""

    task: Task
    plan: list[tuple[dict, list[dict]]]  # (item, its few-shot examples), as fewshot_plan draws them
    encoded: list[EncodedRequest]  # each item's context and continuations as token ids

    @property
    def n(self) -> int:
        return len(self.plan)


def prepare_task(tokenizer, task: Task, limit: int | None = None) -> PreparedTask:
    """Draw the few-shot examples, build every prompt and tokenize it, once.

    ``limit`` keeps the first N items of each (sub-)task, like lm-eval's ``limit``.
    :func:`score_prepared` then scores the same items on any model with this tokenizer.
    """
    plan = fewshot_plan(task, limit)
    requests = [(context(task, item, shots), continuations(task, item)) for item, shots in plan]
    return PreparedTask(task, plan, encode_requests(tokenizer, requests))


def evaluate_task(model, tokenizer, task: Task, batch_size: int = 8, limit: int | None = None,
                  share_context: bool = True) -> TaskResult:
    """Score one task on ``model`` (plain, PEFT or merged; on the device of its parameters).

    ``limit`` keeps the first N items of each (sub-)task, like lm-eval's ``limit``.
    """
    return score_prepared(model, tokenizer, prepare_task(tokenizer, task, limit), batch_size, share_context)


def score_prepared(model, tokenizer, prepared: PreparedTask, batch_size: int = 8, share_context: bool = True,
                   quiet: bool = False) -> TaskResult:
    """Score a :class:`PreparedTask` on ``model``: the same result as :func:`evaluate_task` on its task and limit.

    ``quiet`` logs the scores at debug level instead of info (for scores taken during training).
    """
    task, plan = prepared.task, prepared.plan
    close_call = None if task.kind == "lambada" else (lambda i, scores: _near_tie(plan[i][0], scores))
    scores = score_encoded(model, tokenizer, prepared.encoded, batch_size, share_context, task.name, close_call)
    if task.kind == "lambada":
        items = [{"id": item["id"], "acc": int(s[0][1]), "loglikelihood": s[0][0], "target": item["target"].strip()}
                 for (item, _), s in zip(plan, scores)]
    else:
        items = [_mc_item_result(item, s) for (item, _), s in zip(plan, scores)]
    metrics, stderr = _summary(items, task.kind)
    subjects: dict[str, dict] = {}
    if task.split_by_subject:
        for subject in task.subjects:
            chosen = [i for i in items if i["subject"] == subject]
            if chosen:
                sub_metrics, sub_stderr = _summary(chosen, task.kind)
                subjects[subject] = {"n": len(chosen), "metrics": sub_metrics, "stderr": sub_stderr}
        sizes = [s["n"] for s in subjects.values()]
        for m in metrics:  # lm-eval's group score: size-weighted mean of the subjects, pooled standard error
            metrics[m] = sum(s["metrics"][m] * s["n"] for s in subjects.values()) / sum(sizes)
            errs = [s["stderr"][m] for s in subjects.values()]
            stderr[m] = pooled_stderr(errs, sizes) if None not in errs else None
    result = TaskResult(task.name, task.kind, task.role, task.num_fewshot, len(items), metrics, stderr, subjects, items)
    log.log(logging.DEBUG if quiet else logging.INFO, "%s: n=%d %s", task.name, len(items),
            ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return result


def evaluate_tasks(model, tokenizer, tasks: Sequence[Task], batch_size: int = 8, limit: int | None = None,
                   share_context: bool = True) -> dict[str, TaskResult]:
    """Score several tasks; returns ``{task name: TaskResult}`` in the order given."""
    return {t.name: evaluate_task(model, tokenizer, t, batch_size, limit, share_context) for t in tasks}

