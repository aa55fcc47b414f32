#!/usr/bin/env python
"""Write reference vectors from the OFFICIAL llm2vec 0.2.3 library into tests/fixtures/reference/.

CI never runs this script: its outputs are committed. It runs in a separate virtual environment that
holds the official library (never install llm2vec into the project's own environment):

    python -m venv /work/refenv
    /work/refenv/bin/pip install torch==2.13.0          # first: the local CPU wheel
    /work/refenv/bin/pip install llm2vec==0.2.3 "transformers==4.44.2"
    HF_HUB_OFFLINE=1 /work/refenv/bin/python scripts/make_reference_fixtures.py

(run from the repository root; `--only arch`, `--only migration` or `--only tokenizers` regenerates one part.)

What it writes (see tests/fixtures/reference/README.md):
  <arch>/model/          tiny random checkpoint (llama, mistral, gemma, qwen2) + trained tokenizer
  <arch>/reference.json  vectors from llm2vec.LLM2Vec.from_pretrained(...).encode(...)
  migration/base/        tiny llama base (copy of llama/model)
  migration/mntp/        MNTP LoRA adapter in the layout run_mntp.py writes (+ config.json like the hub repos)
  migration/supervised/  supervised LoRA adapter in the layout run_supervised.py writes (+ llm2vec_config.json)
  migration/reference.json
  tokenizers/<name>/model/  tiny checkpoints whose tokenizers are NOT the family defaults (own special tokens,
                         SentencePiece-style and byte-level vocabularies, 4.44 tokenizer classes that add BOS/EOS)
  tokenizers/reference.json  their vectors (every pooling mode, eos_token included) and token ids

Everything is deterministic: fixed seeds, a BPE tokenizer trained on CPython's pydoc_data.topics, float32.

Qwen2: llm2vec 0.2.3's Qwen2BiModel does not override `_update_causal_mask`, so under "sdpa" and "eager"
attention it keeps transformers' causal mask (only flash-attention-2 is bidirectional there, via the
attention modules' is_causal=False). Our reference for qwen2 is the official code with LlamaBiModel's
masking rule applied (a fully bidirectional padding mask); see `patch_qwen2_bidirectional`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# --- environment: must be set before huggingface_hub / transformers are imported ---------------------
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_TMP_ROOT = Path(tempfile.mkdtemp(prefix="l2v-ref-"))
# A private, empty hub cache: the migration part puts the tiny base model there under a repo id, as the
# official MNTP adapters name their base model by hub id.
os.environ["HF_HOME"] = str(_TMP_ROOT / "hf_home")
os.environ["HF_HUB_CACHE"] = str(_TMP_ROOT / "hf_home" / "hub")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed.tensor  # noqa: E402,F401  (peft 0.21.2 touches torch.distributed.tensor without importing it)
import transformers  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    GemmaConfig,
    GemmaForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import llm2vec  # noqa: E402
from llm2vec import LLM2Vec  # noqa: E402
from llm2vec.models import LlamaBiForMNTP, LlamaBiModel, Qwen2BiModel  # noqa: E402
from llm2vec.version import __version__ as LLM2VEC_VERSION  # noqa: E402
import peft  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

transformers.logging.set_verbosity_error()

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "tests" / "fixtures" / "reference"

ARCHS = ["llama", "mistral", "gemma", "qwen2"]
POOLING_MODES = ["mean", "weighted_mean", "eos_token", "last_token", "bos_token"]
BATCH_SIZE = 4
FIXTURE_ORG = "llm2vec-hf-fixtures"  # never an official hub name
VOCAB_SIZE = 400

# --------------------------------------------------------------------------------------------------
# Inputs. No empty strings, no "!@#$%^&*()" (llm2vec's internal separator); "_" only in one migration text.
# --------------------------------------------------------------------------------------------------
LONG_SHORT = (
    "A function definition is an executable statement. Its execution binds the function name in the "
    "current local namespace to a function object, a wrapper around the executable code for the "
    "function.\nThis function object contains a reference to the current global namespace as the global "
    "namespace to be used when the function is called."
)
LONG_DEFAULT = (
    "The import statement is executed in two steps: find a module, loading and initializing it if "
    "necessary; then define a name or names in the local namespace for the scope where the import "
    "statement occurs. When the statement contains multiple clauses (separated by commas) the two steps "
    "are carried out separately for each clause, just as though the clauses had been separated out into "
    "individual import statements.\n\n"
    "The details of the first step, finding and loading modules, are described in greater detail in the "
    "section on the import system, which also describes the various types of packages and modules that "
    "can be imported, as well as all the hooks that can be used to customize the import system.   Note "
    "that failures in this step may indicate either that the module could not be located, or that an "
    "error occurred while initializing the module, which includes execution of the module's code.\n\n"
    "The from form uses a slightly more complex process: find the module specified in the from clause, "
    "loading and initializing it if necessary; for each of the identifiers specified in the import "
    "clauses, check if the imported module has an attribute by that name, and if not, attempt to import "
    "a submodule with that name and then check the imported module again for that attribute; if the "
    "attribute is not found, an error is raised; otherwise, a reference to that value is stored in the "
    "local namespace, using the name in the as clause if it is present, otherwise using the attribute name."
)

PLAIN_COMMON = [
    "The quick brown fox jumps over the lazy dog.",
    "Python evaluates expressions from left to right, but the right-hand side of an assignment first.",
    "Café, naïve façade, jalapeño and crème brûlée: déjà vu!",
    "Tokyo 東京 and Beijing 北京 are capitals.",
    "Launch 🚀 party 🎉 tonight 😀",
    "Hello",
    "x",
    "  Leading and trailing whitespace  ",
]
# llm2vec cuts texts longer than doc_max_length word-wise; a single "word" longer than that becomes ""
# (and an empty text is then mean-pooled over the whole padded batch). So the unspaced CJK sentence
# (33 tokens) only appears with the default doc_max_length 400, never with 24.
PLAIN_SHORT = PLAIN_COMMON + [LONG_SHORT]
PLAIN_DEFAULT = PLAIN_COMMON + ["東京は日本の首都です。", LONG_DEFAULT]

INSTR_SEARCH = "Given a web search query, retrieve relevant passages that answer the query:"
PAIRS = [
    [INSTR_SEARCH, "how much protein should a female eat"],
    ["Retrieve duplicate questions", "What is the capital of France?"],
    ["   Classify the sentiment of the review   ", "I loved this movie, it was fantastic!"],
    ["Find the matching document", "Crème brûlée 東京 😀"],
    ["Represent the word", "x"],
    [INSTR_SEARCH, "The quick brown fox jumps over the lazy dog."],
    [INSTR_SEARCH, LONG_SHORT],
]

LENGTHS_SHORT = (32, 24)
LENGTHS_DEFAULT = (512, 400)


def case_plan(arch: str):
    """(pooling_mode, skip_instruction, (max_length, doc_max_length), input_set_name, inputs)."""
    modes = [m for m in POOLING_MODES if not (arch == "qwen2" and m == "bos_token")]
    plan = []
    # full grid with the short lengths: exercises doc_max_length cutting and max_length truncation
    for mode in modes:
        for skip in (True, False):
            plan.append((mode, skip, LENGTHS_SHORT, "plain", PLAIN_SHORT))
            plan.append((mode, skip, LENGTHS_SHORT, "pairs", PAIRS))
    # defaults (512/400): every mode on plain texts (one is > 512 tokens), mean on pairs
    for mode in modes:
        for skip in (True, False):
            plan.append((mode, skip, LENGTHS_DEFAULT, "plain", PLAIN_DEFAULT))
    for skip in (True, False):
        plan.append(("mean", skip, LENGTHS_DEFAULT, "pairs", PAIRS))
    return plan


# --------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------
SPECIALS = {
    # order = ids 0..n-1 in the vocabulary
    "llama": dict(order=["<unk>", "<s>", "</s>"], bos="<s>", eos="</s>", unk="<unk>", pad=None),
    "mistral": dict(order=["<unk>", "<s>", "</s>"], bos="<s>", eos="</s>", unk="<unk>", pad=None),
    "gemma": dict(order=["<pad>", "<eos>", "<bos>", "<unk>"], bos="<bos>", eos="<eos>", unk="<unk>", pad="<pad>"),
    # like real Qwen2: no BOS at all, nothing added by the post-processor
    "qwen2": dict(
        order=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos=None,
        eos="<|endoftext|>",
        unk=None,
        pad="<|endoftext|>",
    ),
}


def training_corpus():
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def build_tokenizer(arch: str) -> PreTrainedTokenizerFast:
    spec = SPECIALS[arch]
    tok = Tokenizer(models.BPE(unk_token=spec["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in spec["order"]],
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    for i, t in enumerate(spec["order"]):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    if spec["bos"] is not None:
        bos = spec["bos"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tok.token_to_id(bos))],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    kwargs = {k + "_token": spec[k] for k in ("bos", "eos", "unk", "pad") if spec[k] is not None}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],  # like real Llama/Qwen tokenizers: no token_type_ids
        **kwargs,
    )
    return fast


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------
def build_config(arch: str, tok: PreTrainedTokenizerFast):
    common = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.2,  # larger than the usual 0.02, so that tokens really differ in outputs
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        torch_dtype="float32",
    )
    if arch == "llama":
        cfg, cls = LlamaConfig(pad_token_id=None, **common), LlamaForCausalLM
    elif arch == "mistral":
        # like Mistral-7B-Instruct-v0.2 (the official LLM2Vec Mistral base): no sliding window
        cfg, cls = MistralConfig(pad_token_id=None, sliding_window=None, **common), MistralForCausalLM
    elif arch == "gemma":
        cfg, cls = (
            GemmaConfig(head_dim=8, hidden_activation="gelu_pytorch_tanh", pad_token_id=tok.pad_token_id, **common),
            GemmaForCausalLM,
        )
    elif arch == "qwen2":
        common["bos_token_id"] = tok.eos_token_id  # as in real Qwen2 configs (never added by the tokenizer)
        cfg, cls = Qwen2Config(pad_token_id=None, use_sliding_window=False, **common), Qwen2ForCausalLM
    else:
        raise ValueError(arch)
    cfg._name_or_path = f"{FIXTURE_ORG}/tiny-random-{arch}"
    return cfg, cls


def build_model(arch: str, tok: PreTrainedTokenizerFast, seed: int):
    cfg, cls = build_config(arch, tok)
    torch.manual_seed(seed)
    model = cls(cfg)  # normal(0, initializer_range=0.2) init for linears and embeddings
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                # random norm weights, so that e.g. Gemma's (1 + w) convention is actually tested
                base = 0.0 if arch == "gemma" else 1.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):  # qwen2 q/k/v biases
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    model.config._name_or_path = cfg._name_or_path
    model.eval()
    return model


def save_checkpoint(model, tok, path: Path):
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg.get("_name_or_path", "").startswith(FIXTURE_ORG), cfg.get("_name_or_path")


# --------------------------------------------------------------------------------------------------
# Official-library helpers
# --------------------------------------------------------------------------------------------------
_ORIGINAL_QWEN2_MASK = Qwen2BiModel._update_causal_mask


def patch_qwen2_bidirectional():
    """Known defect of llm2vec 0.2.3: Qwen2BiModel inherits Qwen2Model._update_causal_mask, so it stays
    causal under sdpa/eager. The reference applies LlamaBiModel's rule instead (same signature in
    transformers 4.44.2): a zero (fully visible) mask plus the padding mask."""
    Qwen2BiModel._update_causal_mask = LlamaBiModel._update_causal_mask


def unpatch_qwen2():
    Qwen2BiModel._update_causal_mask = _ORIGINAL_QWEN2_MASK


def first_token_sensitivity(l2v: LLM2Vec) -> float:
    """Max |change| of the first token's output when only the last token changes (0 => causal)."""
    tok = l2v.tokenizer
    enc = tok(["The quick brown fox jumps over the lazy dog"], return_tensors="pt")
    ids = enc["input_ids"].clone()
    special = set(tok.all_special_ids)
    new_last = next(i for i in range(10, len(tok)) if i not in special and i != int(ids[0, -1]))
    ids2 = ids.clone()
    ids2[0, -1] = new_last
    # also with left padding in a batch of two
    with torch.no_grad():
        h1 = l2v.model(input_ids=ids, attention_mask=enc["attention_mask"]).last_hidden_state
        h2 = l2v.model(input_ids=ids2, attention_mask=enc["attention_mask"]).last_hidden_state
    return float((h1[0, 0] - h2[0, 0]).abs().max())


