"""SimCSE (LLM2Vec's step 3) and supervised contrastive learning, on ``SentenceTransformerTrainer``.

The model is a ``SentenceTransformer`` whose only module is ``LLM2VecTransformer`` (the module exported
checkpoints use), wrapping the bidirectional encoder with earlier adapters merged and a fresh LoRA. Instructions
are excluded from pooling exactly as at inference (docs/architecture.md, "Semantics"), because the same module
tokenizes and pools.

* SimCSE: each text is its own positive (columns ``anchor`` = ``positive`` = the text); the attention dropout
  ``simcse_dropout`` is the only noise; in-batch negatives; ``MultipleNegativesRankingLoss`` with
  ``scale = loss_scale`` (20).
* Supervised: ``query`` (as ``[instruction, query]``), ``positive`` and ``num_hard_negatives`` negative columns;
  every batch from one dataset (``GroupedBatchSampler``); ``loss_scale`` 50.
* ``use_gradcache``: ``CachedMultipleNegativesRankingLoss`` with ``gradcache_mini_batch_size`` (GradCache).
* Under DDP the embeddings are gathered across devices (``gather_across_devices``), so the negatives of one step
  are those of the global batch and the loss equals the single-process loss on that batch.
"""

from __future__ import annotations

import logging

import torch
from sentence_transformers import SentenceTransformerTrainer

from ..modeling.encoding_settings import write_encoding_settings
from ..modeling.packing import use_varlen_attention
from ..modeling.sentence_transformers_llm2vec import LLM2VecTransformer
from .checkpoints import AdapterTrainerMixin
from .data import GroupedBatchSampler, load_hub_texts, read_supervised, read_texts, supervised_columns
from .lora import add_lora, enable_gradient_checkpointing, take_gradient_checkpointing
from .stage_model import load_model_for_stage

logger = logging.getLogger(__name__)


class PreloadedLLM2VecTransformer(LLM2VecTransformer):
    """``LLM2VecTransformer`` around an encoder already in memory (the ``PeftModel`` being trained), passed as
    ``model_kwargs={"encoder": ...}``: sentence-transformers' ``Transformer`` only loads from a folder, and
    ``_load_model`` is where it does."""

    def _load_model(self, *args, encoder=None, **kwargs):
        if encoder is None:
            raise ValueError("PreloadedLLM2VecTransformer needs model_kwargs={'encoder': <the loaded encoder>}")
        return encoder


class PaddedRowLLM2VecTransformer(PreloadedLLM2VecTransformer):
    """Pools every position of the left-padded row, BOS and padding included.

    The official run_simcse.py passes texts without its instruction marker, so its embed mask is empty and its
    ``skip_instruction`` pooling averages the whole padded row. Kept as an option (``simcse_pooling:
    padded_row``) to reproduce it exactly; the default pools the text's tokens as inference does
    (docs/architecture.md, differences table). It pools the padding's states, so its batches run padded.
    """

    padding_free = False

    def preprocess(self, inputs, prompt=None, **kwargs):
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"  # the official tokenizer pads on the left
        try:
            batch = super().preprocess(inputs, prompt=prompt, **kwargs)
        finally:
            self.tokenizer.padding_side = side
        batch["pool_mask"] = torch.ones_like(batch["attention_mask"])
        return batch


def sentence_transformer_for(encoder, tokenizer, base_folder: str, max_seq_length: int, pooling_mode: str,
                             text_template: str | None = None, padded_row_pooling: bool = False,
                             padding_free: bool = True, max_batch_tokens: int | None = None):
    """A ``SentenceTransformer`` around an already loaded encoder (possibly a ``PeftModel``), no second load.
    ``padding_free``: training batches run on their real tokens only, in forward calls of at most
    ``max_batch_tokens`` (``LLM2VecTransformer``)."""
    from sentence_transformers import SentenceTransformer

    module_class = PaddedRowLLM2VecTransformer if padded_row_pooling else PreloadedLLM2VecTransformer
    module = module_class(base_folder, max_seq_length=max_seq_length, model_kwargs={"encoder": encoder})
    module.padding_free = module.padding_free and padding_free
    module.max_batch_tokens = max_batch_tokens
    tokenizer.model_max_length = max_seq_length
    module.processor = tokenizer  # ours: pad token set, as every llm2vec-hf path loads it
    # A settings layer over the base's (`resolve_encoding`'s ``stored``). Training reads texts exactly as the
    # exported checkpoint will encode them (the template is saved with the adapter and carried into the
    # checkpoint by export). A template of None would mean "the reference's template for the base's name" (an
    # inference rule); training wraps only when the recipe says so, as run_simcse.py (never) and
    # run_supervised.py (by its own name list) do. The reference trains on texts truncated to max_seq_length
    # only; encode()'s word-wise doc_max_length cut (default 400) is an inference rule, so it is lifted to
    # max_seq_length here.
    module.encoding_overrides = {"pooling_mode": pooling_mode, "text_template": text_template or "",
                                 "doc_max_length": max_seq_length}
    return SentenceTransformer(modules=[module], device=str(next(encoder.parameters()).device))


