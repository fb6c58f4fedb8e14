"""Greedy generation for side-by-side spot checks (deterministic, so base vs adapted is fair)."""

from __future__ import annotations


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 40, repetition_penalty: float = 1.15) -> list[str]:
    """Continue each prompt greedily; returns only the new text.

    A mild repetition penalty keeps small models from looping, which would hide
    any difference between base and adapted model.
    """
    import torch

    from cptnb.models.loading import input_device

    device = input_device(model)  # not the first parameter: Unsloth may offload the frozen original embedding
    was_training = model.training
    model.eval()
    outputs = []
    with torch.inference_mode():
        for prompt in prompts:
            enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(device)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                repetition_penalty=repetition_penalty,
                pad_token_id=tokenizer.pad_token_id,
            )
            # No WordPiece-style clean-up: it would drop spaces before punctuation the model did generate.
            outputs.append(tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True,
                                            clean_up_tokenization_spaces=False).strip())
    model.train(was_training)
    return outputs
