"""Command line: `cptnb demo | notebook | prepare | calibrate | train | import-fpt | info`.

Errors a user can fix print as one message (no traceback) and exit with 2.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import sys
from pathlib import Path

from cptnb.cli_options import PREPARE_ALIASES, PREPARE_MODEL_FIELDS, add_config_options, add_recipe_options
from cptnb.errors import CptnbError


def _value(text: str):
    """Parse a -p value as a Python literal when it is one (numbers, True, lists), else keep the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _cmd_demo(args) -> None:
    from cptnb.notebooks import run_notebook

    params = {"SMOKE": True} if args.smoke else {}
    executed = run_notebook("00_quickstart", args.out, params)
    print(f"executed notebook: {executed}")
    for name in ("metrics.jsonl", "loss.png", "before_after.md", "before_after.json"):
        print(f"  {executed.parent / name}")
    md = executed.parent / "before_after.md"
    if md.is_file():
        print(md.read_text(encoding="utf-8"))


def _cmd_notebook(args) -> None:
    from cptnb.notebooks import run_notebook

    params = {key: _value(value) for key, value in args.param}
    executed = run_notebook(args.name, args.out or f"runs/{args.name}", params)
    print(f"executed notebook: {executed}")


def _cmd_calibrate(args) -> None:
    from cptnb.data.languages.calibrate import calibrate

    out = args.out or f"languages/{args.lang}.yaml"
    result = calibrate(args.lang, args.source, out=out, segmenter=args.segmenter, low_quantile=args.low_quantile,
                       high_quantile=args.high_quantile, slack=args.slack, stopword_count=args.stopwords,
                       name=args.name, text_field=args.text_field)
    print(result.markdown())
    print(f"wrote {result.path} (report: {Path(out).with_suffix('.report.md')}); use it with "
          f"--data.language {args.lang} --data.filters.profile {result.path}")


def _cmd_prepare(args) -> None:
    from cptnb.cli_options import recipe_from_args
    from cptnb.data.pipeline import prepare
    from cptnb.models.loading import load_tokenizer

    recipe = recipe_from_args(args, args.config)
    out = args.out or str(Path(recipe.train.output_dir) / "data")
    tokenizer = load_tokenizer(recipe.model)
    prepared = prepare(recipe.data, tokenizer, out, block_tokens=recipe.model.max_seq_len_tokens)
    total, tokens = prepared.report["total"], prepared.report["tokens"]
    print(f"wrote {out}: {total['docs_kept']:,} of {total['docs_in']:,} documents kept, "
          f"{tokens['blocks']:,} blocks of {tokens['block_size']} tokens (+{tokens['remainder_tokens']} remainder)")
    for reason, count in sorted(total["dropped"].items(), key=lambda kv: -kv[1]):
        print(f"  dropped {count:>6,}  {reason}")
    if recipe.data.replay_sources:
        print(f"  replay share of tokens: {tokens['replay_share_achieved']:.3f} (target {recipe.data.replay_share})")


def _cmd_train(args) -> None:
    from cptnb.cli_options import recipe_from_args
    from cptnb.train.run import run_recipe

    recipe = recipe_from_args(args, args.config)
    if args.nproc > 1:  # torchrun in a subprocess; each worker runs this command again with nproc 1
        from cptnb.train.launch import launch

        launched = launch(recipe, num_processes=args.nproc, resume=args.resume)
        print(f"{args.nproc} processes trained {len(launched.losses)} logged steps; saved {launched.final_dir}")
        return
    result = run_recipe(recipe, resume="auto" if args.resume else False)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only the main process reports
        print(f"trained {result.steps} steps, final train loss {result.final_train_loss:.4f}; saved {result.final_dir}")


