"""The recipe's fields: four dataclasses plus sentence-transformers' ``TrainingArguments``, read by ``HfArgumentParser``.

A recipe is one flat YAML mapping; every key belongs to exactly one of these dataclasses (or to
``TrainingArguments``). ``--key value`` on the command line overrides the YAML. Unknown keys are an error
(with a "did you mean" suggestion), so a typo never trains silently with a default.

Field names follow the reference recipes of llm2vec (``model_name_or_path``, ``peft_model_name_or_path``,
``mask_token_type``, ``data_collator_type``, ``mlm_probability``, ``simcse_dropout``, ``loss_scale``, ...).
"""

from __future__ import annotations

import argparse
import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from ..errors import one_line
from ..modeling.encoding_settings import check_pooling_mode, check_positive_integer, check_text_template
from ..modeling.packing import DEFAULT_MAX_BATCH_TOKENS

STAGES = ("mntp", "simcse", "supervised")
MASK_TOKEN_TYPES = ("blank", "eos", "mask")
DATA_COLLATOR_TYPES = ("default", "all_mask")
SIMCSE_POOLINGS = ("text", "padded_row")


@dataclass
class ModelArguments:
    """Which model to train, from which adapters, with which LoRA."""

    stage: str = field(metadata={"help": "training step: mntp | simcse | supervised", "choices": STAGES})
    model_name_or_path: str = field(metadata={"help": "decoder checkpoint: local folder or Hub repo id"})
    peft_model_name_or_path: list[str] | None = field(
        default=None,
        metadata={"help": "PEFT adapters merged into the base (in order) before this stage, e.g. the MNTP adapter"},
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "weights dtype when loading", "choices": ["float32", "bfloat16", "float16"]},
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "eager | sdpa | flash_attention_2 | flex_attention (default: transformers')"}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha (default: 2 * lora_r, as LLM2Vec)"})
    lora_dropout: float | None = field(
        default=None,
        metadata={"help": "LoRA dropout (default 0.05, as LLM2Vec; 0 where LoRA trains expert weights, which peft's "
                          "parameter LoRA cannot drop out)"},
    )
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "module names that get LoRA (default: the family's projections: q, k, v, o, gate, up, "
                          "down; Phi-3's fused qkv, o, gate_up, down)"},
    )
    lora_target_parameters: list[str] | None = field(
        default=None,
        metadata={"help": "parameters that get LoRA through peft's target_parameters (default: a mixture-of-experts "
                          "family's expert weights, mlp.experts.gate_up_proj and mlp.experts.down_proj; [] for none)"},
    )
    output_router_logits: bool | None = field(
        default=None,
        metadata={"help": "mixture-of-experts, MNTP only: add the router's load-balancing loss to the MNTP loss "
                          "(default: the base config's, false for Mixtral and Qwen MoE)"},
    )
    router_aux_loss_coef: float | None = field(
        default=None,
        metadata={"help": "mixture-of-experts: weight of that load-balancing loss (default: the base config's, 0.001 "
                          "for Mixtral and Qwen MoE). transformers' Mixtral and Qwen MoE have no router z-loss"},
    )


