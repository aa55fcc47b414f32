"""Tiny decoder checkpoints built offline, for tests, the demo and benchmarks.

The tokenizer is a byte-level BPE trained on the spot on English prose that CPython ships
(``pydoc_data.topics``); the model is randomly initialised. Nothing is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

#: Special tokens per family, as the real tokenizers spell them; `bos` None means the tokenizer adds no BOS.
SPECIAL_TOKENS = {
    "llama": {"bos": "<s>", "eos": "</s>", "unk": "<unk>"},
    "mistral": {"bos": "<s>", "eos": "</s>", "unk": "<unk>"},
    "gemma": {"bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "pad": "<pad>"},
    "gemma2": {"bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "pad": "<pad>"},
    "qwen2": {"bos": None, "eos": "<|endoftext|>", "unk": None},
    "qwen3": {"bos": None, "eos": "<|endoftext|>", "unk": None},
    "ministral": {"bos": "<s>", "eos": "</s>", "unk": "<unk>"},
    "mixtral": {"bos": "<s>", "eos": "</s>", "unk": "<unk>"},
    "qwen2_moe": {"bos": None, "eos": "<|endoftext|>", "unk": None},
    "qwen3_moe": {"bos": None, "eos": "<|im_end|>", "unk": None, "pad": "<|endoftext|>"},
    "gemma3_text": {"bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "pad": "<pad>"},
    "phi3": {"bos": "<s>", "eos": "<|endoftext|>", "unk": "<unk>"},
    "olmo2": {"bos": None, "eos": "<|endoftext|>", "unk": None, "pad": "<|pad|>"},
    "granite": {"bos": None, "eos": "<|end_of_text|>", "unk": None, "pad": "<|pad|>"},
    "smollm3": {"bos": None, "eos": "<|im_end|>", "unk": None},
    "glm4": {"bos": "[gMASK]", "eos": "<|endoftext|>", "unk": None},
    "minicpm3": {"bos": "<s>", "eos": "<|im_end|>", "unk": "<unk>"},
    "olmo": {"bos": None, "eos": "<|endoftext|>", "unk": None, "pad": "<|padding|>"},
    "olmo3": {"bos": None, "eos": "<|endoftext|>", "unk": None, "pad": "<|pad|>"},
    "cohere": {"bos": "<BOS_TOKEN>", "eos": "<|END_OF_TURN_TOKEN|>", "unk": "<UNK>", "pad": "<PAD>"},
    "cohere2": {"bos": "<BOS_TOKEN>", "eos": "<|END_OF_TURN_TOKEN|>", "unk": "<UNK>", "pad": "<PAD>"},
    "starcoder2": {"bos": None, "eos": "<|endoftext|>", "unk": None},
    "gpt_oss": {"bos": None, "eos": "<|return|>", "unk": None, "pad": "<|endoftext|>"},
    "phi": {"bos": None, "eos": "<|endoftext|>", "unk": None},
    "exaone4": {"bos": None, "eos": "[|endofturn|]", "unk": "[UNK]", "pad": "[PAD]"},
    "ernie4_5": {"bos": "<s>", "eos": "</s>", "unk": "<unk>", "pad": "<pad>"},
    "hunyuan_v1_dense": {"bos": "<｜hy_begin▁of▁sentence｜>", "eos": "<｜hy_place▁holder▁no▁2｜>", "unk": None,
                         "pad": "<｜hy_▁pad▁｜>"},
    "seed_oss": {"bos": None, "eos": "<seed:eos>", "unk": None, "pad": "<seed:pad>"},
    "apertus": {"bos": "<s>", "eos": "</s>", "unk": "<unk>", "pad": "<pad>"},
    "arcee": {"bos": "<|begin_of_text|>", "eos": "<|end_of_text|>", "unk": None},
    "dots1": {"bos": None, "eos": "<|endoftext|>", "unk": None},
}


@lru_cache(maxsize=1)
def english_corpus() -> tuple[str, ...]:
    """Paragraphs of English prose from CPython's documentation topics."""
    from pydoc_data.topics import topics

    paragraphs = []
    for text in topics.values():
        for paragraph in re.split(r"\n\s*\n", text):
            paragraph = " ".join(paragraph.split())
            if len(paragraph.split()) >= 8 and not paragraph.startswith((">>>", "...")):
                paragraphs.append(paragraph)
    return tuple(paragraphs)


def train_tokenizer(
    family: str = "llama", vocab_size: int = 512, corpus: Iterable[str] | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the family's special tokens, trained on ``corpus`` (default:
    `english_corpus`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    special = SPECIAL_TOKENS[family]
    names = [t for t in (special.get("unk"), special.get("bos"), special["eos"], special.get("pad")) if t]
    tokenizer = Tokenizer(models.BPE(unk_token=special.get("unk")))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=names, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(english_corpus() if corpus is None else corpus, trainer)
    if special.get("bos"):
        bos = special["bos"]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
        )
    kwargs = {f"{k}_token": v for k, v in special.items() if v}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **kwargs)


def tiny_config(family: str, tokenizer, hidden_size: int = 32, num_layers: int = 2, **overrides):
    """A small config of the family's native model_type."""
    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden_size // 4,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.2,
    )
    kwargs.update(overrides)
    return AutoConfig.for_model(family, **kwargs)


def build_tiny_decoder(
    output: str | Path, family: str = "llama", seed: int = 0, hidden_size: int = 32, num_layers: int = 2, **overrides
) -> Path:
    """Saves a random tiny ``…ForCausalLM`` checkpoint with its tokenizer to ``output``; returns the folder."""
    tokenizer = train_tokenizer(family)
    config = tiny_config(family, tokenizer, hidden_size, num_layers, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    output = Path(output)
    model.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    return output