def _cmd_extend_vocab(args) -> None:
    from cptnb.cli_options import recipe_from_args
    from cptnb.vocab.extend import extend_for_recipe

    recipe = recipe_from_args(args, args.config)
    result = extend_for_recipe(recipe, args.out)
    domain = result.report["corpora"]["domain"]
    print(f"added {len(result.extension.new_tokens):,} tokens: Vietnamese-side tokens per word "
          f"{domain['before']['tokens_per_word']:.3f} -> {domain['after']['tokens_per_word']:.3f}; "
          f"wrote {result.model_dir}")
    print(f"train on it with --model.name {result.model_dir} (report: {result.model_dir.parent / 'report.md'})")


def _cmd_plan(args) -> None:
    import tempfile

    from cptnb.cli_options import recipe_from_args
    from cptnb.planner import plan

    recipe = recipe_from_args(args, args.config)
    loaded = dataset = None
    if args.measure:  # a real warm-up needs the model and the packed corpus
        from cptnb.data.pipeline import prepare
        from cptnb.models.loading import load_model

        loaded = load_model(recipe.model)
        with tempfile.TemporaryDirectory() as tmp:
            dataset = prepare(recipe.data, loaded.tokenizer, tmp, block_tokens=recipe.model.max_seq_len_tokens).packed
            result = plan(recipe, loaded, dataset, _gib(args.available_gib), measure=True,
                          num_devices=args.num_devices, device=args.device)
    else:
        result = plan(recipe, None, args.blocks, _gib(args.available_gib), measure=False,
                      num_devices=args.num_devices, device=args.device)
    print(result.markdown())
    if args.rehearse:
        from cptnb.planner.rehearse import rehearse

        print(rehearse(recipe).markdown())


def _gib(value: float | None) -> float | None:
    return value * 2**30 if value else None


def _cmd_evaluate(args) -> None:
    from cptnb.cli_options import recipe_from_args
    from cptnb.evaluate.suite import evaluate_model, heldout_texts, tasks_from
    from cptnb.models.loading import load_for_eval

    cfg = recipe_from_args(args, args.config).eval
    tasks = tasks_from(cfg, only=args.task)
    model, tokenizer = load_for_eval(args.model, args.adapter)
    heldout = heldout_texts(args.heldout_domain or [], args.heldout_general or [], args.heldout_docs)
    meta = {"model": args.model, "adapter": args.adapter}
    doc = evaluate_model(model, tokenizer, cfg, heldout, meta, args.out, tasks)
    for name, task in doc["tasks"].items():
        scores = ", ".join(f"{metric} {value:.4f}" for metric, value in task["metrics"].items())
        print(f"  {name} (n={task['n']}): {scores}")


def _cmd_compare(args) -> None:
    from cptnb.cli_options import recipe_from_args
    from cptnb.evaluate.report import write_comparison
    from cptnb.retention import RetentionThreshold

    threshold = RetentionThreshold.from_config(recipe_from_args(args, args.config).train)  # the run's declared one
    payload = write_comparison(args.out, args.base, args.adapted, title=args.title, n_boot=args.n_boot, seed=args.seed,
                               threshold=threshold)
    print(payload["retention"])


def _cmd_export_lm_eval_tasks(args) -> None:
    from cptnb.evaluate.lmeval_export import export_lm_eval_tasks

    written = export_lm_eval_tasks(args.tasks, args.out)
    print(f"wrote {len(written)} lm-eval task files into {args.out}; run them with:")
    print(f"  lm_eval --model hf --model_args pretrained=MODEL --include_path {args.out} --tasks <task names>")


def _cmd_import_fpt(args) -> None:
    import json
    from pathlib import Path

    from cptnb.fpt_import import import_fpt

    path = Path(args.json)
    if not path.is_file():
        raise CptnbError(f"{path}: no such file; pass the FPT AI Studio hyperparameter JSON")
    try:
        hyper = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CptnbError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    recipe, notes = import_fpt(hyper, model=args.model)
    recipe.to_yaml(args.output)
    print(f"wrote {args.output}")
    for note in notes:
        print(f"  note: {note}")