def first_token_sensitivity_padded(l2v: LLM2Vec) -> float:
    tok = l2v.tokenizer
    enc = tok(["The quick brown fox jumps over the lazy dog", "A dog"], return_tensors="pt", padding=True)
    ids = enc["input_ids"].clone()
    special = set(tok.all_special_ids)
    new_last = next(i for i in range(10, len(tok)) if i not in special and i != int(ids[1, -1]))
    ids2 = ids.clone()
    ids2[1, -1] = new_last
    first_real = int((enc["attention_mask"][1] == 0).sum())
    with torch.no_grad():
        h1 = l2v.model(input_ids=ids, attention_mask=enc["attention_mask"]).last_hidden_state
        h2 = l2v.model(input_ids=ids2, attention_mask=enc["attention_mask"]).last_hidden_state
    return float((h1[1, first_real] - h2[1, first_real]).abs().max())


def assert_no_empty_after_cut(l2v: LLM2Vec, inputs):
    """Guard against llm2vec's degenerate path: a text cut to "" is mean-pooled over the padded batch."""
    for item in inputs:
        instr, text = ("", item) if isinstance(item, str) else item
        converted = l2v._convert_to_str(instr, text)
        doc = converted.split("!@#$%^&*()")[1]
        assert doc.strip(), f"text cut to empty by doc_max_length: {text[:40]!r}"


