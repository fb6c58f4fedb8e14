import math

import pytest
import torch

from cptnb.evaluate.perplexity import score_texts, windows


@pytest.mark.parametrize("n,window,stride", [(10, 4, 2), (10, 4, 4), (3, 8, 4), (17, 5, 3), (2, 2, 1)])
def test_windows_score_every_position_exactly_once(n, window, stride):
    scored = []
    for start, end, first in windows(n, window, stride):
        assert end - start <= window and start < first <= end
        scored += list(range(first, end))
    assert scored == list(range(1, n))


def _manual_nll(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    logprobs = torch.log_softmax(logits, -1)
    return -float(logprobs.gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).sum())


def test_score_matches_a_hand_computed_log_likelihood(tiny):
    loaded = tiny(method="full")
    tok = loaded.tokenizer
    texts = ["Con mèo nằm ngủ trên mái nhà.", "Sông Hồng chảy qua Hà Nội và nhiều tỉnh phía Bắc."]
    nll = 0.0
    n_tokens = 0
    for t in texts:
        ids = [tok.eos_token_id] + tok(t, add_special_tokens=False)["input_ids"]
        nll += _manual_nll(loaded.model, ids)
        n_tokens += len(ids) - 1
    score = score_texts(loaded.model, tok, texts, window_tokens=512, stride_tokens=256, batch_size=2)
    n_bytes = sum(len(t.encode()) for t in texts)
    assert score.tokens == n_tokens and score.bytes == n_bytes and score.docs == 2
    assert score.loss == pytest.approx(nll / n_tokens, rel=1e-5)
    assert score.bits_per_byte == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-5)
    assert score.perplexity == pytest.approx(math.exp(nll / n_tokens), rel=1e-5)


def _sliding_window_nll(model, ids, window, stride):
    """The sliding-window recipe of transformers' perplexity guide, one window at a time, without padding."""
    nll, scored, prev_end = 0.0, 0, 1  # position 0 (the EOS before the document) is context only
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        with torch.no_grad():
            logits = model(torch.tensor([ids[begin:end]])).logits[0].float()
        logprobs = torch.log_softmax(logits, -1)
        for t in range(prev_end, end):  # token t is predicted by the logits at t - 1
            nll -= float(logprobs[t - 1 - begin, ids[t]])
            scored += 1
        prev_end = end
        if end == len(ids):
            break
    return nll, scored


@pytest.mark.parametrize("window,stride", [(32, 16), (24, 8)])
def test_sliding_window_loss_equals_a_hand_computed_one_over_several_windows(tiny, window, stride):
    loaded = tiny(method="full")
    tok = loaded.tokenizer
    text = " ".join(["Trời hôm nay trong xanh, gió nhẹ thổi qua cánh đồng lúa."] * 4 + ["Sông Hồng chảy qua Hà Nội."] * 3)
    ids = [tok.eos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 3 * window  # several windows, the last one shorter than the others
    nll, scored = _sliding_window_nll(loaded.model, ids, window, stride)
    slid = score_texts(loaded.model, tok, [text], window_tokens=window, stride_tokens=stride, batch_size=3)
    assert slid.tokens == scored == len(ids) - 1
    assert slid.loss == pytest.approx(nll / scored, rel=1e-5)
    # The oracle is sensitive to the context each token gets: the whole document in one window scores differently.
    full, _ = _sliding_window_nll(loaded.model, ids, len(ids), len(ids))
    assert abs(full - nll) / scored > 1e-3


def test_batching_does_not_change_the_score(tiny):
    loaded = tiny(method="full")
    texts = ["Một.", "Hai câu ngắn ở đây.", "Ba câu dài hơn một chút để có độ dài khác nhau khi đệm."]
    one = score_texts(loaded.model, loaded.tokenizer, texts, batch_size=1)
    three = score_texts(loaded.model, loaded.tokenizer, texts, batch_size=3)
    assert three.loss == pytest.approx(one.loss, rel=1e-5)
