"""User errors: each message names the file or the field, and says what to do about it.

Every test here feeds the kit a mistake a person makes (a missing file, a bad
value, a corpus without its text column, a base model the adapter was not
trained on) and asserts both halves of the message: where, and the fix.
"""

import pytest

from cptnb.cli import main
from cptnb.config import DataConfig, EvalConfig, ModelConfig, Recipe, TrainConfig
from cptnb.errors import ConfigError, DataError, ExportError

# ---------------------------------------------------------------- recipe files


def test_a_missing_recipe_file_is_named_with_the_fix(tmp_path):
    path = tmp_path / "nowhere" / "recipe.yaml"
    with pytest.raises(ConfigError) as err:
        Recipe.from_yaml(path)
    assert str(path) in str(err.value) and "pass the path of a recipe YAML" in str(err.value)


def test_invalid_yaml_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("train:\n  max_steps: 10\n  learning_rate: [1e-4\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        Recipe.from_yaml(path)
    message = str(err.value)
    assert str(path) in message and "not valid YAML" in message
    assert "line 3" in message or "line 4" in message  # PyYAML's own pointer to where the syntax broke


@pytest.mark.parametrize("text", ["- data\n- model\n", "just a sentence\n", "42\n"])
def test_a_recipe_that_is_not_a_mapping_says_what_the_top_level_holds(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        Recipe.from_yaml(path)
    assert str(path) in str(err.value)
    assert "top level must be a mapping with data/model/train/eval sections" in str(err.value)


def test_a_bad_value_in_a_recipe_file_names_the_file_section_and_field(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("train:\n  zero_stage: 5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        Recipe.from_yaml(path)
    assert str(path) in str(err.value)
    assert err.value.problems == ["train.zero_stage must be 0, 1, 2 or 3, got 5"]


# ---------------------------------------------------------------- each validated config rule
# (section, field, bad value, other fields, what the message must say besides the field: the allowed values or range)
RULES = [
    (TrainConfig, "max_steps", 0, {}, "-1 to train by epochs"),
    (TrainConfig, "max_steps", -5, {}, "-1 to train by epochs"),
    (TrainConfig, "zero_stage", 4, {}, "0, 1, 2 or 3"),
    (TrainConfig, "distributed_backend", "horovod", {}, "ddp, fsdp, deepspeed"),
    (TrainConfig, "precision", "fp8", {}, "bf16"),
    (DataConfig, "heldout_share", 0.5, {}, "[0, 0.5)"),
    (DataConfig, "heldout_share", -0.1, {}, "[0, 0.5)"),
    (DataConfig, "replay_share", 0.95, {"replay_sources": ["general_en/"]}, "[0, 0.9]"),
    (DataConfig, "replay_share", -0.1, {"replay_sources": ["general_en/"]}, "[0, 0.9]"),
    (DataConfig, "sources", [], {}, "non-empty list of paths"),
    (DataConfig, "on_error", "ignore", {}, "raise, skip"),
    (DataConfig, "txt_mode", "lines", {}, "blocks, file"),
    (ModelConfig, "backend", "vllm", {}, "auto, unsloth, transformers"),
    (ModelConfig, "dtype", "float8", {}, "auto"),
    (ModelConfig, "target_modules", [], {}, "'all-linear' or a non-empty list of module names"),
    (ModelConfig, "target_modules", "q_proj", {}, "'all-linear' or a non-empty list of module names"),
    (ModelConfig, "target_modules", ["q_proj", 3], {}, "'all-linear' or a non-empty list of module names"),
]


@pytest.mark.parametrize(("section", "name", "bad", "others", "fix"), RULES,
                         ids=[f"{r[0].__name__}.{r[1]}={r[2]!r}" for r in RULES])
def test_each_validated_field_names_itself_the_bad_value_and_the_allowed_ones(section, name, bad, others, fix):
    with pytest.raises(ConfigError) as err:
        section(**{name: bad, **others})
    mine = [p for p in err.value.problems if p.startswith(name)]
    assert len(mine) == len(err.value.problems) == 1, err.value.problems  # only this field is wrong
    assert fix in mine[0] and "must" in mine[0]
    if bad != []:  # an empty list has nothing to show
        assert repr(bad) in mine[0]


def test_a_stride_longer_than_the_window_names_both_values():
    with pytest.raises(ConfigError) as err:
        EvalConfig(window_tokens=8, stride_tokens=16)
    assert err.value.problems == ["stride_tokens (16) must be <= window_tokens (8)"]


def test_the_good_values_next_to_the_bad_ones_are_accepted():
    """The rules above reject what they should, not everything: their boundary values pass."""
    TrainConfig(max_steps=-1, zero_stage=3, distributed_backend="deepspeed", precision="fp32")
    DataConfig(heldout_share=0.0, replay_share=0.9, replay_sources=["general_en/"], on_error="skip", txt_mode="file")
    ModelConfig(backend="transformers", dtype="auto", target_modules=["q_proj", "v_proj"])
    EvalConfig(window_tokens=16, stride_tokens=16)


# ---------------------------------------------------------------- corpus files


def _read(path, **kw):
    from cptnb.data import read_documents

    return list(read_documents([path], **kw))


def test_a_csv_without_the_text_column_names_the_file_the_columns_and_the_setting(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text("id,body\n1,Xin chào các bạn\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        _read(path)
    message = str(err.value)
    assert f"{path}:1" in message and "no column 'text'" in message and "body" in message
    assert "set text_field" in message
    assert [d.text for d in _read(path, text_field="body")] == ["Xin chào các bạn"]  # the fix it names works


def _write_parquet(path, columns: dict):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)


def test_a_parquet_without_the_text_column_names_the_file_the_columns_and_the_setting(tmp_path):
    path = tmp_path / "corpus.parquet"
    _write_parquet(path, {"content": ["Hà Nội mùa thu"], "id": ["a"]})
    with pytest.raises(DataError) as err:
        _read(path)
    message = str(err.value)
    assert str(path) in message and "no column 'text'" in message
    assert "content" in message and "set text_field" in message
    assert [d.text for d in _read(path, text_field="content")] == ["Hà Nội mùa thu"]


def test_a_corrupt_parquet_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "corpus.parquet"
    path.write_bytes(b"PAR1 this is not really a parquet file")
    with pytest.raises(DataError) as err:
        _read(path)
    message = str(err.value)
    assert str(path) in message and "not a readable parquet file" in message and "re-export" in message


# ---------------------------------------------------------------- the command line, through main()


def _tiny_recipe(tmp_path, **data) -> str:
    recipe = Recipe(data=DataConfig(heldout_domain=[], heldout_general=[], **data),
                    model=ModelConfig(name="tiny-llama", max_seq_len_tokens=32),
                    train=TrainConfig(output_dir=str(tmp_path / "run")))
    path = tmp_path / "recipe.yaml"
    recipe.to_yaml(path)
    return str(path)


def _error_of(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err  # progress bars may come first
    assert "cptnb: error: " in err and "Traceback" not in err
    return err.split("cptnb: error: ", 1)[1]


def test_prepare_with_a_missing_recipe_names_the_file(tmp_path, capsys):
    path = tmp_path / "missing.yaml"
    err = _error_of(capsys, ["prepare", "--config", str(path)])
    assert str(path) in err and "pass the path of a recipe YAML" in err


def test_prepare_with_a_missing_corpus_names_the_path_and_the_fix(tmp_path, capsys):
    missing = tmp_path / "corpus" / "vi_news.jsonl"
    err = _error_of(capsys, ["prepare", "--config", _tiny_recipe(tmp_path, sources=[str(missing)]),
                             "--out", str(tmp_path / "out")])
    assert str(missing) in err and "check the path" in err
    assert not (tmp_path / "out" / "train").exists()


def test_prepare_with_a_corrupt_corpus_line_names_file_and_line(tmp_path, capsys):
    corpus = tmp_path / "news.jsonl"
    corpus.write_text('{"text": "Một bài báo dài đủ để giữ lại sau khi làm sạch."}\n{"text": "thiếu ngoặc"\n',
                      encoding="utf-8")
    err = _error_of(capsys, ["prepare", "--config", _tiny_recipe(tmp_path, sources=[str(corpus)]),
                             "--out", str(tmp_path / "out")])
    assert f"{corpus}:2" in err and "not valid JSON" in err and "fix or delete this line" in err


def test_import_fpt_names_a_missing_file_and_a_broken_one(tmp_path, capsys):
    missing = tmp_path / "hyper.json"
    err = _error_of(capsys, ["import-fpt", str(missing), "-o", str(tmp_path / "r.yaml")])
    assert str(missing) in err and "pass the FPT AI Studio hyperparameter JSON" in err
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "learning_rate": 4e-5,\n  "batch_size": \n}\n', encoding="utf-8")
    err = _error_of(capsys, ["import-fpt", str(broken), "-o", str(tmp_path / "r.yaml")])
    assert f"{broken}:4" in err and "not valid JSON" in err
    assert not (tmp_path / "r.yaml").exists()


def test_info_reports_the_hardware_and_the_backend_auto_picks(capsys):
    import torch

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}" in out
    if not torch.cuda.is_available():
        assert "backend for model.backend=auto: transformers" in out  # Unsloth needs a GPU


def test_notebook_with_an_unknown_name_lists_the_known_ones(capsys):
    err = _error_of(capsys, ["notebook", "07_does_not_exist"])
    assert "no notebook '07_does_not_exist'" in err and "known notebooks: 00_quickstart, 01_corpus" in err


@pytest.fixture
def papermill_calls(monkeypatch):
    """papermill.execute_notebook stand-in: records its arguments; a test may make it fail like a cell does."""
    import papermill

    calls = []

    def execute(source, executed, parameters=None, **kw):
        calls.append({"source": source, "executed": executed, "parameters": parameters, **kw})
        if calls[-1]["parameters"].get("FAIL"):
            raise papermill.PapermillExecutionError(
                4, 4, "prepare(...)", "DataError", "corpus.jsonl:3: not valid JSON", []
            )

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    return calls


def test_notebook_parameters_are_read_as_python_values(tmp_path, papermill_calls, capsys):
    assert main(["notebook", "02_train", "--out", str(tmp_path), "-p", "MAX_STEPS", "3", "-p", "SMOKE", "True",
                 "-p", "MODEL", "tiny-llama", "-p", "LR", "2e-4", "-p", "PROMPTS", "['Hà Nội là']"]) == 0
    (call,) = papermill_calls
    assert call["parameters"] == {"OUT_DIR": str(tmp_path.resolve()), "MAX_STEPS": 3, "SMOKE": True,
                                  "MODEL": "tiny-llama", "LR": 2e-4, "PROMPTS": ["Hà Nội là"]}
    assert call["source"].endswith("notebooks/02_train.ipynb")
    assert call["executed"] == str(tmp_path.resolve() / "02_train.ipynb")
    assert f"executed notebook: {tmp_path.resolve() / '02_train.ipynb'}" in capsys.readouterr().out


def test_a_failing_notebook_cell_names_the_cell_the_error_and_the_executed_copy(tmp_path, papermill_calls, capsys):
    err = _error_of(capsys, ["notebook", "01_corpus", "--out", str(tmp_path), "-p", "FAIL", "1"])
    assert "01_corpus.ipynb failed in cell 4: DataError: corpus.jsonl:3: not valid JSON" in err
    assert f"The executed copy with the full traceback is {tmp_path.resolve() / '01_corpus.ipynb'}" in err


def test_demo_runs_the_quickstart_and_reports_a_failing_cell(tmp_path, papermill_calls, capsys, monkeypatch):
    assert main(["demo", "--out", str(tmp_path / "quick"), "--smoke"]) == 0
    assert papermill_calls[-1]["parameters"]["SMOKE"] is True
    assert papermill_calls[-1]["source"].endswith("00_quickstart.ipynb")
    assert "executed notebook:" in capsys.readouterr().out
    papermill_calls.clear()

    import papermill

    def failing(source, executed, parameters=None, **kw):
        raise papermill.PapermillExecutionError(
            7, 7, "train(...)", "OutOfMemoryError", "lower per_device_batch_size", []
        )

    monkeypatch.setattr(papermill, "execute_notebook", failing)
    err = _error_of(capsys, ["demo", "--out", str(tmp_path / "quick")])
    assert "00_quickstart.ipynb failed in cell 7: OutOfMemoryError: lower per_device_batch_size" in err
    assert str(tmp_path.resolve() / "quick" / "00_quickstart.ipynb") in err


# ---------------------------------------------------------------- export


@pytest.fixture(scope="module")
def adapter_dir(tiny, tmp_path_factory):
    loaded = tiny(method="lora")
    folder = tmp_path_factory.mktemp("adapter")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def test_export_refuses_a_quantized_base_and_names_the_fix(tiny, adapter_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from cptnb.export import export_adapter

    source = tiny(method="full").source
    quantized = tmp_path / "tiny-bnb-4bit"
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    AutoModelForCausalLM.from_pretrained(source, quantization_config=config).save_pretrained(quantized)
    tiny(method="full").tokenizer.save_pretrained(quantized)
    with pytest.raises(ExportError) as err:
        export_adapter(adapter_dir, str(quantized), tmp_path / "out")
    message = str(err.value)
    assert str(quantized) in message and "stored quantized" in message
    assert "pass base_model= the full-precision model" in message


def test_export_refuses_an_adapter_that_does_not_fit_its_base(adapter_dir, tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from cptnb.export import export_adapter

    other = tmp_path / "wider-llama"  # same layer names, other shapes: the adapter's matrices cannot load
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(other)
    tokenizer.save_pretrained(other)
    with pytest.raises(ExportError) as err:
        export_adapter(adapter_dir, str(other), tmp_path / "out")
    message = str(err.value)
    assert f"adapter {adapter_dir} does not fit base model {other}" in message
    assert "Pass base_model= the model the adapter was trained on" in message