def encode(l2v: LLM2Vec, inputs):
    emb = l2v.encode(inputs, batch_size=BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False)
    assert emb.dtype == np.float32 and emb.shape == (len(inputs), l2v.model.config.hidden_size)
    assert np.isfinite(emb).all()
    return emb


def f32_list(row) -> list:
    """The float32 outputs at full float32 precision: each number is the shortest decimal that reads back
    (np.float32(value)) as exactly the same float32 -- half the size of the widened float64's repr."""
    row = np.asarray(row, dtype=np.float32)
    out = [float(str(x)) for x in row]  # numpy's str(float32) is the shortest round-trip repr
    assert np.array_equal(np.asarray(out, dtype=np.float32), row), "float32 round trip failed"
    return out


def write_json(path: Path, obj):
    """Indented JSON with one embedding row per line (rows are written compactly)."""
    rows = {}

    def mark(o):
        if isinstance(o, dict):
            return {k: (mark_rows(v) if k == "embeddings" else mark(v)) for k, v in o.items()}
        if isinstance(o, list):
            return [mark(v) for v in o]
        return o

    def mark_rows(emb):
        out = []
        for r in emb:
            key = f"@@ROW{len(rows)}@@"
            rows[key] = json.dumps(r)
            out.append(key)
        return out

    text = json.dumps(mark(obj), indent=1, ensure_ascii=False)
    for key, row in rows.items():
        text = text.replace(f'"{key}"', row, 1)
    path.write_text(text + "\n", encoding="utf-8")
    # round-trip check
    back = json.loads(path.read_text(encoding="utf-8"))
    assert back == json.loads(json.dumps(obj)), "JSON round trip failed"


def versions():
    return {
        "llm2vec_version": LLM2VEC_VERSION,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "peft_version": peft.__version__,
    }


def check_environment():
    assert LLM2VEC_VERSION == "0.2.3", LLM2VEC_VERSION
    assert transformers.__version__ == "4.44.2", transformers.__version__
    if Path(sys.prefix).resolve() == (REPO_ROOT / ".venv").resolve():
        raise SystemExit("run this with the separate reference venv (e.g. /work/refenv), not the project's .venv")