@dataclass
class DataArguments:
    """Where the training text comes from."""

    dataset_name: str | None = field(default=None, metadata={"help": "a datasets Hub name (e.g. wikitext)"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "its config (e.g. wikitext-103-raw-v1)"})
    train_file: str | None = field(
        default=None,
        metadata={"help": "local data: .txt (one text per line) or .jsonl ({'text': ...}; supervised: see docs)"},
    )
    validation_file: str | None = field(default=None, metadata={"help": "MNTP: local evaluation text"})
    validation_split_percentage: int = field(
        default=5, metadata={"help": "MNTP: percent of the training texts held out when there is no validation data"}
    )
    max_seq_length: int = field(default=512, metadata={"help": "tokens per training sequence"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use at most this many training texts"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "use at most this many evaluation blocks"})
    text_column: str = field(default="text", metadata={"help": "column (or JSONL key) holding the text"})


@dataclass
class MNTPArguments:
    """Masked next-token prediction."""

    mask_token_type: str = field(
        default="blank",
        metadata={"help": 'mask token: blank ("_"), eos, or mask (adds "<mask>")', "choices": MASK_TOKEN_TYPES},
    )
    data_collator_type: str = field(
        default="default",
        metadata={"help": "default (BERT 80/10/10) or all_mask (every selected token masked)",
                  "choices": DATA_COLLATOR_TYPES},
    )
    mlm_probability: float = field(default=0.2, metadata={"help": "fraction of tokens selected for prediction"})


@dataclass
class ContrastiveArguments:
    """SimCSE and supervised contrastive learning."""

    simcse_dropout: float = field(default=0.3, metadata={"help": "SimCSE: attention dropout, the only noise"})
    loss_scale: float | None = field(
        default=None, metadata={"help": "cosine-similarity scale (1/temperature); default 20 SimCSE, 50 supervised"}
    )
    pooling_mode: str = field(
        default="mean", metadata={"help": "mean | weighted_mean | eos_token | last_token | bos_token"}
    )
    num_hard_negatives: int | None = field(
        default=None,
        metadata={"help": "supervised: hard negatives per query (default: as many as every record has)"},
    )
    use_gradcache: bool = field(
        default=False, metadata={"help": "supervised/SimCSE: CachedMultipleNegativesRankingLoss (GradCache)"}
    )
    gradcache_mini_batch_size: int = field(default=32, metadata={"help": "GradCache mini-batch size"})
    gather_across_devices: bool = field(
        default=True, metadata={"help": "under DDP, use every device's texts as negatives"}
    )
    text_template: str | None = field(
        default=None,
        metadata={"help": 'chat wrapper of every text, e.g. "[INST] {text} [/INST]" (supervised recipes of chat '
                          "bases, as the official run_supervised.py); stored in the exported checkpoint"},
    )
    padding_free: bool = field(
        default=True,
        metadata={"help": "run each batch on its real tokens only: its texts packed into one row that attends within "
                          "each text (same loss and gradients as padded batches); false pads every batch to its "
                          "longest text"},
    )
    max_batch_tokens: int = field(
        default=DEFAULT_MAX_BATCH_TOKENS,
        metadata={"help": "padding-free batches: the most tokens of one forward call (a longer text gets "
                          "a call of its own). Under gradient checkpointing one call's layer is rebuilt at a time, so "
                          "this bounds that part of the activations; the loss and gradients do not depend on it"},
    )
    simcse_pooling: str = field(
        default="text",
        metadata={"help": "SimCSE: text (pool the text's tokens, as at inference) or padded_row (every position of "
                          "the left-padded row, BOS and padding included: the official run_simcse.py's pooling)",
                  "choices": SIMCSE_POOLINGS},
    )


@dataclass
class ScheduleArguments:
    """When training stops, apart from the Trainer's own ``max_steps`` / ``num_train_epochs``, and whether it may
    replace an earlier run's output."""

    stop_after_n_steps: int | None = field(
        default=None,
        metadata={"help": "stop at this optimizer step without changing the learning-rate schedule (the official "
                          "recipes: linear decay over num_train_epochs, stopped at step 1000)"},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "replace what output_dir holds (an earlier run's adapter and checkpoints); without it a "
                          "non-empty output_dir is refused unless resuming"},
    )


ARGUMENT_CLASSES = (ModelArguments, DataArguments, MNTPArguments, ContrastiveArguments, ScheduleArguments)


def training_arguments_class():
    from sentence_transformers import SentenceTransformerTrainingArguments

    return SentenceTransformerTrainingArguments


@dataclass
class Recipe:
    model: ModelArguments
    data: DataArguments
    mntp: MNTPArguments
    contrastive: ContrastiveArguments
    training: Any  # SentenceTransformerTrainingArguments (a transformers TrainingArguments)
    #: keys the user set (YAML or command line), to tell a default from a choice
    explicit: frozenset = frozenset()
    source: str | None = None
    schedule: ScheduleArguments = field(default_factory=ScheduleArguments)


def make_parser() -> HfArgumentParser:
    parser = HfArgumentParser((*ARGUMENT_CLASSES, training_arguments_class()))

    def error(message: str):  # argparse would print the whole usage and exit; one line is clearer
        raise ValueError(f"Bad command-line value: {message}")

    parser.error = error
    return parser


def _typed_value(parser: HfArgumentParser, key: str, value: Any, where: str) -> Any:
    """A recipe value checked against the field's type, as the command line's would be: argparse converts only
    string defaults, so a YAML list or mapping where a number belongs would otherwise fail later, unnamed."""
    action = next((a for a in parser._actions if a.dest == key), None)
    convert = getattr(action, "type", None)
    if action is None or convert is None:
        return value
    type_name = {int: "an integer", float: "a number", str: "a string"}.get(convert, "")
    type_name = type_name or ("true or false" if "bool" in getattr(convert, "__name__", "") else "a valid value")
    if value is None:
        if action.default is not None:  # a field without an "unset" value: null would fail later, unnamed
            raise ValueError(f"{key} {where} must be {type_name}, got null")
        return value

    def one(item: Any) -> Any:
        if isinstance(item, (list, tuple, dict)):
            raise ValueError(f"{key} {where} must be {type_name}, got a {type(item).__name__}: {item!r}"[:300])
        if convert in (int, float) and isinstance(item, bool):
            raise ValueError(f"{key} {where} must be {type_name}, got {item!r}")
        if convert is int and isinstance(item, float) and not item.is_integer():
            raise ValueError(f"{key} {where} must be an integer, got {item!r}")
        if convert is str and not isinstance(item, str):
            return str(item)
        if convert in (int, float) and isinstance(item, (int, float)):
            return convert(item)
        try:
            return convert(item if isinstance(item, str) else str(item))
        except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
            detail = one_line(error)
            raise ValueError(f"{key} {where} must be {type_name}, got {item!r} ({detail})"[:300]) from None

    def checked(item: Any) -> Any:
        item = one(item)
        if action.choices is not None and item not in action.choices:
            choices = ", ".join(str(getattr(c, "value", c)) for c in action.choices)
            raise ValueError(f"{key} {where} must be one of {choices}, got {item!r}"[:300])
        return item

    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        return [checked(item) for item in (value if isinstance(value, (list, tuple)) else [value])]
    return checked(value)


def _known_keys(parser: HfArgumentParser) -> set[str]:
    return {action.dest for action in parser._actions if action.dest != "help"}


def _unknown_key_error(keys: list[str], known: set[str], where: str) -> ValueError:
    hints = []
    for key in keys:
        close = difflib.get_close_matches(key, known, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ValueError(f"Unknown key(s) {where}: {', '.join(hints)}. See docs/training.md for the recipe fields.")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (PyYAML keeps the last value)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool, type(None))):
                continue  # an unhashable key: the safe loader's own error names it
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or one_line(error)
        raise ValueError(f"{where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_recipe(
    config: str | os.PathLike | dict[str, Any] | None, overrides: list[str] | None = None, **values: Any
) -> Recipe:
    """Reads a YAML recipe (or a dict), applies ``--key value`` ``overrides`` and ``values``; validates.

    ``values`` are Python-typed overrides (for tests and the API); ``overrides`` are command-line strings.
    """
    parser = make_parser()
    known = _known_keys(parser)
    data = dict(read_yaml(config)) if isinstance(config, (str, os.PathLike)) else dict(config or {})
    data.update(values)
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"in {config}" if isinstance(config, (str, os.PathLike)) else "in the recipe"
        raise _unknown_key_error(unknown, known, where)
    given = set(data) | {item.split("=", 1)[0].lstrip("-") for item in overrides or [] if item.startswith("--")}
    missing = [a.dest for a in parser._actions if a.required and a.dest not in given]
    missing += [] if "output_dir" in given else ["output_dir"]  # transformers would pick a default folder
    if missing:
        raise ValueError(f"The recipe sets no {', '.join(repr(m) for m in missing)} (required; stage is one of "
                         f"{', '.join(STAGES)})")
    where = f"in {config}" if isinstance(config, (str, os.PathLike)) else "in the recipe"
    data = {key: _typed_value(parser, key, value, where) for key, value in data.items()}
    for action in parser._actions:
        if action.dest in data:
            action.required = False
    parser.set_defaults(**data)
    namespace, rest = parser.parse_known_args(list(overrides or []))
    if rest:
        keys = [item.split("=", 1)[0].lstrip("-") for item in rest if item.startswith("-")] or rest
        raise _unknown_key_error(keys, known, "on the command line")
    explicit = set(data)
    explicit.update(item.split("=", 1)[0].lstrip("-") for item in overrides or [] if item.startswith("--"))
    arguments = vars(namespace)
    _to_current_checkpointing_names(arguments)
    if "report_to" not in explicit:
        arguments["report_to"] = _default_report_to()
    instances = []
    for cls in (*ARGUMENT_CLASSES, training_arguments_class()):
        names = {f.name for f in fields(cls) if f.init}
        instances.append(cls(**{k: v for k, v in arguments.items() if k in names}))
    model_args, data_args, mntp_args, contrastive_args, schedule_args, training_args = instances
    recipe = Recipe(model_args, data_args, mntp_args, contrastive_args, training_args, explicit=frozenset(explicit),
                    source=str(config) if isinstance(config, (str, os.PathLike)) else None, schedule=schedule_args)
    validate(recipe)
    return recipe


