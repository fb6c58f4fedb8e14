"""The model stage: load a base model ready for LoRA, QLoRA or full CPT, and the offline model zoo.

:mod:`cptnb.models.loading` chooses the backend (Unsloth on a GPU, transformers +
PEFT otherwise) and checks that what the recipe says is trainable really is;
:mod:`cptnb.models.zoo` builds the models that need no hub (``smollm2-135m``,
``tiny-llama``) into the cache.
"""

from cptnb.models.loading import LoadedModel, load_for_eval, load_model, load_tokenizer

__all__ = ["LoadedModel", "load_for_eval", "load_model", "load_tokenizer"]