# --------------------------------------------------------------------------------------------------
# Part 1: per-architecture references
# --------------------------------------------------------------------------------------------------
def make_arch(arch: str, seed: int):
    t0 = time.time()
    arch_dir = OUT / arch
    model_dir = arch_dir / "model"
    tok = build_tokenizer(arch)
    model = build_model(arch, tok, seed)
    save_checkpoint(model, tok, model_dir)
    del model

    # tokenizer sanity: special tokens are recognised inside raw text
    t = PreTrainedTokenizerFast.from_pretrained(model_dir)
    eos = SPECIALS[arch]["eos"]
    ids = t("hello " + eos, add_special_tokens=False)["input_ids"]
    assert ids[-1] == t.eos_token_id, (arch, ids)
    with_special = t("hello")["input_ids"]
    if SPECIALS[arch]["bos"] is not None:
        assert with_special[0] == t.bos_token_id
    else:
        assert with_special == t("hello", add_special_tokens=False)["input_ids"]

    notes = []
    if arch == "qwen2":
        unpatch_qwen2()
        l2v = LLM2Vec.from_pretrained(str(model_dir), torch_dtype=torch.float32)
        s_plain, s_pad = first_token_sensitivity(l2v), first_token_sensitivity_padded(l2v)
        print(f"[qwen2] UNPATCHED official Qwen2BiModel (sdpa): first-token change = {s_plain:.3g} / padded {s_pad:.3g}")
        assert s_plain == 0.0 and s_pad == 0.0, "expected the known causal-mask defect"
        patch_qwen2_bidirectional()
        notes.append(
            "llm2vec 0.2.3 Qwen2BiModel keeps the causal mask under sdpa/eager (defect). These vectors are "
            "the official code with LlamaBiModel._update_causal_mask applied to Qwen2BiModel (fully "
            "bidirectional padding mask)."
        )

    l2v = LLM2Vec.from_pretrained(str(model_dir), torch_dtype=torch.float32)
    attn_impl = l2v.model.config._attn_implementation
    s_plain, s_pad = first_token_sensitivity(l2v), first_token_sensitivity_padded(l2v)
    print(f"[{arch}] bidirectional check ({attn_impl}): first-token change = {s_plain:.3g} / padded {s_pad:.3g}")
    assert s_plain > 1e-4 and s_pad > 1e-4, f"{arch}: reference is not bidirectional"

    # eager must agree with sdpa
    l2v_eager = LLM2Vec.from_pretrained(str(model_dir), torch_dtype=torch.float32, attn_implementation="eager")
    assert first_token_sensitivity(l2v_eager) > 1e-4
    e1, e2 = encode(l2v, PLAIN_SHORT), encode(l2v_eager, PLAIN_SHORT)
    diff = float(np.abs(e1 - e2).max())
    print(f"[{arch}] sdpa vs eager max |diff| = {diff:.3g}")
    assert diff < 1e-4

    cases = []
    for mode, skip, (max_len, doc_max), set_name, inputs in case_plan(arch):
        l2v = LLM2Vec.from_pretrained(
            str(model_dir),
            pooling_mode=mode,
            max_length=max_len,
            doc_max_length=doc_max,
            skip_instruction=skip,
            torch_dtype=torch.float32,
        )
        assert (l2v.pooling_mode, l2v.max_length, l2v.doc_max_length, l2v.skip_instruction) == (mode, max_len, doc_max, skip)
        assert l2v.tokenizer.padding_side == "left"
        assert_no_empty_after_cut(l2v, inputs)
        emb = encode(l2v, inputs)
        cases.append(
            {
                "pooling_mode": mode,
                "skip_instruction": skip,
                "max_length": max_len,
                "doc_max_length": doc_max,
                "batch_size": BATCH_SIZE,
                "input_set": set_name,
                "inputs": inputs,
                "embeddings": [f32_list(r) for r in emb],
            }
        )
    # vectors must really depend on the inputs and on the settings
    first = np.array(cases[0]["embeddings"])
    assert np.abs(first[0] - first[1]).max() > 1e-3
    if arch == "qwen2":
        unpatch_qwen2()

    doc = {
        **versions(),
        "arch": arch,
        "model_dir": "model",
        "loader": "llm2vec.LLM2Vec.from_pretrained(model_dir, pooling_mode=..., max_length=..., doc_max_length=..., "
        "skip_instruction=..., torch_dtype=torch.float32) (enable_bidirectional=True, default sdpa attention); "
        "encode(inputs, batch_size=4, convert_to_numpy=True, show_progress_bar=False)",
        "attn_implementation": attn_impl,
        "notes": notes,
        "cases": cases,
    }
    write_json(arch_dir / "reference.json", doc)
    print(f"[{arch}] {len(cases)} cases written in {time.time() - t0:.1f}s")


# --------------------------------------------------------------------------------------------------
# Part 2: migration fixtures (official two-stage checkpoints: base + MNTP adapter + supervised adapter)
# --------------------------------------------------------------------------------------------------
LORA_R = 4
LORA_ALPHA = 2 * LORA_R  # run_mntp.py / run_supervised.py: lora_alpha = 2 * lora_r
LORA_DROPOUT = 0.05
# run_mntp.py's initialize_peft list (Llama/Mistral), in its order
LORA_MODULES = ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# keys of adapter_config.json as written by the PEFT releases of spring 2024 (the official adapters)
OLD_PEFT_CONFIG_KEYS = [
    "alpha_pattern", "auto_mapping", "base_model_name_or_path", "bias", "fan_in_fan_out", "inference_mode",
    "init_lora_weights", "layers_pattern", "layers_to_transform", "loftq_config", "lora_alpha", "lora_dropout",
    "megatron_config", "megatron_core", "modules_to_save", "peft_type", "r", "rank_pattern", "revision",
    "target_modules", "task_type", "use_dora", "use_rslora",
]
MIGRATION_BASE_ID = f"{FIXTURE_ORG}/tiny-random-llama"
MIGRATION_MNTP_ID = f"{FIXTURE_ORG}/tiny-random-llama-mntp"
SUPERVISED_LLM2VEC_CONFIG = {"pooling_mode": "mean", "max_length": 64, "doc_max_length": 48, "skip_instruction": True}


def install_in_hub_cache(repo_id: str, folder: Path):
    """Put `folder` into the private HF cache in the Hub's layout, so `from_pretrained(repo_id)` resolves offline."""
    cache = Path(os.environ["HF_HUB_CACHE"])
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snap = repo_dir / "snapshots" / commit
    if repo_dir.exists():
        shutil.rmtree(repo_dir)
    shutil.copytree(folder, snap)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)


def randomize_lora(peft_model, seed: int, std: float):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(peft_model.named_parameters()):
            if "lora_A" in name or "lora_B" in name:
                p.copy_(std * torch.randn(p.shape, generator=g))


def rewrite_adapter_config(folder: Path):
    path = folder / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg = {k: cfg.get(k) for k in OLD_PEFT_CONFIG_KEYS}
    cfg["target_modules"] = sorted(cfg["target_modules"])  # PEFT writes a set: make the order deterministic
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    readme = folder / "README.md"  # PEFT's boilerplate model card
    if readme.exists():
        readme.unlink()
    return cfg


def lora_delta_check(folder: Path):
    from safetensors.torch import load_file

    sd = load_file(str(folder / "adapter_model.safetensors"))
    keys = sorted(sd)
    assert all(k.startswith("base_model.model.layers.") for k in keys), keys[:3]
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
    assert len(keys) == 2 * 2 * len(LORA_MODULES)  # 2 layers x 7 modules x (A, B)
    return keys


