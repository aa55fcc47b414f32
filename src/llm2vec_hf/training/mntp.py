"""Masked next-token prediction (MNTP), LLM2Vec's step 2, on the plain ``transformers.Trainer``.

The model is the family's ``…ForMNTP`` (the causal-LM head on the bidirectional body). The data is read and
grouped as the official run_mntp.py does (every line, empty ones included, tokenized with special tokens and cut
into blocks of ``max_seq_length``, 1,000 texts at a time). A fraction ``mlm_probability`` of the tokens that the
tokenizer did not add is selected; their inputs are replaced by the mask token (``default``: 80 % mask, 10 %
random token, 10 % unchanged, as BERT; ``all_mask``: 100 % mask); their labels keep the original token and every
other label is -100. The causal-LM loss shifts labels by one, so the masked token at position i is predicted
from the hidden state at position i-1, as LLM2Vec prescribes. Evaluation reports the accuracy of the masked
predictions with the same shift.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import Trainer

from ..loading.models import load_tokenizer
from ..loading.paths import resolve_local
from .checkpoints import AdapterTrainerMixin
from .data import DataError, load_hub_texts, read_raw_texts
from .lora import add_lora, enable_gradient_checkpointing, take_gradient_checkpointing
from .stage_model import load_model_for_stage

logger = logging.getLogger(__name__)


def mask_token_id(tokenizer, model, mask_token_type: str) -> int:
    """The id masked inputs are replaced with, chosen as the official run_mntp.py chooses it.

    A tokenizer that already has a mask token keeps it (the official script sets one only when there is none).
    Otherwise: ``blank`` is the vocabulary entry "_" (``convert_tokens_to_ids("_")``; with a SentencePiece
    vocabulary that is not what ``tokenizer("_")`` gives, which is "▁_"), ``eos`` the EOS token, ``mask`` a new
    "<mask>" token (the embeddings grow by one row).
    """
    if tokenizer.mask_token is not None:
        logger.info("The tokenizer has its own mask token %r: MNTP masks with it (as the official script)",
                    tokenizer.mask_token)
        return tokenizer.mask_token_id
    if mask_token_type == "eos":
        if tokenizer.eos_token_id is None:
            raise ValueError("mask_token_type eos: the tokenizer has no EOS token")
        return tokenizer.eos_token_id
    if mask_token_type == "mask":
        tokenizer.add_tokens(["<mask>"])
        tokenizer.mask_token = "<mask>"
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        return tokenizer.convert_tokens_to_ids("<mask>")
    blank = tokenizer.convert_tokens_to_ids("_")
    # The official script would silently mask with the unknown token here; that trains something else.
    if blank is None or (blank == tokenizer.unk_token_id and tokenizer.unk_token != "_"):
        raise ValueError('mask_token_type blank: the vocabulary has no token "_"; use eos or mask')
    return blank


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
        special = None
        if all("special_tokens_mask" in f for f in features):
            special = torch.ones((len(features), length), dtype=torch.bool)
            for row, feature in enumerate(features):
                mask = torch.as_tensor(feature["special_tokens_mask"], dtype=torch.bool)
                special[row, : len(mask)] = mask
        indices = [f.get("index") for f in features]
        input_ids, labels = self.mask(input_ids, attention_mask, None if None in indices else indices, special)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def masking_draws(self, shape: tuple[int, int], indices: list[int] | None):
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
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, indices: list[int] | None = None,
        special_tokens_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Selects and replaces tokens; ``special_tokens_mask`` (the tokenizer's, kept with each block, as the
        official collator reads it) marks tokens never selected; without it, every special-token id is."""
        uniforms, random_tokens, extra = self.masking_draws(tuple(input_ids.shape), indices)
        if special_tokens_mask is None:
            special_tokens_mask = torch.isin(input_ids, torch.tensor(sorted(self.special_ids) or [-1]))
        # Position 0 can be selected, as in the official collator: its label is never predicted under the
        # causal shift, but its input is masked all the same.
        eligible = attention_mask.bool() & ~special_tokens_mask.bool()
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