def _to_current_checkpointing_names(arguments: dict[str, Any]) -> None:
    """Recipes say ``gradient_checkpointing`` (every supported transformers knows it); from 5.24 on it is a
    deprecated alias of ``activation_checkpointing`` that warns on every run, so hand the value over under the
    new name where the installed TrainingArguments has it."""
    for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                     ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
        if new in arguments and arguments[new] is None and arguments.get(old) is not None:
            arguments[new], arguments[old] = arguments[old], None


def _default_report_to() -> list[str]:
    """TensorBoard where installed, nothing else (an unasked-for wandb login would stall a run)."""
    try:
        import tensorboard  # noqa: F401

        return ["tensorboard"]
    except ImportError:
        return ["none"]


def validate(recipe: Recipe) -> None:
    """Checks that need no files: value ranges and combinations."""
    m, d, n, c, t = recipe.model, recipe.data, recipe.mntp, recipe.contrastive, recipe.training
    if isinstance(m.peft_model_name_or_path, str):
        m.peft_model_name_or_path = [m.peft_model_name_or_path]
    if m.stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {m.stage!r}")
    if n.mask_token_type not in MASK_TOKEN_TYPES:
        raise ValueError(f"mask_token_type must be one of {', '.join(MASK_TOKEN_TYPES)}, got {n.mask_token_type!r}")
    if n.data_collator_type not in DATA_COLLATOR_TYPES:
        raise ValueError(
            f"data_collator_type must be one of {', '.join(DATA_COLLATOR_TYPES)}, got {n.data_collator_type!r}"
        )
    if not 0 < n.mlm_probability < 1:
        raise ValueError(f"mlm_probability must be between 0 and 1, got {n.mlm_probability}")
    if not 0 <= c.simcse_dropout < 1:
        raise ValueError(f"simcse_dropout must be in [0, 1), got {c.simcse_dropout}")
    if c.loss_scale is not None and c.loss_scale <= 0:
        raise ValueError(f"loss_scale must be positive, got {c.loss_scale}")

    check_pooling_mode(c.pooling_mode)
    if c.text_template is not None:
        check_text_template(c.text_template)  # the rule export and the API apply
    if c.simcse_pooling not in SIMCSE_POOLINGS:
        raise ValueError(f"simcse_pooling must be one of {', '.join(SIMCSE_POOLINGS)}, got {c.simcse_pooling!r}")
    stop = recipe.schedule.stop_after_n_steps
    if stop is not None:
        check_positive_integer("stop_after_n_steps", stop)
    check_positive_integer("lora_r", m.lora_r)
    if m.router_aux_loss_coef is not None and m.router_aux_loss_coef < 0:
        raise ValueError(f"router_aux_loss_coef must be >= 0, got {m.router_aux_loss_coef}")
    if m.output_router_logits and m.stage != "mntp":
        raise ValueError("output_router_logits adds the router's load-balancing loss to the MNTP loss; the "
                         f"{m.stage} stage trains the encoder, whose loss has no router term: leave it unset")
    if m.lora_alpha is not None:
        # alpha scales the adapter's update (alpha / r): 0 trains an adapter that can never change the model
        check_positive_integer("lora_alpha", m.lora_alpha)
    if d.max_seq_length < 2:
        raise ValueError(f"max_seq_length must be at least 2, got {d.max_seq_length}")
    if c.num_hard_negatives is not None and c.num_hard_negatives < 0:
        raise ValueError(f"num_hard_negatives must be >= 0, got {c.num_hard_negatives}")
    check_positive_integer("gradcache_mini_batch_size", c.gradcache_mini_batch_size)
    check_positive_integer("max_batch_tokens", c.max_batch_tokens)
    if not d.train_file and not d.dataset_name:
        raise ValueError("The recipe names no training data: set train_file or dataset_name")
    if d.train_file and d.dataset_name:
        raise ValueError("Set either train_file or dataset_name, not both")
    if m.stage == "supervised" and not d.train_file:
        raise ValueError("The supervised stage reads a local JSONL train_file (query, positive, negative, ...)")
    if not t.output_dir:
        raise ValueError("The recipe names no output_dir")