def make_migration(seed: int = 1234):
    t0 = time.time()
    mig = OUT / "migration"
    if mig.exists():
        shutil.rmtree(mig)
    base_dir, mntp_dir, sup_dir = mig / "base", mig / "mntp", mig / "supervised"
    shutil.copytree(OUT / "llama" / "model", base_dir)
    base_cfg = json.loads((base_dir / "config.json").read_text())
    assert base_cfg["_name_or_path"] == MIGRATION_BASE_ID
    # The official adapters name their base by hub id (e.g. "mistralai/Mistral-7B-Instruct-v0.2"): put the
    # base where that lookup finds it.
    install_in_hub_cache(MIGRATION_BASE_ID, base_dir)

    # ---- stage 1: MNTP, exactly as experiments/run_mntp.py builds and saves it -----------------------
    tokenizer = transformers.AutoTokenizer.from_pretrained(MIGRATION_BASE_ID)
    if tokenizer.mask_token is None:  # mask_token_type "blank" (the official train configs)
        tokenizer.mask_token = "_"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    mntp_model = LlamaBiForMNTP.from_pretrained(
        MIGRATION_BASE_ID, torch_dtype=torch.float32, attn_implementation="sdpa"
    )
    lora_cfg = LoraConfig(
        r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=LORA_MODULES, lora_dropout=LORA_DROPOUT, bias="none", task_type=None
    )
    # "model organization is MODEL_TYPEBiForMNTP.model -> MODEL_TYPELBiModel, we have to apply PEFT to the inner model"
    peft_inner = get_peft_model(mntp_model.get_model_for_peft(), lora_cfg)
    mntp_model.set_model_for_peft(peft_inner)
    randomize_lora(peft_inner, seed, std=0.15)
    mntp_model.save_peft_model(str(mntp_dir))  # MNTPTrainer._save
    tokenizer.save_pretrained(str(mntp_dir))
    mntp_adapter_cfg = rewrite_adapter_config(mntp_dir)
    assert mntp_adapter_cfg["base_model_name_or_path"] == MIGRATION_BASE_ID, mntp_adapter_cfg
    mntp_keys = lora_delta_check(mntp_dir)
    # The hub's MNTP repos also carry the base config.json with an auto_map to their custom encoder code.
    mntp_config = dict(base_cfg)
    mntp_config["auto_map"] = {"AutoModel": f"{MIGRATION_MNTP_ID}--modeling_llama_encoder.LlamaEncoderModel"}
    (mntp_dir / "config.json").write_text(json.dumps(mntp_config, indent=2, sort_keys=True) + "\n")
    del mntp_model, peft_inner

    # ---- stage 2: supervised, exactly as experiments/run_supervised.py builds and saves it -------------
    sup = LLM2Vec.from_pretrained(
        base_model_name_or_path=MIGRATION_BASE_ID,
        enable_bidirectional=True,
        peft_model_name_or_path=str(mntp_dir),
        merge_peft=True,
        pooling_mode=SUPERVISED_LLM2VEC_CONFIG["pooling_mode"],
        max_length=SUPERVISED_LLM2VEC_CONFIG["max_length"],
        doc_max_length=SUPERVISED_LLM2VEC_CONFIG["doc_max_length"],
        skip_instruction=SUPERVISED_LLM2VEC_CONFIG["skip_instruction"],
        torch_dtype=torch.float32,
        attn_implementation="sdpa",
    )
    # "model organization is LLM2VecModel.model -> HF Model, we have to apply PEFT to the inner model"
    sup.model = get_peft_model(sup.model, LoraConfig(
        r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=LORA_MODULES, lora_dropout=LORA_DROPOUT, bias="none", task_type=None
    ))
    randomize_lora(sup.model, seed + 1, std=0.15)
    sup.save(str(sup_dir))  # LLM2VecSupervisedTrainer._save -> LLM2Vec.save: adapter + tokenizer + llm2vec_config.json
    sup_adapter_cfg = rewrite_adapter_config(sup_dir)
    assert sup_adapter_cfg["base_model_name_or_path"] == MIGRATION_BASE_ID, sup_adapter_cfg
    sup_keys = lora_delta_check(sup_dir)
    assert json.loads((sup_dir / "llm2vec_config.json").read_text()) == SUPERVISED_LLM2VEC_CONFIG
    del sup

    # ---- reference vectors --------------------------------------------------------------------------
    # "__" is where the MNTP folder's tokenizer (mask_token "_" registered as a special token by run_mntp.py)
    # tokenizes differently from the base tokenizer
    plain, pairs = PLAIN_SHORT + ["Define __init__ and __repr__ methods."], PAIRS
    cases = []

    def add_case(l2v, loader, adapters, set_name, inputs):
        assert_no_empty_after_cut(l2v, inputs)
        emb = encode(l2v, inputs)
        cases.append(
            {
                "loader": loader,
                "adapters": adapters,
                "pooling_mode": l2v.pooling_mode,
                "skip_instruction": l2v.skip_instruction,
                "max_length": l2v.max_length,
                "doc_max_length": l2v.doc_max_length,
                "batch_size": BATCH_SIZE,
                "input_set": set_name,
                "inputs": inputs,
                "embeddings": [f32_list(r) for r in emb],
            }
        )
        return emb

    # (A) the GitHub README one-liner: base = the MNTP repo, peft = the supervised repo (not merged);
    #     encoder settings come from the supervised folder's llm2vec_config.json.
    readme_loader = "LLM2Vec.from_pretrained('mntp', peft_model_name_or_path='supervised', torch_dtype=torch.float32)"
    l2v_a = LLM2Vec.from_pretrained(str(mntp_dir), peft_model_name_or_path=str(sup_dir), torch_dtype=torch.float32)
    assert isinstance(l2v_a.model, PeftModel)
    assert (l2v_a.pooling_mode, l2v_a.max_length, l2v_a.doc_max_length, l2v_a.skip_instruction) == tuple(
        SUPERVISED_LLM2VEC_CONFIG.values()
    )
    assert first_token_sensitivity(l2v_a) > 1e-4
    a_plain = add_case(l2v_a, readme_loader, ["mntp", "supervised"], "plain", plain)
    a_pairs = add_case(l2v_a, readme_loader, ["mntp", "supervised"], "pairs", pairs)
    l2v_a2 = LLM2Vec.from_pretrained(
        str(mntp_dir), peft_model_name_or_path=str(sup_dir), skip_instruction=False, torch_dtype=torch.float32
    )
    add_case(l2v_a2, readme_loader[:-1] + ", skip_instruction=False)", ["mntp", "supervised"], "plain", plain)
    add_case(l2v_a2, readme_loader[:-1] + ", skip_instruction=False)", ["mntp", "supervised"], "pairs", pairs)
    l2v_a3 = LLM2Vec.from_pretrained(
        str(mntp_dir), peft_model_name_or_path=str(sup_dir), max_length=512, doc_max_length=400, torch_dtype=torch.float32
    )
    add_case(l2v_a3, readme_loader[:-1] + ", max_length=512, doc_max_length=400)", ["mntp", "supervised"], "plain",
             PLAIN_DEFAULT)

    # (B) stepwise, as run_supervised.py loads it before training and as the model cards stack the adapters:
    #     base + MNTP merged, then the supervised adapter on top (PeftModel, not merged).
    l2v_b = LLM2Vec.from_pretrained(
        MIGRATION_BASE_ID, peft_model_name_or_path=str(mntp_dir), merge_peft=True, torch_dtype=torch.float32,
        **SUPERVISED_LLM2VEC_CONFIG,
    )
    l2v_b.model = PeftModel.from_pretrained(l2v_b.model, str(sup_dir))
    b_plain, b_pairs = encode(l2v_b, plain), encode(l2v_b, pairs)
    # the last plain text has "__": the stepwise load uses the BASE tokenizer, the one-liner the MNTP one
    d_ab = max(float(np.abs(a_plain[:-1] - b_plain[:-1]).max()), float(np.abs(a_pairs - b_pairs).max()))
    d_tok = float(np.abs(a_plain[-1] - b_plain[-1]).max())
    print(f"[migration] README one-liner vs stepwise (merge MNTP, PeftModel supervised): max |diff| = {d_ab:.3g}")
    print(f"[migration]   ... on the '__' text (MNTP tokenizer with mask_token '_' vs base tokenizer): {d_tok:.3g}")
    assert d_ab < 1e-5 and d_tok > 1e-3
    # (B') supervised merged too
    l2v_b.model = l2v_b.model.merge_and_unload()
    d_merge = float(np.abs(encode(l2v_b, plain) - b_plain).max())
    print(f"[migration] supervised merged vs unmerged: max |diff| = {d_merge:.3g}")
    assert d_merge < 1e-5

    # (C) MNTP only (the "-mntp" repos on their own): base + MNTP merged
    mntp_loader = "LLM2Vec.from_pretrained('mntp', torch_dtype=torch.float32)"
    l2v_c = LLM2Vec.from_pretrained(str(mntp_dir), torch_dtype=torch.float32)
    assert not isinstance(l2v_c.model, PeftModel)
    c_plain = add_case(l2v_c, mntp_loader, ["mntp"], "plain", plain)
    add_case(l2v_c, mntp_loader, ["mntp"], "pairs", pairs)

    # (D) base only, for contrast
    base_loader = "LLM2Vec.from_pretrained('base', torch_dtype=torch.float32)"
    l2v_d = LLM2Vec.from_pretrained(str(base_dir), torch_dtype=torch.float32)
    d_plain = add_case(l2v_d, base_loader, [], "plain", plain)

    def cos(x, y):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
        return float((x * y).sum(1).mean())

    # base vs mntp at the same settings (512/400 there; 64/48 in A): compare C to D (both defaults)
    print(f"[migration] mean cosine base vs base+mntp = {cos(d_plain, c_plain):.4f}")
    l2v_c64 = LLM2Vec.from_pretrained(str(mntp_dir), torch_dtype=torch.float32, **SUPERVISED_LLM2VEC_CONFIG)
    c64 = encode(l2v_c64, plain)
    print(f"[migration] mean cosine base+mntp vs base+mntp+supervised = {cos(c64, a_plain):.4f}")
    assert cos(d_plain, c_plain) < 0.99 and cos(c64, a_plain) < 0.99, "adapters must change the vectors noticeably"

    doc = {
        **versions(),
        "arch": "llama",
        "base_repo_id": MIGRATION_BASE_ID,
        "layout": {
            "base": "tiny llama base checkpoint (copy of llama/model); the adapters name it by the hub id base_repo_id",
            "mntp": "adapter_model.safetensors + adapter_config.json from LlamaBiForMNTP.save_peft_model (PEFT wraps "
            "the inner LlamaBiModel: keys 'base_model.model.layers.N.<self_attn|mlp>.<proj>.lora_<A|B>.weight'), "
            "tokenizer files (mask_token '_', pad_token = eos, as run_mntp.py sets them), and config.json = the "
            "base config plus an auto_map, like the hub's -mntp repos",
            "supervised": "adapter from LLM2Vec.save on get_peft_model(merged base+MNTP LlamaBiModel): same key "
            "layout; tokenizer files; llm2vec_config.json",
        },
        "lora": {"r": LORA_R, "lora_alpha": LORA_ALPHA, "target_modules": sorted(LORA_MODULES)},
        "mntp_adapter_keys_example": mntp_keys[:2],
        "supervised_adapter_keys_example": sup_keys[:2],
        "notes": [
            "Loading 'mntp' as a base works because transformers (with peft installed) sees adapter_config.json, "
            "loads base_model_name_or_path from the hub cache and attaches the adapter; LLM2Vec.from_pretrained "
            "then merges it (its 'peft_config' branch). Tests must install migration/base into an HF cache as "
            "base_repo_id (HF_HUB_OFFLINE=1) for the same lookup.",
            "The stepwise load (LLM2Vec.from_pretrained(base, peft_model_name_or_path=mntp, merge_peft=True), then "
            "PeftModel.from_pretrained(l2v.model, supervised), merged or not) gives the same vectors "
            f"(max |diff| {d_ab:.2g}) except on texts containing '__': it tokenizes with the base folder's "
            "tokenizer, while the one-liner (and the model cards' AutoTokenizer.from_pretrained(mntp)) use the "
            "MNTP folder's tokenizer, in which run_mntp.py made '_' the mask token, i.e. a special token that is "
            "split out of raw text ('__' -> '_', '_'). The recorded cases use the one-liner.",
        ],
        "cases": cases,
    }
    write_json(mig / "reference.json", doc)
    print(f"[migration] {len(cases)} cases written in {time.time() - t0:.1f}s")

