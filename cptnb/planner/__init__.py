"""Plan a run before training: tokens, steps, time, and memory per device for LoRA, QLoRA and full.

:func:`plan` is shown in notebook 02 before training and printed by the CLI.
Parameter counts come from the loaded model, or from the model's config alone:
the model is built on PyTorch's ``meta`` device, so planning an 8B model costs
no memory and no download (a local folder, an alias, or a hub id already in the
cache). Memory is estimated per component, because each answers to a different
knob:

- weights: parameters x dtype bytes (QLoRA: 4-bit NF4 for linear layers, plus
  their quantization constants);
- fp32 master copy: DeepSpeed ZeRO keeps one of the trainable weights;
- gradients: trainable parameters only (plus DDP's bucket copy of them);
- optimizer state: states per trainable parameter x bytes (:data:`OPTIMIZER_STATES`);
- activations: what autograd saves per decoder layer (:func:`activation_bytes`);
- logits: three fp32 batch x seq x vocab tensors at the loss (often the largest
  item for models with large vocabularies), or one fp32 tile when TRL's chunked
  LM-head loss runs (CUDA with Triton, what :mod:`cptnb.train` uses there);
- overhead (CUDA context / interpreter) and a fragmentation margin.

Example::

    recipe = Recipe.from_yaml("data_samples/recipes/llama32_1b_vi_full_8gpu.yaml")
    print(plan(recipe, dataset=1_367_188, device="cuda", num_devices=8, available_memory_bytes=80 * 2**30))
"""

from cptnb.planner.memory import (
    OPTIMIZER_STATES,
    Hardware,
    MemoryEstimate,
    activation_bytes,
    estimate_memory,
    optimizer_states,
    resolve_hardware,
    strategy_for,
)
from cptnb.planner.plan import Plan, available_memory, plan, steps_for
from cptnb.planner.shape import ModelShape, model_shape, trainable_params
from cptnb.planner.timing import StepTiming, measure_step_seconds

__all__ = [
    "OPTIMIZER_STATES", "Hardware", "MemoryEstimate", "ModelShape", "Plan", "StepTiming", "activation_bytes",
    "available_memory", "estimate_memory", "measure_step_seconds", "model_shape", "optimizer_states", "plan",
    "resolve_hardware", "steps_for", "strategy_for", "trainable_params",
]
