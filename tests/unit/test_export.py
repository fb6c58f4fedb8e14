"""Export: adapter + merged safetensors + model card, with the reload check (tiny-llama, CPU)."""

import hashlib
import json
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from safetensors import safe_open

from cptnb.config import Recipe
from cptnb.data.sources import file_manifest
from cptnb.errors import ConfigError, DataError, ExportError, ModelNotAvailableError
from cptnb.export import ExportConfig, export, export_adapter, export_run
from cptnb.export.merge import compare_logits

TEXT = "Hà Nội là thủ đô của Việt Nam."
SHA = "ab" * 32


def _perturb(model, seed=0, embeddings=0.0):
    """Make a fresh adapter non-trivial: LoRA B starts at zero, so the adapter would change nothing."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
            elif embeddings and "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=gen) * embeddings)


def _report():
    return {
        "sources": {
            "/data/vi/news.jsonl": {
                "docs_in": 12,
                "docs_kept": 9,
                "chars_in": 900,
                "chars_kept": 700,
                "dropped": {"near_duplicate": 2, "contaminated": 1},
            },
            "/data/en/general.jsonl": {"docs_in": 7, "docs_kept": 7, "chars_in": 500, "chars_kept": 500, "dropped": {}},
        },
        "total": {"docs_in": 19, "docs_kept": 16, "dropped": {"near_duplicate": 2, "contaminated": 1}},
        "tokens": {
            "blocks": 31,
            "block_size": 64,
            "tokens_packed": 1984,
            "replay_share_achieved": 0.1,
            "replay_share_target": 0.1,
        },
        "decontamination": {"files_hit": {"/data/eval/exams_vi/test.jsonl": 1}},
        "source_files": [
            {"path": "/data/vi/news.jsonl", "bytes": 1234, "sha256": SHA, "role": "domain"},
            {"path": "/data/en/general.jsonl", "bytes": 567, "sha256": "cd" * 32, "role": "replay"},
        ],
    }


def _make_run(root, loaded, method="lora", train_embeddings=False):
    """A run folder as run_recipe leaves it: recipe.yaml, adapter/ or model/, data/report.json, metrics.jsonl."""
    root.mkdir(parents=True, exist_ok=True)
    recipe = Recipe().replace(
        model={"name": "tiny-llama", "method": method, "train_embeddings": train_embeddings, "lora_rank": 16,
               "max_seq_len_tokens": 64},
        data={"eval_tasks": ["/data/eval"]},
        train={"output_dir": str(root), "max_steps": 2},
    )
    recipe.to_yaml(root / "recipe.yaml")
    final = root / ("model" if method == "full" else "adapter")
    loaded.model.save_pretrained(final)
    loaded.tokenizer.save_pretrained(final)
    (root / "data").mkdir()
    (root / "data" / "report.json").write_text(json.dumps(_report()))
    (root / "metrics.jsonl").write_text('{"step": 1, "train_loss": 7.0}\n{"step": 2, "train_loss": 6.5}\n')
    return root


@pytest.fixture(scope="module")
def lora_run(tiny, tmp_path_factory):
    loaded = tiny(method="lora")
    _perturb(loaded.model)
    run = _make_run(tmp_path_factory.mktemp("run"), loaded)
    (run / "comparison.md").write_text(
        "# Before / after\n\n| task | base | adapted |\n| --- | --- | --- |\n| exams_vi | 0.2912 | 0.3318 |\n"
    )
    (run / "results.json").write_text(json.dumps({"lambada_vi": {"acc": 0.3478, "perplexity": 41.5}}))
    return run


@pytest.fixture(scope="module")
def fp32_export(lora_run, tmp_path_factory):
    return export_run(lora_run, tmp_path_factory.mktemp("out") / "export", dtype="fp32")


def _reference_logits(base_dir, adapter_dir, ids):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
        adapted = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        return base_logits, adapted(ids).logits


@pytest.mark.slow  # reloads the export in a fresh interpreter
def test_fp32_merged_model_loads_without_peft_and_matches_the_adapter_model(fp32_export, lora_run, tmp_path):
    merged = fp32_export.merged_dir
    assert not (merged / "adapter_config.json").exists()
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in merged.iterdir()
    }
    # A fresh interpreter in which peft and cptnb cannot be imported: plain transformers only.
    script = textwrap.dedent(f"""
        import sys
        sys.modules["peft"] = None
        sys.modules["cptnb"] = None
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(merged)!r})
        model = AutoModelForCausalLM.from_pretrained({str(merged)!r}).eval()
        ids = tok({TEXT!r}, return_tensors="pt").input_ids
        with torch.no_grad():
            torch.save({{"ids": ids, "logits": model(ids).logits}}, {str(tmp_path / "out.pt")!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120)
    saved = torch.load(tmp_path / "out.pt")
    record = json.loads(fp32_export.export_json.read_text())
    base_logits, adapted_logits = _reference_logits(record["base_source"], lora_run / "adapter", saved["ids"])
    assert (saved["logits"] - adapted_logits).abs().max() < 1e-4
    assert (saved["logits"] - base_logits).abs().max() > 1e-2  # the adapter really changed the model
    check = record["check"]
    assert check["passed"] and check["max_abs_diff"] < 1e-4 and check["adapter_effect_max_abs"] > 1e-2


def _tensor_dtypes(folder):
    dtypes = []
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as fh:
            dtypes += [fh.get_slice(k).get_dtype() for k in fh.keys()]  # noqa: SIM118
    return dtypes


def test_export_copies_adapter_and_recipe_and_records_the_merged_files(fp32_export, lora_run):
    out = fp32_export.out_dir
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (out / "adapter" / name).read_bytes() == (lora_run / "adapter" / name).read_bytes()
    assert (out / "recipe.yaml").read_bytes() == (lora_run / "recipe.yaml").read_bytes()
    record = json.loads(fp32_export.export_json.read_text())["merged"]
    weights = fp32_export.merged_dir / "model.safetensors"
    assert record["files"][0]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert record["stored_dtypes"] == {"F32": len(_tensor_dtypes(fp32_export.merged_dir))}


def test_card_holds_front_matter_data_counts_hashes_decontamination_and_eval_table(fp32_export):
    card = fp32_export.card.read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["language"] == ["vi"] and front["library_name"] == "transformers"
    assert front["license"] == "TODO" and "cptnb" in front["tags"] and "lora" in front["tags"]
    assert "base_model" not in front  # tiny-llama has no hub id; a wrong one would mislead
    assert "| news.jsonl | domain | 12 | 9 | near_duplicate: 2, contaminated: 1 |" in card
    assert "| general.jsonl | replay | 7 | 7 | none |" in card
    assert f"`{SHA}`" in card and "recorded when the corpus was prepared" in card
    assert "were removed: 1 document(s)" in card and "| /data/eval/exams_vi/test.jsonl | 1 |" in card
    assert "| exams_vi | 0.2912 | 0.3318 |" in card  # comparison.md embedded
    assert "| lambada_vi | 0.3478 | 41.5000 |" in card  # results.json rendered as a table
    assert (
        "LoRA rank 16, alpha 32" in card and "2 optimizer steps of 4 x 1 blocks of 64 tokens = about 512 tokens" in card
    )
    check = json.loads(fp32_export.export_json.read_text())["check"]
    assert f"max |logit difference| {check['max_abs_diff']:.4g}" in card and "Passed." in card
    assert "as it was saved, bit-identical" in card
    assert "not instruction-tuned" in card


def test_bf16_export_is_bf16_on_disk_and_passes_its_check(lora_run, fp32_export, tmp_path):
    result = export_run(lora_run, tmp_path / "bf16", dtype="bfloat16", eval_files=[str(lora_run / "comparison.md")])
    dtypes = _tensor_dtypes(result.merged_dir)
    assert dtypes and set(dtypes) == {"BF16"}
    assert json.loads((result.merged_dir / "config.json").read_text())["dtype"] == "bfloat16"
    assert result.check.passed and result.check.dtype == "bf16"
    # Rounding to bf16 shows in the logits, unlike the fp32 export, whose file reads back exactly as saved.
    assert result.check.max_abs_diff > fp32_export.check.max_abs_diff
    assert fp32_export.check.saved_max_abs_diff == 0.0 and result.check.saved_max_abs_diff is None
    assert "lambada_vi" not in result.card.read_text()  # only the eval file given was embedded


def test_a_file_that_does_not_read_back_as_saved_fails_the_check(lora_run, tmp_path, monkeypatch):
    import cptnb.export.merge as merge

    save = merge._save_merged

    def save_then_damage(model, tokenizer, out, tying):
        save(model, tokenizer, out, tying)
        weights = out / "model.safetensors"
        from safetensors.torch import load_file, save_file

        tensors = load_file(weights)
        name = next(k for k in tensors if k.endswith("layers.0.mlp.down_proj.weight"))
        tensors[name] = tensors[name] * 1.01  # one matrix off by 1%, as a save that lost precision would be
        save_file(tensors, weights, metadata={"format": "pt"})

    monkeypatch.setattr(merge, "_save_merged", save_then_damage)
    with pytest.raises(ExportError, match="differs from the model that was saved") as err:
        export_run(lora_run, tmp_path / "out", dtype="fp32")
    assert "a faithful file gives 0" in str(err.value)
    check = json.loads((tmp_path / "out" / "export.json").read_text())["check"]
    assert check["saved_max_abs_diff"] > 1e-5 and not check["passed"]


def test_full_run_exports_a_merged_model_and_no_adapter(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    loaded = tiny(method="full")
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    run = _make_run(tmp_path / "run", loaded, method="full")
    result = export_run(run, tmp_path / "out", dtype="fp32")
    assert result.adapter_dir is None and not (tmp_path / "out" / "adapter").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(result.merged_dir).eval()
    ids = loaded.tokenizer(TEXT, return_tensors="pt").input_ids
    loaded.model.eval()
    with torch.no_grad():
        assert (reloaded(ids).logits - loaded.model(ids).logits).abs().max() < 1e-4
    card = result.card.read_text()
    assert "full fine-tuning of every weight" in card and "LoRA rank" not in card
    assert json.loads(result.export_json.read_text())["check"]["adapter_effect_max_abs"] is None


def test_trained_tied_embeddings_stay_tied_and_are_saved_as_trained(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    loaded = tiny(method="lora", train_embeddings=True)
    _perturb(loaded.model, seed=1, embeddings=0.1)
    trained_embed = loaded.model.get_input_embeddings().weight.detach().clone()
    run = _make_run(tmp_path / "run", loaded, train_embeddings=True)
    result = export_run(run, tmp_path / "out", dtype="fp32")
    assert result.tied_embeddings == "tied" and result.check.passed
    with safe_open(str(result.merged_dir / "model.safetensors"), framework="pt") as fh:
        assert "lm_head.weight" not in fh.keys()  # noqa: SIM118 (tied: stored once)
        assert torch.equal(fh.get_tensor("model.embed_tokens.weight"), trained_embed)
    reloaded = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    assert torch.equal(reloaded.lm_head.weight, trained_embed)
    assert "trained in full: embed_tokens (tied to lm_head)" in result.card.read_text()


@pytest.mark.filterwarnings("ignore:Input and output embeddings are no longer tied")
@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")
def test_embeddings_trained_apart_are_both_kept(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from cptnb.config import ModelConfig
    from cptnb.models.loading import resolve_source

    base = AutoModelForCausalLM.from_pretrained(resolve_source(ModelConfig(name="tiny-llama")))
    config = LoraConfig(
        r=4, target_modules=["q_proj"], modules_to_save=["embed_tokens", "lm_head"], ensure_weight_tying=False
    )
    # PEFT warns that tied weights are trained apart: the very case under test.
    with pytest.warns(UserWarning, match="ensure_weight_tying"):
        model = get_peft_model(base, config)
    _perturb(model, seed=2, embeddings=0.1)
    model.save_pretrained(tmp_path / "adapter")
    result = export_adapter(tmp_path / "adapter", "tiny-llama", tmp_path / "out", dtype="fp32")
    assert result.check.passed and result.tied_embeddings in ("separate", "untied")
    reloaded = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    assert not torch.equal(reloaded.lm_head.weight, reloaded.model.embed_tokens.weight)


def test_a_bare_adapter_exports_without_a_run_folder(lora_run, tmp_path):
    result = export_adapter(lora_run / "adapter", "tiny-llama", tmp_path / "out", merge=False)
    assert result.merged_dir is None and result.check is None
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    card = result.card.read_text()
    assert yaml.safe_load(card.split("---\n")[1])["library_name"] == "peft"
    assert "No corpus report was found" in card and "No evaluation was run" in card
    assert not (tmp_path / "out" / "recipe.yaml").exists()


def test_a_checkpoint_exports_with_its_run_for_the_card(lora_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(lora_run, run, ignore=shutil.ignore_patterns("adapter"))  # unfinished: no final adapter/
    checkpoint = run / "checkpoint-3"
    shutil.copytree(lora_run / "adapter", checkpoint)
    (checkpoint / "optimizer.pt").write_bytes(b"state")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    with pytest.raises(ExportError, match="adapter_dir=.*checkpoint-3"):
        export_run(run, tmp_path / "out", merge=False)
    result = export_run(run, tmp_path / "out", merge=False, adapter_dir=str(checkpoint))
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert not (result.adapter_dir / "optimizer.pt").exists()
    card = result.card.read_text()
    assert "3 optimizer steps" in card and "| news.jsonl | domain | 12 | 9 |" in card


def test_check_failure_raises_and_is_recorded(lora_run, tmp_path, monkeypatch):
    import cptnb.export.merge

    monkeypatch.setitem(cptnb.export.merge.CHECK_TOLERANCE, "bf16", 1e-9)  # bf16 rounding is far above this
    with pytest.raises(ExportError, match="reload check failed.*dtype='fp32'"):
        export_run(lora_run, tmp_path / "out", dtype="bf16")
    assert json.loads((tmp_path / "out" / "export.json").read_text())["check"]["passed"] is False


def test_compare_logits_scales_the_tolerance_with_the_logits():
    ref = [torch.tensor([[[10.0, -20.0, 0.0]]])]
    close, far = [ref[0] + 0.1], [ref[0] + torch.tensor([0.0, 0.0, 31.0])]
    assert compare_logits(ref, close, "bf16").passed  # 0.1 <= 3e-2 * 20
    assert not compare_logits(ref, close, "fp32").passed
    bad = compare_logits(ref, far, "bf16")
    assert not bad.passed and bad.top1_agreement == 0.0 and bad.tolerance == pytest.approx(0.6)


def test_bad_inputs_say_what_to_do(lora_run, tmp_path):
    with pytest.raises(ConfigError, match="dtype must be one of bf16, fp16, fp32; got 'fp8'"):
        ExportConfig(run_dir=str(lora_run), dtype="fp8")
    with pytest.raises(ConfigError, match="set run_dir .* or adapter_dir"):
        ExportConfig()
    with pytest.raises(ExportError, match="does not exist"):
        export_run(tmp_path / "nowhere", tmp_path / "out")
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(ExportError, match=r"neither adapter/ .* nor model/.*checkpoint-2"):
        export_run(unfinished, tmp_path / "out")
    with pytest.raises(ExportError, match="holds no adapter_config.json"):
        export_adapter(unfinished, "tiny-llama", tmp_path / "out")
    # An adapter whose recorded base is gone, exported without naming the base.
    moved = tmp_path / "moved_adapter"
    moved.mkdir()
    config = json.loads((lora_run / "adapter" / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "/gone/tiny-llama"}))
    with pytest.raises(ModelNotAvailableError, match="does not exist.*base_model="):
        export(ExportConfig(adapter_dir=str(moved), out_dir=str(tmp_path / "out")))
    with pytest.raises(ExportError, match="evaluation file.*not found: .*missing.md"):
        export_run(lora_run, tmp_path / "out", eval_files=[str(tmp_path / "missing.md")])
    with pytest.raises(ExportError, match="is the run or adapter folder itself"):
        export_run(lora_run, lora_run, merge=False)


def test_an_earlier_export_is_replaced_only_when_asked(lora_run, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    export_run(lora_run, tmp_path / "out", merge=False)
    with pytest.raises(ExportError, match="already holds .*overwrite=True"):
        export_run(lora_run, tmp_path / "out", merge=False)
    export_run(lora_run, tmp_path / "out", merge=False, overwrite=True)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"  # never touches files it did not write


def test_file_manifest_hashes_files_of_folders_and_globs(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.jsonl").write_bytes(b'{"text": "xin chao"}\n')
    (tmp_path / "corpus" / "b.txt").write_bytes(b"hello\n\nworld\n")
    (tmp_path / "corpus" / "skip.bin").write_bytes(b"\x00")
    entries = file_manifest([tmp_path / "corpus"], role="domain")
    assert [e["path"].rsplit("/", 1)[-1] for e in entries] == ["a.jsonl", "b.txt"]
    assert entries[1] == {
        "path": str(tmp_path / "corpus" / "b.txt"),
        "bytes": 13,
        "sha256": hashlib.sha256(b"hello\n\nworld\n").hexdigest(),
        "role": "domain",
    }
    assert [e["path"] for e in file_manifest([str(tmp_path / "corpus" / "*.txt")])] == [
        str(tmp_path / "corpus" / "b.txt")
    ]
    with pytest.raises(DataError, match="no such file"):
        file_manifest([tmp_path / "absent.jsonl"])


def test_corpus_markdown_hashes_the_recipe_files_when_the_report_has_none(tmp_path):
    from cptnb.config import DataConfig
    from cptnb.export.card import corpus_markdown, decontamination_markdown

    corpus = tmp_path / "vi.jsonl"
    corpus.write_bytes(b'{"text": "Xin ch\\u00e0o"}\n')
    data = DataConfig(sources=[str(corpus)], heldout_domain=[str(tmp_path / "gone.jsonl")], heldout_general=[])
    report = {"sources": {str(corpus): {"docs_in": 3, "docs_kept": 2, "dropped": {"too_short": 1}}}, "total": {}}
    text = "\n".join(corpus_markdown(report, data))
    assert "| vi.jsonl | domain | 3 | 2 | too_short: 1 |" in text
    assert f"`{hashlib.sha256(corpus.read_bytes()).hexdigest()}`" in text and "computed at export time" in text
    assert f"| {tmp_path / 'gone.jsonl'} | heldout_domain |  | `not found` |" in text
    assert "Not run" in "\n".join(decontamination_markdown(report, data))  # no eval_tasks were given


def test_export_result_lists_its_files_and_sizes_per_dtype(fp32_export, lora_run, tmp_path):
    from cptnb.export.locate import trained_model_in

    result = fp32_export
    files = dict(result.files())
    assert "merged/model.safetensors" in files and "README.md" in files
    assert files["merged/model.safetensors"] == (result.merged_dir / "model.safetensors").stat().st_size
    sizes = result.sizes()
    assert sizes["merged"] == sum(n for name, n in files.items() if name.startswith("merged/"))
    assert sizes["adapter"] == sum(n for name, n in files.items() if name.startswith("adapter/"))
    weights = files["merged/model.safetensors"]
    assert result.dtype == "fp32" and result.merged_bytes_in("fp32") == sizes["merged"]
    # bf16 and fp16 store 2 bytes per weight where fp32 stores 4; tokenizer and config files stay as they are.
    assert result.merged_bytes_in("bf16") == result.merged_bytes_in("float16")
    assert abs(result.merged_bytes_in("bf16") - (sizes["merged"] - weights / 2)) <= 1
    with pytest.raises(ConfigError, match="dtype must be one of bf16, fp16, fp32"):
        result.merged_bytes_in("int4")
    assert trained_model_in(lora_run) == lora_run / "adapter" and trained_model_in(tmp_path) is None