# --------------------------------------------------------------------------------------------------
# Part 3: tokenizers unlike the family defaults
# --------------------------------------------------------------------------------------------------
# Each: architecture, vocabulary style, special tokens (ids 0.. in `order`), the tokenizer_class that
# tokenizer_config.json names (4.44's LlamaTokenizerFast/GemmaTokenizerFast rebuild the post-processor from
# add_bos_token/add_eos_token; PreTrainedTokenizerFast keeps tokenizer.json's), the post-processor written
# into tokenizer.json, and the names (config.json `_name_or_path`) the reference is run under.
TOKENIZER_CASES = {
    # a Qwen2 model with its own BPE, no <|endoftext|>, no pad, PreTrainedTokenizerFast
    "qwen2-own-bpe": dict(
        arch="qwen2", style="bytelevel", order=["<|start|>", "<|stop|>", "<unk>"], bos=None, eos="<|stop|>",
        unk="<unk>", pad=None, tokenizer_class=None, post="bytelevel", add_bos=None, add_eos=None, names=[None],
    ),
    # Llama-2 style SentencePiece BPE (dummy prefix via normalizer), own BOS/EOS, no post-processor in
    # tokenizer.json: 4.44's LlamaTokenizerFast adds BOS itself
    "llama-sentencepiece": dict(
        arch="llama", style="prepend", order=["<unk>", "<|start|>", "<|stop|>"], bos="<|start|>", eos="<|stop|>",
        unk="<unk>", pad=None, tokenizer_class="LlamaTokenizerFast", post=None, add_bos=True, add_eos=None,
        names=[None],
    ),
    # Mistral with a Metaspace pre-tokenizer, a distinct pad token, and add_eos_token: true
    "mistral-metaspace-add-eos": dict(
        arch="mistral", style="metaspace", order=["<unk>", "<|start|>", "<|stop|>", "<|pad|>"], bos="<|start|>",
        eos="<|stop|>", unk="<unk>", pad="<|pad|>", tokenizer_class="LlamaTokenizerFast", post="bos",
        add_bos=True, add_eos=True, names=[None],
    ),
    # Llama-3 style byte-level BPE; under its generic name the reference appends " </s>" (plain text here),
    # under the two Llama-3 hub names "<|end_of_text|>" or (Instruct: template) nothing
    "llama3-style": dict(
        arch="llama", style="bytelevel",
        order=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        bos="<|begin_of_text|>", eos="<|end_of_text|>", unk=None, pad=None, tokenizer_class=None, post="bos",
        add_bos=None, add_eos=None, names=[None, "meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B-Instruct"],
    ),
    # Gemma whose EOS is "</s>" (the reference appends "<eos>", plain text here); Gemma-style vocabulary
    # (spaces as "▁", no dummy prefix), distinct pad
    "gemma-eos-s": dict(
        arch="gemma", style="replace", order=["<pad>", "</s>", "<s>", "<unk>"], bos="<s>", eos="</s>",
        unk="<unk>", pad="<pad>", tokenizer_class="GemmaTokenizerFast", post="bos", add_bos=True, add_eos=None,
        names=[None],
    ),
}
TOKENIZER_VOCAB_SIZE = 320
TOKENIZER_INPUTS = [
    ["", "The quick brown fox jumps over the lazy dog."],
    ["", "Café naïve e\u0301 東京 😀 3.14159 don't"],
    ["", "x"],
    ["Retrieve the matching passage", "how much protein should a female eat"],
    ["   Classify the sentiment   ", "I loved this movie, it was fantastic!"],
    ["", LONG_SHORT],
]
#: token-id probes for the tokenizer round trip (special-token strings inside text included)
TOKENIZER_PROBES = [
    "Hello world", " leading space", "Café naïve e\u0301 東京 😀", "12345 it's", "a </s> b <eos> c <|endoftext|>",
    "<|stop|> <|start|> <s> <|end_of_text|>", "two  spaces\n\nnewline",
]


