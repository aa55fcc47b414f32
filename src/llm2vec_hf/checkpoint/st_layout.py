"""The sentence-transformers files of a checkpoint: which layout (stock modules where they are exact, the LLM2Vec
module elsewhere; docs/architecture.md, "sentence-transformers layout"), and the files of each."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from ..errors import LLM2VecError
from ..loading.json_files import read_json, write_config_json
from ..loading.models import load_bidirectional
from ..modeling.encoding_settings import EncodingSettings
from ..modeling.modeling_llm2vec import encode_with
from ..modeling.tokenization_llm2vec import load_reference_tokenizer
from ..modeling.sentence_transformers_llm2vec import (
    TRANSFORMER_CONFIG,
    write_model_config,
    write_pooling_config,
    write_transformer_config,
)
from ..modeling.serving_engines import STOCK_POOLING, STOCK_TOLERANCE, TEI_POOLING

logger = logging.getLogger(__name__)


ST_MODULE_TYPE = "sentence_transformers_llm2vec.LLM2VecTransformer"

#: sentence-transformers layouts `export` writes (docs/architecture.md, "sentence-transformers layout"): ``remote``
#: is the LLM2Vec module (exact, needs trust_remote_code); ``stock`` is sentence-transformers' own Transformer +
#: Pooling (no remote code; exact only for some settings); ``auto`` writes stock where it is exact, else remote.
ST_LAYOUTS = ("auto", "remote", "stock")

#: Inputs on which the stock layout is measured against the exact vectors: plain texts and instruction pairs,
#: ASCII and not, short and long.
STOCK_SAMPLE = [
    "The quick brown fox jumps over the lazy dog.",
    "a",
    "Ünïcödé naïve café — 日本語のテキスト 😀",
    "Transformers read every token at once; bidirectional attention lets each token see the whole text.",
    ["Given a web search query, retrieve relevant passages", "how do transformers attend to tokens?"],
    ["Given a web search query, retrieve relevant passages", "x"],
    ["Classify the sentiment of the review ", "I loved every minute of it, and the ending too."],
]


#: Texts on which the tokenizer stock modules load must give the exact path's ids (`stock_tokenizer_differs`):
#: digits (runs, decimals, grouped), punctuation runs, whitespace runs, several scripts, combining marks and
#: ligatures (normalizers), emoji; the tokenizer's own special and added tokens are added per tokenizer.
TOKENIZER_PROBES = [
    "0 7 42 123 2026 1234567 3.14159 1,000,000 -17 1e-5 v2.0.1 0x1F 12:30 2026-12-07 ①²",
    "Hello, world! (a) [b] {c} <d> \"e\" 'f' ... ?! ;: -- — – / \\ | @ # $ % ^ & * _ + = ~ `",
    "a  b   c    d\t\te\n\nf \r\n g  ",
    "   leading and trailing   ",
    "Ünïcödé naïve café Straße ÆØÅ e\u0301 \ufb01 日本語のテキスト 中文 한국어 Ελληνικά русский עברית العربية हिन्दी",
    "😀 👍🏽 👨‍👩‍👧 🇫🇷 ★ → ∑ ∞",
    "CamelCaseWords snake_case_words https://example.com/a?b=c&d=1 user@example.org #hashtag",
    "don't won't it's I'm y'all 'quoted' \"double\"",
]


def tokenizer_probes(tokenizer) -> list[str]:
    """`TOKENIZER_PROBES` plus each special and added token of ``tokenizer`` alone, glued to words and spaced."""
    specials = sorted({str(token) for token in [*tokenizer.all_special_tokens, *tokenizer.get_added_vocab()]})
    return TOKENIZER_PROBES + [f"{token}" for token in specials] + [f"x{token}y {token} z" for token in specials]


#: Families whose registered tokenizer class some transformers release loads whatever the folder's
#: tokenizer_config.json says (5.24 and later: qwen2), besides those the installed release lists.
FORCED_TOKENIZER_FAMILIES = ("qwen2",)


def registered_tokenizer(folder: Path, model_type: str):
    """``folder``'s tokenizer loaded with the class transformers registers for ``model_type``, where a release
    forces that class on such folders (None elsewhere, and when the class is the generic one, which reads
    tokenizer.json as it is)."""
    from transformers.models.auto import tokenization_auto
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES, tokenizer_class_from_name

    forced = set(FORCED_TOKENIZER_FAMILIES) | set(getattr(tokenization_auto, "MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS", ()))
    name = TOKENIZER_MAPPING_NAMES.get(model_type) if model_type in forced else None
    tokenizer_class = tokenizer_class_from_name(name) if name else None
    if tokenizer_class is None or tokenizer_class.__name__ in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        return None
    return tokenizer_class.from_pretrained(str(folder))


def stock_tokenizer_differs(stock_tokenizer, reference, texts: Iterable[str]) -> str | None:
    """None when ``stock_tokenizer`` gives ``reference``'s ids (special tokens added, as both encode) on every
    text, else which text differs and how."""
    for text in texts:
        got, want = stock_tokenizer(text)["input_ids"], reference(text)["input_ids"]
        if list(got) != list(want):
            return (f"the tokenizer sentence-transformers loads ({type(stock_tokenizer).__name__}) gives other ids "
                    f"than the exact path on {text[:40]!r} ({len(got)} vs {len(want)} tokens)")
    return None


def stock_is_exact(settings: EncodingSettings) -> str | None:
    """None when stock Transformer + Pooling modules (and TEI, which pools the same way) compute what LLM2Vec
    computes for these settings, else why not.

    Stock modules read ``prompt + text`` and pool over all of it, BOS included; LLM2Vec pools only the text's own
    tokens (``skip_instruction``), cuts texts word-wise to doc_max_length, wraps them in the text template and
    appends eos_text. The last token, the first token (BOS) and, without skip_instruction, the mean over all
    tokens are the same in both when none of the rest applies.
    """
    mode = settings.pooling_mode
    if mode in ("mean", "weighted_mean") and settings.skip_instruction:
        return f"{mode} pooling over the text's own tokens (stock pooling also pools BOS and the instruction)"
    if mode == "eos_token" and settings.eos_text:
        return f"eos_token pooling appends {settings.eos_text!r} to each text, which stock modules do not"
    if settings.text_template:
        return "the text template wraps each input, which stock modules do not"
    if settings.doc_max_length < settings.max_length:
        return (f"texts are cut word-wise to doc_max_length={settings.doc_max_length} tokens, which stock modules "
                f"do not (exact with --doc-max-length {settings.max_length} or more)")
    return None


def write_sentence_transformers_files(
    folder: Path,
    settings: EncodingSettings,
    prompts: dict[str, str],
    model=None,
    tokenizer=None,
    st_modules: str = "remote",
) -> dict[str, Any] | None:
    """Writes the sentence-transformers files in the layout ``st_modules`` asks for (see `ST_LAYOUTS`), and
    1_Pooling/config.json whenever TEI has a pooling for the mode. Returns the measured deviation of the stock
    layout from the exact vectors when stock modules were written or tried, else None.

    A stock layout is loaded back with sentence-transformers (no remote code) and measured on `STOCK_SAMPLE`
    against ``model``'s exact vectors; ``auto`` keeps it only when it is exact.
    """
    if st_modules not in ST_LAYOUTS:
        raise LLM2VecError(f"Unknown sentence-transformers layout {st_modules!r}; choose one of {', '.join(ST_LAYOUTS)}")
    mode = settings.pooling_mode
    if mode in TEI_POOLING:
        write_pooling_config(str(folder / "1_Pooling"), model.config.hidden_size if model is not None else None,
                             TEI_POOLING[mode])
    why_not = stock_is_exact(settings)
    if st_modules == "remote" or (st_modules == "auto" and why_not):
        if st_modules == "auto":
            logger.info("sentence-transformers: the LLM2Vec module (trust_remote_code=True), because %s", why_not)
        write_remote_layout(folder, settings, prompts)
        return None
    if model is None:
        raise LLM2VecError("A stock sentence-transformers layout is measured against the model; none was given")
    write_stock_layout(folder, settings, prompts, model.config.hidden_size)
    deviation = measure_stock_layout(folder, model, tokenizer, settings)
    deviation["exact_by_settings"] = why_not is None
    tokenizer_differs = deviation.pop("tokenizer_differs")
    # exact by rule: the settings allow it and the tokenizer stock modules load gives the exact ids on every probe
    why_not = why_not or tokenizer_differs
    deviation["why_not_exact"] = why_not
    if st_modules == "auto" and (why_not or deviation["max_abs"] > STOCK_TOLERANCE):
        logger.info("sentence-transformers: the LLM2Vec module, because %s",
                    why_not or f"stock modules differ by {deviation['max_abs']:.2e} on the sample")
        write_remote_layout(folder, settings, prompts)
        deviation["layout"] = "remote"
    else:
        deviation["layout"] = "stock"
    return deviation


def _model_config(prompts: dict[str, str]) -> dict[str, Any]:
    """config_sentence_transformers.json's keys as ``SentenceTransformer.save`` writes them."""
    # stored as LLM2Vec reads an instruction (instruction.strip() + " " + text): what the LLM2Vec module reads either
    # way, and what stock modules and TEI, which prepend the prompt as it is, then read too
    prompts = {name: (text.strip() + " " if text.strip() else "") for name, text in prompts.items()}
    return {
        "__version__": {"pytorch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
                        "transformers": transformers.__version__},
        "default_prompt_name": None,
        "model_type": "SentenceTransformer",
        "prompts": {"document": "", **prompts},
        "similarity_fn_name": "cosine",
    }