def _cmd_export(args) -> None:
    from cptnb.cli_options import config_from_args
    from cptnb.export import ExportConfig, export

    result = export(config_from_args(args, ExportConfig))
    print(f"exported to {result.out_dir}")
    parts = (("adapter", result.adapter_dir), ("merged model", result.merged_dir), ("model card", result.card))
    for label, path in parts:
        if path:
            print(f"  {label}: {path}")
    if result.check:
        check = result.check
        saved = f", {check.saved_max_abs_diff:.3g} from the saved model" if check.saved_max_abs_diff is not None else ""
        print(f"  reload check: max |logit difference| {check.max_abs_diff:.3g} from the trained model "
              f"(tolerance {check.tolerance:.3g}){saved} -> {'passed' if check.passed else 'FAILED'}")


def _cmd_info(args) -> None:
    import importlib.util

    import torch

    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    print(f"unsloth installed: {importlib.util.find_spec('unsloth') is not None}")
    from cptnb.config import ModelConfig
    from cptnb.models.loading import choose_backend

    print(f"backend for model.backend=auto: {choose_backend(ModelConfig())}")


def _cmd_sweep(args) -> None:
    from cptnb.cli_options import overrides_from_args
    from cptnb.config import Recipe
    from cptnb.train.sweep import SweepConfig, run_sweep

    overrides = overrides_from_args(args)  # recipe sections and the sweep's own fields, split by name
    sweep = SweepConfig.from_dict({k: overrides.pop(k) for k in list(overrides) if k in SweepConfig.help()},
                                  where="command line")
    recipe = (Recipe.from_yaml(args.config) if args.config else Recipe()).replace(**overrides)
    payload = run_sweep(recipe, sweep)
    for line in payload["verdict"]:
        print(line)
    print(f"frontier: {Path(sweep.out_dir or Path(recipe.train.output_dir) / 'sweep') / 'frontier.png'}")


def _sweep_config_class():
    from cptnb.train.sweep import SweepConfig

    return SweepConfig