def build_custom_tokenizer(spec) -> PreTrainedTokenizerFast:
    order = spec["order"]
    unk = spec["unk"]
    tok = Tokenizer(models.BPE(unk_token=unk, fuse_unk=unk is not None))
    if spec["style"] == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = []
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet) if alphabet else 200,  # a limit below the 256 bytes picks them at random
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in order],
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    for i, t in enumerate(order):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    if spec["style"] in ("prepend", "replace"):
        # Llama-2's tokenizer.json: the dummy prefix and "▁" come from the normalizer, no pre-tokenizer;
        # Gemma's: spaces become "▁", no dummy prefix
        data = json.loads(tok.to_str())
        replace = {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
        prepend = {"type": "Prepend", "prepend": "▁"}
        data["normalizer"] = {"type": "Sequence", "normalizers": [prepend, replace]} if spec["style"] == "prepend" else replace
        data["pre_tokenizer"] = None
        data["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
        ] + ([{"type": "Strip", "content": " ", "start": 1, "stop": 0}] if spec["style"] == "prepend" else [])}
        tok = Tokenizer.from_str(json.dumps(data))
    if spec["post"] == "bos":
        bos = spec["bos"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    elif spec["post"] == "bytelevel":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    kwargs = {k + "_token": spec[k] for k in ("bos", "eos", "unk", "pad") if spec[k] is not None}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=1024, clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"], **kwargs,
    )