# sentence-transformers writes modules.json, config_sentence_transformers.json and sentence_bert_config.json only
# from a loaded model in `SentenceTransformer.save`, which also rewrites the weights; export has written those
# already, so it writes the same keys itself (tests/checkpoint/test_export.py checks them against sentence-transformers' own
# save of the exported checkpoint).
def write_remote_layout(folder: Path, settings: EncodingSettings, prompts: dict[str, str]) -> None:
    write_config_json(folder / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": ST_MODULE_TYPE}])
    write_transformer_config(str(folder), settings.max_length)
    write_model_config(str(folder), _model_config(prompts))


def write_stock_layout(folder: Path, settings: EncodingSettings, prompts: dict[str, str], dimension: int) -> None:
    mode = STOCK_POOLING[settings.pooling_mode]
    write_pooling_config(str(folder / "1_Pooling"), dimension, mode)
    write_config_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": f"{Transformer.__module__}.{Transformer.__name__}"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": f"{Pooling.__module__}.{Pooling.__name__}"},
    ])
    saved = dict(TRANSFORMER_CONFIG)
    tokenizer_config = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    if not tokenizer_config.get("pad_token") and tokenizer_config.get("eos_token"):
        # stock modules pad with the tokenizer's pad token; LLM2Vec pads with EOS (padded positions are masked),
        # and the tokenizer files keep the source's special tokens, so the pad token is given at load
        eos = tokenizer_config["eos_token"]
        saved["processor_kwargs"] = {"pad_token": eos.get("content") if isinstance(eos, dict) else eos}
    write_transformer_config(str(folder), settings.max_length, saved)
    write_model_config(str(folder), _model_config(prompts), stock=True)


