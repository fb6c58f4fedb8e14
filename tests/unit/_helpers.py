"""Small pieces several test modules share (imported as ``_helpers``, like ``_data_reference``)."""

from __future__ import annotations

import torch


class EventCollector(list):
    """A training logger (``train()``'s ``log``/``close`` interface) that keeps every event it is given."""

    def log(self, event: dict) -> None:
        self.append(event)

    def close(self) -> None:
        pass


def perturb_lora(loaded, seed: int):
    """Move a fresh LoRA model's adapter and trained embeddings (a fresh adapter's B is zero: no change at all).

    Returns ``loaded.model`` in eval mode; ``loaded`` comes from ``tiny(method="lora", train_embeddings=True)``.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
            elif "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return loaded.model.eval()