@contextmanager
def predicted_positions_only(model, labels: torch.Tensor):
    """Within this block, ``model``'s output embedding (its LM head) sees only the hidden states that predict a label
    (position i where ``labels[:, i + 1]`` is not -100), as one row; yields those labels in the same order, to pass
    as ``shift_labels``.

    The MNTP loss reads ``mlm_probability`` (20 %) of the positions, yet the causal-LM forward projects every
    position onto the vocabulary and keeps the float32 logits and their gradient: at 32 x 512 tokens and Llama 3's
    128k vocabulary, 8.4 GB of logits, and a fifth of Llama-3.2-1B's FLOPs per token (benchmarks/mntp_head.py).
    transformers can keep some logits (``logits_to_keep``), but only the same positions in every row. The family's
    own head code still runs on the kept rows (Gemma2's soft-capping, Cohere's and Granite's logit scales are per
    element) and its own loss function takes ``shift_labels``, so the loss and the gradients are the full
    projection's (tests/training/test_mntp_head.py).
    """
    targets = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    predicting = targets != -100

    def keep_predicting_positions(module, args):
        return (args[0][predicting.to(args[0].device)].unsqueeze(0), *args[1:])

    handle = model.get_output_embeddings().register_forward_pre_hook(keep_predicting_positions)
    try:
        yield targets[predicting].unsqueeze(0)
    finally:
        handle.remove()


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
    """Equal-length token blocks (rows of an int array) with the tokenizer's special-tokens mask of each."""

    def __init__(self, blocks, special_tokens_mask=None):
        self.blocks = np.asarray(blocks, dtype=np.int64) if not isinstance(blocks, np.ndarray) else blocks
        self.special_tokens_mask = special_tokens_mask

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = index % len(self.blocks)
        item = {"input_ids": self.blocks[row].tolist(), "index": index}
        if self.special_tokens_mask is not None:
            item["special_tokens_mask"] = self.special_tokens_mask[row].tolist()
        return item


#: The official script groups the tokenized texts with ``datasets.map(batched=True)``: 1,000 texts at a time,
#: each group's remainder shorter than a block dropped.
GROUP_TEXTS = 1000