def measure_stock_layout(folder: Path, model, tokenizer, settings: EncodingSettings) -> dict[str, Any]:
    """Loads ``folder``'s stock layout with sentence-transformers (no remote code) and compares its vectors on
    `STOCK_SAMPLE` with ``model``'s exact LLM2Vec vectors: cosine (mean, min) and the largest |difference|."""
    model_type = model.config.model_type
    reference = load_reference_tokenizer(str(folder), model_type) or tokenizer
    if next(model.parameters()).is_meta:  # a streamed export: the weights are in ``folder`` already
        model = load_bidirectional(str(folder), dtype=next(model.parameters()).dtype)[0]
    exact = encode_with(model, reference, STOCK_SAMPLE, settings)
    del model  # a model loaded here is freed before sentence-transformers loads its own copy
    stock = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    probes = tokenizer_probes(reference)
    # what sentence-transformers loads here, and the family's own class, which other transformers releases load
    # for the same folder (5.25 forces Qwen2Tokenizer on qwen2 where 5.2 reads tokenizer.json as it is)
    loaded = [stock[0].tokenizer, registered_tokenizer(folder, model_type)]
    tokenizer_differs = next(filter(None, (stock_tokenizer_differs(candidate, reference, probes)
                                           for candidate in loaded if candidate is not None)), None)
    # one batch per instruction (its prompt), so that padding is part of what is measured
    by_instruction: dict[str, list[int]] = {}
    for i, item in enumerate(STOCK_SAMPLE):
        by_instruction.setdefault(item[0].strip() if isinstance(item, list) else "", []).append(i)
    rows: dict[int, Any] = {}
    try:
        for instruction, indices in by_instruction.items():
            texts = [STOCK_SAMPLE[i][1] if isinstance(STOCK_SAMPLE[i], list) else STOCK_SAMPLE[i] for i in indices]
            vectors = stock.encode(texts, prompt=instruction + " " if instruction else None, convert_to_tensor=True)
            rows.update(zip(indices, vectors.float().cpu()))
    finally:
        del stock
    got = torch.stack([rows[i] for i in range(len(STOCK_SAMPLE))])
    cosine = torch.nn.functional.cosine_similarity(got, exact, dim=-1)
    return {"inputs": len(STOCK_SAMPLE), "mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
            "max_abs": float((got - exact).abs().max()), "tokenizer_differs": tokenizer_differs}


def report_stock_layout(stock: dict[str, Any] | None) -> None:
    if stock is None:
        return
    figures = (f"mean cosine {stock['mean_cosine']:.6f}, min cosine {stock['min_cosine']:.6f}, max |difference| "
               f"{stock['max_abs']:.2e} to the exact LLM2Vec vectors on {stock['inputs']} sample inputs")
    if stock["layout"] == "stock" and (stock["why_not_exact"] or stock["max_abs"] > STOCK_TOLERANCE):
        logger.warning("sentence-transformers: stock modules (no remote code), NOT the exact LLM2Vec vectors: %s%s",
                       figures, f"; {stock['why_not_exact']}" if stock["why_not_exact"] else "")
    else:
        logger.info("sentence-transformers: %s modules; %s", stock["layout"], figures)