def save_custom_tokenizer(tok, spec, path: Path):
    tok.save_pretrained(path)
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    if spec["tokenizer_class"]:
        cfg["tokenizer_class"] = spec["tokenizer_class"]
    for key in ("add_bos", "add_eos"):
        if spec[key] is not None:
            cfg[key + "_token"] = spec[key]
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def build_small_model(arch: str, tok, seed: int):
    common = dict(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.3, rms_norm_eps=1e-6,
        rope_theta=10000.0, tie_word_embeddings=True, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
        torch_dtype="float32",
    )
    if arch == "llama":
        cfg, cls = LlamaConfig(pad_token_id=None, **common), LlamaForCausalLM
    elif arch == "mistral":
        cfg, cls = MistralConfig(pad_token_id=tok.pad_token_id, sliding_window=None, **common), MistralForCausalLM
    elif arch == "gemma":
        cfg, cls = GemmaConfig(head_dim=4, hidden_activation="gelu_pytorch_tanh", pad_token_id=tok.pad_token_id,
                               **common), GemmaForCausalLM
    elif arch == "qwen2":
        cfg, cls = Qwen2Config(pad_token_id=None, use_sliding_window=False, **common), Qwen2ForCausalLM
    else:
        raise ValueError(arch)
    torch.manual_seed(seed)
    model = cls(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((0.0 if arch == "gemma" else 1.0) + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    model.eval()
    return model


def tokenizer_facts(tok) -> dict:
    """What the round trip must keep: the tokenizer as 4.44's AutoTokenizer loads it (before llm2vec sets
    pad = eos): class, special tokens, BOS/EOS adding (ids of the probes with special tokens)."""
    return {
        "tokenizer_class": type(tok).__name__,
        "special_tokens": {k: getattr(tok, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")},
        "special_ids": {k: getattr(tok, k) for k in ("bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id")},
        "length": len(tok),
        "probe_ids": [tok(t)["input_ids"] for t in TOKENIZER_PROBES],
        "probe_ids_no_special": [tok(t, add_special_tokens=False)["input_ids"] for t in TOKENIZER_PROBES],
    }


def make_tokenizers(seed: int = 3000):
    t0 = time.time()
    root = OUT / "tokenizers"
    if root.exists():
        shutil.rmtree(root)
    fixtures = {}
    for i, (name, spec) in enumerate(TOKENIZER_CASES.items()):
        model_dir = root / name / "model"
        tok = build_custom_tokenizer(spec)
        model = build_small_model(spec["arch"], tok, seed + i)
        model.config._name_or_path = f"{FIXTURE_ORG}/tiny-{name}"
        model_dir.mkdir(parents=True)
        model.save_pretrained(model_dir, safe_serialization=True)
        save_custom_tokenizer(tok, spec, model_dir)
        del model
        if spec["arch"] == "qwen2":
            patch_qwen2_bidirectional()
        cases = []
        facts = None
        for hub_name in spec["names"]:
            folder = model_dir
            if hub_name is not None:  # the reference reads `_name_or_path` from a local folder's config.json
                folder = _TMP_ROOT / "named" / name / hub_name.replace("/", "--")
                shutil.copytree(model_dir, folder)
                cfg = json.loads((folder / "config.json").read_text())
                cfg["_name_or_path"] = hub_name
                (folder / "config.json").write_text(json.dumps(cfg, indent=2))
            modes = [m for m in POOLING_MODES if not (m == "bos_token" and spec["bos"] is None)]
            for mode in modes:
                for skip in (True, False) if mode == "mean" else (True,):
                    l2v = LLM2Vec.from_pretrained(
                        str(folder), pooling_mode=mode, max_length=48, doc_max_length=40, skip_instruction=skip,
                        torch_dtype=torch.float32,
                    )
                    assert l2v.model.config._name_or_path == (hub_name or f"{FIXTURE_ORG}/tiny-{name}")
                    if facts is None:
                        facts = tokenizer_facts(transformers.AutoTokenizer.from_pretrained(str(model_dir)))
                        assert l2v.tokenizer.pad_token == l2v.tokenizer.eos_token
                        assert first_token_sensitivity(l2v) > 1e-4, f"{name}: reference is not bidirectional"
                    assert_no_empty_after_cut(l2v, TOKENIZER_INPUTS)
                    emb = encode(l2v, TOKENIZER_INPUTS)
                    cases.append({
                        "name_or_path": hub_name,
                        "pooling_mode": mode,
                        "skip_instruction": skip,
                        "max_length": 48,
                        "doc_max_length": 40,
                        "batch_size": BATCH_SIZE,
                        "prepared_example": l2v.prepare_for_tokenization(
                            l2v._convert_to_str(*TOKENIZER_INPUTS[0])).replace("!@#$%^&*()", ""),
                        "inputs": TOKENIZER_INPUTS,
                        "embeddings": [f32_list(r) for r in emb],
                    })
        if spec["arch"] == "qwen2":
            unpatch_qwen2()
        fixtures[name] = {
            "arch": spec["arch"],
            "spec": {k: v for k, v in spec.items() if k != "names"},
            "tokenizer": facts,
            "cases": cases,
        }
        print(f"[tokenizers] {name}: {len(cases)} cases, {facts['tokenizer_class']}, specials {facts['special_tokens']}")
    doc = {
        **versions(),
        "loader": "llm2vec.LLM2Vec.from_pretrained(folder, pooling_mode=..., max_length=48, doc_max_length=40, "
        "skip_instruction=..., torch_dtype=torch.float32); encode(inputs, batch_size=4); qwen2 with the Llama "
        "masking rule (see qwen2/reference.json); a case with name_or_path ran on a copy of the folder whose "
        "config.json says that _name_or_path",
        "probes": TOKENIZER_PROBES,
        "fixtures": fixtures,
    }
    write_json(root / "reference.json", doc)
    print(f"[tokenizers] written in {time.time() - t0:.1f}s")



def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["all", "arch", "migration", "tokenizers"], default="all")
    args = ap.parse_args()
    check_environment()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    t0 = time.time()
    print(f"llm2vec {llm2vec.__file__} {versions()}")
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        if args.only in ("all", "arch"):
            for i, arch in enumerate(ARCHS):
                make_arch(arch, seed=1000 + i)
        if args.only in ("all", "migration"):
            make_migration()
        if args.only in ("all", "tokenizers"):
            make_tokenizers()
    finally:
        shutil.rmtree(_TMP_ROOT, ignore_errors=True)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"done in {time.time() - t0:.1f}s; fixture dir {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