def _export_config_class():
    from cptnb.export import ExportConfig  # the module imports no heavy library at import time

    return ExportConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cptnb", description="Notebook-first continued pretraining.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the quickstart notebook headless (what `make demo` does)")
    demo.add_argument("--out", default="runs/quickstart", help="output directory")
    demo.add_argument("--smoke", action="store_true", help="tiny model, seconds instead of minutes")
    demo.set_defaults(func=_cmd_demo)

    nb = sub.add_parser("notebook", help="run any notebook headless with parameters")
    nb.add_argument("name", help="e.g. 00_quickstart")
    nb.add_argument("--out", default=None, help="output directory (default runs/NAME)")
    nb.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    nb.set_defaults(func=_cmd_notebook)

    prep = sub.add_parser(
        "prepare",
        help="clean, filter, dedup, decontaminate, split, mix and pack a corpus",
        description="Every data field is an option (--data.sources my_corpus/ --data.language vi "
        "--data.replay_sources general_en/ --data.replay_share 0.1, ...), the tokenizer is --model.name; "
        "options override the recipe YAML given with --config (or the built-in defaults).",
    )
    prep.add_argument("--config", help="recipe YAML whose data and model sections to use (default: built-in defaults)")
    prep.add_argument("--out", help="output directory (default: <train.output_dir>/data)")
    add_recipe_options(prep, sections=("data", "model"), only={"model": PREPARE_MODEL_FIELDS}, aliases=PREPARE_ALIASES)
    prep.set_defaults(func=_cmd_prepare)

    cal = sub.add_parser(
        "calibrate",
        help="measure the filter statistics on a sample of a language and write its profile (thresholds from data)",
        description="Example: cptnb calibrate --lang th --source my_thai_sample.jsonl --out languages/th.yaml; "
        "then cptnb prepare --data.language th --data.filters.profile languages/th.yaml ...",
    )
    cal.add_argument("--lang", required=True, help="language code, e.g. th, id, sw")
    cal.add_argument("--source", nargs="+", required=True, help="clean sample text of the language (files/folders)")
    cal.add_argument("--out", default=None, help="profile YAML to write (default languages/LANG.yaml)")
    cal.add_argument("--segmenter", default="auto", choices=("auto", "whitespace", "thai", "char_ngram"),
                     help="how words are cut (auto: from the script of the sample)")
    cal.add_argument("--low-quantile", type=float, default=0.02, help="quantile of the sample for min_* thresholds")
    cal.add_argument("--high-quantile", type=float, default=0.98, help="quantile of the sample for max_* thresholds")
    cal.add_argument("--slack", type=float, default=0.1, help="thresholds moved this share beyond the quantile")
    cal.add_argument("--stopwords", type=int, default=30, help="stopwords: the sample's N most widespread words")
    cal.add_argument("--name", default="", help="language name for the profile, e.g. Thai")
    cal.add_argument("--text-field", default="text", help="field holding the text in structured sources")
    cal.set_defaults(func=_cmd_calibrate)

    tr = sub.add_parser(
        "train",
        help="prepare the corpus, load the model and train, from a recipe YAML and/or options",
        description="Every recipe field is an option (--train.learning_rate 1e-4, --model.use_rslora true, ...); "
        "options override the YAML given with --config.",
    )
    tr.add_argument("--config", help="recipe YAML (default: the built-in defaults)")
    tr.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output dir")
    tr.add_argument("--nproc", type=int, default=1,
                    help="processes (GPUs, or CPU shares with gloo) to train with, via torchrun (default 1)")
    add_recipe_options(tr)
    tr.set_defaults(func=_cmd_train)

    xv = sub.add_parser(
        "extend-vocab",
        help="learn new tokens from the corpus, extend the tokenizer and resize the model (cptnb.vocab)",
        description="Example: cptnb extend-vocab --config recipe.yaml --model.vocab.new_tokens 1000 --out runs/vocab; "
        "data options choose the corpus, --model.vocab.* the extension.",
    )
    xv.add_argument("--config", help="recipe YAML whose data and model sections to use (default: built-in defaults)")
    xv.add_argument("--out", required=True, help="output folder: model/ (loadable), report.json, report.md")
    add_recipe_options(xv, sections=("data", "model"))
    xv.set_defaults(func=_cmd_extend_vocab)

    pl = sub.add_parser(
        "plan",
        help="tokens, steps, time and memory per method for a recipe, with out-of-memory warnings",
        description="Example: cptnb plan --config data_samples/recipes/llama32_1b_vi_full_8gpu.yaml "
        "--device cuda --num-devices 8 --available-gib 80 --blocks 1367188",
    )
    pl.add_argument("--config", help="recipe YAML (default: the built-in defaults)")
    pl.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="plan for this kind of device")
    pl.add_argument("--num-devices", type=int, default=None, help="devices the run will use (default: what is here)")
    pl.add_argument("--available-gib", type=float, default=None, help="memory per device in GiB (default: measured)")
    pl.add_argument("--blocks", type=int, default=None, help="packed blocks in the training set, if known")
    pl.add_argument("--measure", action="store_true", help="load the model, pack the data and time a warm-up")
    pl.add_argument("--rehearse", action="store_true",
                    help="then run a few real training steps on the model's shape with random weights (shrunk to "
                    "fit here), checkpoint and resume included")
    add_recipe_options(pl)
    pl.set_defaults(func=_cmd_plan)

    ev = sub.add_parser(
        "evaluate",
        help="score a model (+ adapter) on the ViLLM-Eval-style tasks and held-out text: results.json + report.md",
        description="Example: cptnb evaluate --model smollm2-135m --adapter runs/cpt/adapter --out runs/eval/adapted",
    )
    ev.add_argument("--model", required=True, help="base model: alias, local folder or hub id (or a merged export)")
    ev.add_argument("--adapter", default=None, help="LoRA adapter folder to apply on top of --model")
    ev.add_argument("--tasks", dest="recipe:eval.tasks", nargs="+", default=argparse.SUPPRESS, metavar="DIR",
                    help="task folders, or folders of task folders (default data_samples/eval)")
    ev.add_argument("--task", action="append", help="only this task (repeatable), e.g. --task exams_vi")
    ev.add_argument("--out", required=True, help="output folder for results.json and report.md")
    ev.add_argument("--config", help="recipe YAML whose eval section to use (options below override it)")
    ev.add_argument("--heldout-domain", nargs="*", default=None,
                    help="held-out domain text files (perplexity, bits per byte)")
    ev.add_argument("--heldout-general", nargs="*", default=None,
                    help="held-out general text files (the forgetting signal)")
    ev.add_argument("--heldout-docs", type=int, default=0, help="score at most this many held-out documents per set")
    add_recipe_options(ev, sections=("eval",))
    ev.set_defaults(func=_cmd_evaluate)

    cmp_ = sub.add_parser(
        "compare",
        help="before/after table with 95%% paired-bootstrap intervals, grouped bar chart and a retention line",
    )
    cmp_.add_argument("base", help="results.json of the base model (or its folder)")
    cmp_.add_argument("adapted", help="results.json of the adapted model (or its folder)")
    cmp_.add_argument("--out", required=True, help="output folder for comparison.md/.png/.json")
    cmp_.add_argument("--title", default="", help="title of the table and chart")
    cmp_.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples")
    cmp_.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    cmp_.add_argument("--config", help="recipe YAML (e.g. the run's recipe.yaml) whose retention threshold to judge by")
    add_recipe_options(cmp_, sections=("train",), only={"train": ("max_general_bpb_rise", "max_general_task_drop")})
    cmp_.set_defaults(func=_cmd_compare)

    sw = sub.add_parser(
        "sweep",
        help="the forgetting frontier: one run per replay share, the no-replay run interpolated toward the base",
        description="Example: cptnb sweep --config data_samples/recipes/smollm2_vi_forgetting_cpu.yaml "
        "--replay_shares 0 0.05 0.1 0.2 --alphas 0.25 0.5 0.75 --max_general_regression 0.01",
    )
    sw.add_argument("--config", help="recipe YAML every run trains with (default: the built-in defaults)")
    add_config_options(sw, _sweep_config_class())
    add_recipe_options(sw)
    sw.set_defaults(func=_cmd_sweep)

    lme = sub.add_parser("export-lm-eval-tasks", help="write lm-evaluation-harness task YAMLs for the same task files")
    lme.add_argument("out", help="folder to write the YAMLs into")
    lme.add_argument("--tasks", default="data_samples/eval", help="task folder or folder of task folders")
    lme.set_defaults(func=_cmd_export_lm_eval_tasks)

    fpt = sub.add_parser("import-fpt", help="convert an FPT AI Studio hyperparameter JSON into a recipe YAML")
    fpt.add_argument("json", help="hyperparameters JSON (seed 001 format)")
    fpt.add_argument("-o", "--output", required=True, help="recipe YAML to write")
    fpt.add_argument("--model", default="meta-llama/Llama-3.2-1B", help="base model for the recipe")
    fpt.set_defaults(func=_cmd_import_fpt)

    exp = sub.add_parser(
        "export",
        help="adapter + merged safetensors + model card + reload check, from a run folder or an adapter",
        description="Example: cptnb export --run_dir runs/smollm2_vi_lora_cpu --out_dir exports/smollm2-vi "
        "--dtype bf16",
    )
    add_config_options(exp, _export_config_class())
    exp.set_defaults(func=_cmd_export)

    info = sub.add_parser("info", help="what hardware and backend the kit sees")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        args.func(args)
    except CptnbError as err:
        print(f"cptnb: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