def tokenize_into_blocks(tokenizer, texts: list[str], block_size: int, max_blocks: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of ``block_size`` tokens and their special-tokens masks, as the official run_mntp.py's
    ``group_texts``: each text tokenized with special tokens (an empty line still gives its BOS), texts
    concatenated 1,000 at a time, each group cut into blocks and its remainder dropped. ``max_blocks`` keeps the
    first blocks (evaluation)."""
    blocks, masks, total = [], [], 0
    for start in range(0, len(texts), GROUP_TEXTS):
        encoded = tokenizer(texts[start : start + GROUP_TEXTS], add_special_tokens=True,
                            return_special_tokens_mask=True)
        ids = np.fromiter((i for row in encoded["input_ids"] for i in row), dtype=np.int64)
        special = np.fromiter((m for row in encoded["special_tokens_mask"] for m in row), dtype=bool)
        usable = len(ids) // block_size * block_size
        if usable:
            blocks.append(ids[:usable].reshape(-1, block_size))
            masks.append(special[:usable].reshape(-1, block_size))
            total += usable // block_size
        if max_blocks and total >= max_blocks:
            break
    if not blocks:
        return np.zeros((0, block_size), dtype=np.int64), np.zeros((0, block_size), dtype=bool)
    blocks, masks = np.concatenate(blocks), np.concatenate(masks)
    if max_blocks:
        blocks, masks = blocks[:max_blocks], masks[:max_blocks]
    return blocks, masks


def masked_accuracy(eval_prediction) -> dict[str, float]:
    """Accuracy of the masked predictions: the prediction at i-1 against the label at i."""
    predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    predictions, labels = np.asarray(predictions)[:, :-1], np.asarray(labels)[:, 1:]
    mask = labels != -100
    return {"accuracy": float((predictions[mask] == labels[mask]).mean()) if mask.any() else float("nan")}


def argmax_logits(logits, labels):
    if isinstance(logits, tuple):  # the (batch, length, vocabulary) logits; MoE outputs start with the aux loss
        logits = next(t for t in logits if getattr(t, "ndim", 0) == 3)
    return logits.argmax(-1)


def load_texts(data_args) -> tuple[list[str], list[str]]:
    """Training and evaluation texts as the official run_mntp.py reads them: every line (empty ones included,
    nothing stripped); without validation data, the first ``validation_split_percentage`` % of the lines are held
    out (``train[:5%]`` / ``train[5%:]``)."""
    if data_args.train_file:
        train = read_raw_texts(data_args.train_file, data_args.text_column)
        if data_args.validation_file:
            evaluation = read_raw_texts(data_args.validation_file, data_args.text_column)
        else:
            train, evaluation = split_first_percent(train, data_args.validation_split_percentage)
    else:
        name, config = data_args.dataset_name, data_args.dataset_config_name
        train = load_hub_texts(name, config, "train", data_args.text_column, None, keep_empty=True)
        try:
            evaluation = load_hub_texts(name, config, "validation", data_args.text_column, None, keep_empty=True)
        except DataError:
            train, evaluation = split_first_percent(train, data_args.validation_split_percentage)
    if data_args.max_train_samples:
        train = train[: data_args.max_train_samples]
    return train, evaluation


def split_first_percent(texts: list[str], percentage: int) -> tuple[list[str], list[str]]:
    """``train[p%:]`` and ``train[:p%]`` of ``datasets`` (boundary rounded to the closest row)."""
    if percentage <= 0:
        return texts, []
    boundary = int(round(percentage * len(texts) / 100.0))
    return texts[boundary:], texts[:boundary]


def count_blocks(recipe) -> tuple[int, str]:
    """Training blocks of an MNTP recipe, counted with its tokenizer (no model loaded)."""
    data_args = recipe.data
    try:
        tokenizer = load_tokenizer(resolve_local(recipe.model.model_name_or_path))
    except Exception as error:  # noqa: BLE001 - offline Hub names, missing folders: all mean "cannot count here"
        raise DataError(f"no tokenizer for {recipe.model.model_name_or_path} here ({type(error).__name__})") from None
    train_texts, _ = load_texts(data_args)
    blocks, _ = tokenize_into_blocks(tokenizer, train_texts, data_args.max_seq_length)
    return len(blocks), f"{len(train_texts)} texts -> {len(blocks)} blocks of {data_args.max_seq_length} tokens"


class MNTPTrainer(AdapterTrainerMixin, Trainer):
    """The plain ``Trainer`` with adapter-only, staged checkpoints, drawing blocks in a ``SeededRandomSampler``, whose
    training loss projects onto the vocabulary only the positions that predict a masked token
    (`predicted_positions_only`)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        full_logits_needed = (return_outputs or not model.training or inputs.get("labels") is None  # evaluation
                              or self.label_smoother is not None or self.compute_loss_func is not None)
        if full_logits_needed:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        with predicted_positions_only(self.accelerator.unwrap_model(model), inputs["labels"]) as targets:
            return super().compute_loss(model, {**inputs, "shift_labels": targets}, False, num_items_in_batch)

    def _get_train_sampler(self, train_dataset=None):
        # The Trainer's one place to choose the training sampler (get_train_dataloader would repeat its accelerate
        # set-up around it).
        return SeededRandomSampler(train_dataset if train_dataset is not None else self.train_dataset,
                                   self.args.data_seed if self.args.data_seed is not None else self.args.seed)


def build_mntp_trainer(recipe, resume: str | None):
    """Reads data, loads the MNTP model with a fresh LoRA, and returns ``(trainer, base_folder)``."""
    from transformers import set_seed

    args, data_args, mntp = recipe.training, recipe.data, recipe.mntp
    train_texts, eval_texts = load_texts(data_args)
    model, tokenizer, base_folder = load_model_for_stage(recipe.model, for_mntp=True)
    mask_id = mask_token_id(tokenizer, model, mntp.mask_token_type)

    # Every block of the corpus is tokenized and shuffled, however few steps the run takes.
    train_blocks, train_special = tokenize_into_blocks(tokenizer, train_texts, data_args.max_seq_length)
    if not len(train_blocks):
        raise DataError(
            f"The training text has fewer than max_seq_length={data_args.max_seq_length} tokens: nothing to train on"
        )
    eval_blocks, eval_special = tokenize_into_blocks(tokenizer, eval_texts, data_args.max_seq_length,
                                                     data_args.max_eval_samples)
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
    if not len(eval_blocks) and args.eval_strategy != "no":
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

    trainer = MNTPTrainer(
        model=model,
        args=args,
        train_dataset=BlockDataset(train_blocks, train_special),
        eval_dataset=BlockDataset(eval_blocks, eval_special) if len(eval_blocks) else None,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=masked_accuracy,
        preprocess_logits_for_metrics=argmax_logits,
    )
    return trainer, base_folder
