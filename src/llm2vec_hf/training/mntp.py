"""Masked next-token prediction (MNTP), LLM2Vec's step 2, on the plain ``transformers.Trainer``.

The model is the family's ``…ForMNTP`` (the causal-LM head on the bidirectional body). A fraction
``mlm_probability`` of the tokens is selected; their inputs are replaced by the mask token (``default``: 80 % mask,
10 % random token, 10 % unchanged, as BERT; ``all_mask``: 100 % mask); their labels keep the original token and
every other label is -100. The causal-LM loss shifts labels by one, so the masked token at position i is predicted
from the hidden state at position i-1, as LLM2Vec prescribes. Position 0 is never selected: under that shift no
position predicts it. Evaluation reports the accuracy of the masked predictions with the same shift.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .data import DataError, load_hub_texts, read_texts, split_for_validation

logger = logging.getLogger(__name__)


def mask_token_id(tokenizer, model, mask_token_type: str) -> int:
    """The id inputs are replaced with: "_" (blank), EOS (eos) or a new "<mask>" token (mask, resizes the model)."""
    if mask_token_type == "eos":
        if tokenizer.eos_token_id is None:
            raise ValueError("mask_token_type eos: the tokenizer has no EOS token")
        return tokenizer.eos_token_id
    if mask_token_type == "mask":
        if tokenizer.mask_token is None:
            tokenizer.add_special_tokens({"mask_token": "<mask>"})
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        return tokenizer.mask_token_id
    ids = tokenizer("_", add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ValueError('mask_token_type blank: the tokenizer has no single token for "_"; use eos or mask')
    return ids[0]


@dataclass
class MNTPDataCollator:
    """Stacks equal-length blocks and masks them for MNTP (see the module docstring).

    Features that carry an ``index`` (``BlockDataset`` gives one: block number + epoch x blocks) are masked with a
    generator seeded by ``(seed, index)``: the masks then depend on the data alone, not on the global RNG, so a
    resumed run masks exactly as an uninterrupted one, evaluation masks are the same at every evaluation, and
    each epoch still masks every block differently. Without ``index`` the global RNG is used.
    """

    mask_id: int
    vocab_size: int
    special_ids: frozenset
    mlm_probability: float = 0.2
    all_mask: bool = False
    pad_id: int = 0
    seed: int = 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), length), dtype=torch.long)
        for row, feature in enumerate(features):
            ids = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        indices = [f.get("index") for f in features]
        input_ids, labels = self.mask(input_ids, attention_mask, None if None in indices else indices)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def _draws(self, shape: tuple[int, int], indices: list[int] | None):
        """Uniforms for (selection, mask, random) per token, random token ids, and one uniform per row."""
        rows, length = shape
        if indices is None:
            return torch.rand((3, rows, length)), torch.randint(self.vocab_size, shape), torch.rand(rows)
        uniforms, tokens, extra = [], [], []
        for index in indices:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index))
            uniforms.append(torch.rand((3, length), generator=generator))
            tokens.append(torch.randint(self.vocab_size, (length,), generator=generator))
            extra.append(torch.rand(1, generator=generator))
        return torch.stack(uniforms, 1), torch.stack(tokens), torch.cat(extra)

    def mask(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, indices: list[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        uniforms, random_tokens, extra = self._draws(tuple(input_ids.shape), indices)
        eligible = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(sorted(self.special_ids) or [-1]))
        eligible[:, 0] = False  # no position predicts position 0 under the causal shift
        selected = (uniforms[0] < self.mlm_probability) & eligible
        # Every row predicts at least one token, so no batch has an all-ignored loss.
        for row in torch.nonzero(~selected.any(1) & eligible.any(1)).flatten().tolist():
            candidates = torch.nonzero(eligible[row]).flatten()
            selected[row, candidates[min(int(extra[row] * len(candidates)), len(candidates) - 1)]] = True
        labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
        inputs = input_ids.clone()
        if self.all_mask:
            inputs[selected] = self.mask_id
            return inputs, labels
        to_mask = selected & (uniforms[1] < 0.8)
        inputs[to_mask] = self.mask_id
        to_random = selected & ~to_mask & (uniforms[2] < 0.5)
        inputs[to_random] = random_tokens[to_random]
        return inputs, labels


class SeededRandomSampler(torch.utils.data.Sampler):
    """A random order that depends only on (seed, epoch), so that a resumed run sees the same blocks as an
    uninterrupted one (the default sampler draws its seed from the global RNG, which a resume restores later)."""

    def __init__(self, dataset, seed: int):
        self.length, self.seed, self.epoch = len(dataset), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        offset = self.epoch * self.length  # BlockDataset maps it back; the collator masks each epoch differently
        return iter((offset + torch.randperm(self.length, generator=generator)).tolist())

    def __len__(self) -> int:
        return self.length


class BlockDataset(torch.utils.data.Dataset):
    def __init__(self, blocks: list[list[int]]):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.blocks[index % len(self.blocks)], "index": index}


def tokenize_into_blocks(tokenizer, texts: list[str], block_size: int, max_blocks: int | None = None) -> list[list[int]]:
    """Tokenizes texts (with special tokens), concatenates them and cuts equal blocks (the reference's group_texts);
    stops once ``max_blocks`` blocks exist."""
    blocks, buffer = [], []
    for start in range(0, len(texts), 1000):
        for ids in tokenizer(texts[start : start + 1000], add_special_tokens=True)["input_ids"]:
            buffer.extend(ids)
        while len(buffer) >= block_size:
            blocks.append(buffer[:block_size])
            buffer = buffer[block_size:]
        if max_blocks and len(blocks) >= max_blocks:
            return blocks[:max_blocks]
    return blocks


def masked_accuracy(eval_prediction) -> dict[str, float]:
    """Accuracy of the masked predictions: the prediction at i-1 against the label at i."""
    predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    predictions, labels = np.asarray(predictions)[:, :-1], np.asarray(labels)[:, 1:]
    mask = labels != -100
    return {"accuracy": float((predictions[mask] == labels[mask]).mean()) if mask.any() else float("nan")}


def argmax_logits(logits, labels):
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(-1)


def load_texts(data_args, seed: int) -> tuple[list[str], list[str]]:
    """Training and evaluation texts, from train_file/validation_file or a datasets dataset."""
    if data_args.train_file:
        train = read_texts(data_args.train_file, data_args.text_column, data_args.max_train_samples)
        if data_args.validation_file:
            return train, read_texts(data_args.validation_file, data_args.text_column)
        return split_for_validation(train, data_args.validation_split_percentage, seed)
    name, config = data_args.dataset_name, data_args.dataset_config_name
    train = load_hub_texts(name, config, "train", data_args.text_column, data_args.max_train_samples)
    try:
        return train, load_hub_texts(name, config, "validation", data_args.text_column, None)
    except DataError:
        return split_for_validation(train, data_args.validation_split_percentage, seed)


def build_mntp_trainer(recipe, resume: str | None):
    """Reads data, loads the MNTP model with a fresh LoRA, and returns ``(trainer, base_folder)``."""
    from transformers import Trainer, set_seed

    from .checkpoints import AdapterTrainerMixin
    from .lora import add_lora, enable_gradient_checkpointing, load_model_for_stage, take_gradient_checkpointing

    args, data_args, mntp = recipe.training, recipe.data, recipe.mntp
    train_texts, eval_texts = load_texts(data_args, args.seed)
    model, tokenizer, base_folder = load_model_for_stage(recipe.model, for_mntp=True)
    mask_id = mask_token_id(tokenizer, model, mntp.mask_token_type)

    max_blocks = None
    if args.max_steps and args.max_steps > 0:
        max_blocks = args.max_steps * args.train_batch_size * args.gradient_accumulation_steps * args.world_size
    train_blocks = tokenize_into_blocks(tokenizer, train_texts, data_args.max_seq_length, max_blocks)
    if not train_blocks:
        raise DataError(
            f"The training text has fewer than max_seq_length={data_args.max_seq_length} tokens: nothing to train on"
        )
    eval_blocks = tokenize_into_blocks(tokenizer, eval_texts, data_args.max_seq_length, data_args.max_eval_samples)
    logger.info("MNTP data: %d training blocks, %d evaluation blocks of %d tokens", len(train_blocks),
                len(eval_blocks), data_args.max_seq_length)

    set_seed(args.seed)
    model = add_lora(model, recipe.model)
    if take_gradient_checkpointing(args):
        enable_gradient_checkpointing(model)
    args.remove_unused_columns = False  # the collator reads each block's "index" and outputs only model inputs
    args.prediction_loss_only = False  # sentence-transformers' arguments default to True; we report accuracy
    if args.label_names is None:
        args.label_names = ["labels"]  # a PeftModel hides them from the Trainer's signature inspection
    if not eval_blocks and args.eval_strategy != "no":
        raise DataError("eval_strategy is set but there is no evaluation text (validation_split_percentage is 0?)")

    collator = MNTPDataCollator(
        mask_id=mask_id,
        vocab_size=len(tokenizer),
        special_ids=frozenset(tokenizer.all_special_ids),
        mlm_probability=mntp.mlm_probability,
        all_mask=mntp.data_collator_type == "all_mask",
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        seed=args.seed,
    )

    class MNTPTrainer(AdapterTrainerMixin, Trainer):
        def peft_model(self):
            return model

        def _get_train_sampler(self, train_dataset=None):
            return SeededRandomSampler(train_dataset if train_dataset is not None else self.train_dataset,
                                       self.args.data_seed if self.args.data_seed is not None else self.args.seed)


    trainer = MNTPTrainer(
        model=model,
        args=args,
        train_dataset=BlockDataset(train_blocks),
        eval_dataset=BlockDataset(eval_blocks) if eval_blocks else None,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=masked_accuracy,
        preprocess_logits_for_metrics=argmax_logits,
    )
    return trainer, base_folder