def set_attention_dropout(model, p: float) -> int:
    """Sets the attention dropout of every attention module (and the config); returns how many were set."""
    count = 0
    for module in model.modules():
        if hasattr(module, "attention_dropout") and not isinstance(getattr(module, "attention_dropout"), bool):
            module.attention_dropout = p
            count += 1
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "attention_dropout"):
        config.attention_dropout = p
    return count


def contrastive_loss(model, contrastive_args, scale: float, world_size: int):
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    gather = contrastive_args.gather_across_devices and world_size > 1
    if contrastive_args.use_gradcache:
        return CachedMultipleNegativesRankingLoss(
            model, scale=scale, mini_batch_size=contrastive_args.gradcache_mini_batch_size,
            gather_across_devices=gather,
        )
    return MultipleNegativesRankingLoss(model, scale=scale, gather_across_devices=gather)


def load_contrastive_rows(recipe) -> tuple[dict[str, list], list[str]]:
    """Columns for the stage and the dataset label of each row (one label for SimCSE)."""
    data_args, stage = recipe.data, recipe.model.stage
    if stage == "simcse":
        if data_args.train_file:
            texts = read_texts(data_args.train_file, data_args.text_column, data_args.max_train_samples)
        else:
            texts = load_hub_texts(data_args.dataset_name, data_args.dataset_config_name, "train",
                                   data_args.text_column, data_args.max_train_samples)
        return {"anchor": texts, "positive": list(texts)}, ["simcse"] * len(texts)
    records = read_supervised(data_args.train_file, data_args.max_train_samples)
    columns, groups, negatives = supervised_columns(records, recipe.contrastive.num_hard_negatives,
                                                    data_args.train_file)
    logger.info("Supervised data: %d records from %d dataset(s), %d hard negative(s) each", len(records),
                len(set(groups)), negatives)
    return columns, groups


class ContrastiveTrainer(AdapterTrainerMixin, SentenceTransformerTrainer):
    """``SentenceTransformerTrainer`` with adapter-only, staged checkpoints and batches from one dataset each.

    ``groups``: the dataset label of each training row (``GroupedBatchSampler``); ``adapter_settings``: the
    encoding settings saved with each adapter (``write_encoding_settings``).
    """

    def __init__(self, *args, groups: list[str], adapter_settings: dict, **kwargs):
        self.groups, self.adapter_settings = groups, adapter_settings
        super().__init__(*args, **kwargs)

    def get_batch_sampler(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
        return GroupedBatchSampler(self.groups, batch_size, self.args.world_size, self.args.seed, drop_last)

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        write_encoding_settings(output_dir or self.args.output_dir, self.adapter_settings)


def build_contrastive_trainer(recipe, resume: str | None):
    """Reads data, loads the encoder with earlier adapters merged and a fresh LoRA; returns ``(trainer, base)``."""
    from datasets import Dataset
    from transformers import set_seed

    args, stage, contrastive = recipe.training, recipe.model.stage, recipe.contrastive
    columns, groups = load_contrastive_rows(recipe)
    # Fails early, before loading the model, when no dataset fills one global batch.
    drop_last = stage != "simcse"
    GroupedBatchSampler(groups, args.per_device_train_batch_size, args.world_size, args.seed, drop_last)
    if contrastive.simcse_pooling == "padded_row" and (stage != "simcse" or contrastive.pooling_mode != "mean"):
        raise ValueError("simcse_pooling padded_row reproduces the official SimCSE mean pooling: it needs stage "
                         "simcse and pooling_mode mean")

    encoder, tokenizer, base_folder = load_model_for_stage(recipe.model, for_mntp=False)
    if stage == "simcse":
        n = set_attention_dropout(encoder, contrastive.simcse_dropout)
        logger.info("SimCSE: attention dropout %.2f on %d attention modules", contrastive.simcse_dropout, n)
    if contrastive.padding_free and use_varlen_attention(encoder):
        logger.info("%s: padding-free batches (texts packed into rows that attend within each text, at most %d "
                    "tokens per call)", stage, contrastive.max_batch_tokens)
    set_seed(args.seed)
    peft_model = add_lora(encoder, recipe.model)
    if take_gradient_checkpointing(args):
        enable_gradient_checkpointing(peft_model)
    model = sentence_transformer_for(peft_model, tokenizer, base_folder, recipe.data.max_seq_length,
                                     contrastive.pooling_mode, contrastive.text_template,
                                     contrastive.simcse_pooling == "padded_row", contrastive.padding_free,
                                     contrastive.max_batch_tokens)
    scale = contrastive.loss_scale if contrastive.loss_scale is not None else (20.0 if stage == "simcse" else 50.0)
    loss = contrastive_loss(model, contrastive, scale, args.world_size)
    logger.info("%s: %s, scale %.1f, batch %d x %d device(s)", stage, type(loss).__name__, scale,
                args.per_device_train_batch_size, args.world_size)
    args.dataloader_drop_last = drop_last
    adapter_settings = {"pooling_mode": contrastive.pooling_mode}
    if contrastive.text_template:
        adapter_settings["text_template"] = contrastive.text_template

    trainer = ContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(columns),
        loss=loss,
        groups=groups,
        adapter_settings=adapter_settings,
    )
    return trainer, base_folder
