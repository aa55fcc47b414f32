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
#: serves it on and the config flag it reads to run it bidirectionally. Gemma and Gemma2 are absent.
TEI_FAMILIES = {
    "llama": ("CUDA only (fp16, flash attention; no `rope_scaling`)", "use_bidirectional_attention"),
    "mistral": ("CUDA only (fp16, flash attention)", "use_bidirectional_attention"),
    "qwen2": ("CUDA only (fp16, flash attention)", "is_causal"),
    "qwen3": ("CPU and CUDA", "use_bidirectional_attention"),
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
#: transformers' own Gemma/Gemma2 attention, which reads ``use_bidirectional_attention``, so it runs them
#: bidirectionally (measured: the LLM2Vec vectors within float rounding). Llama, Mistral, Qwen2 and Qwen3 need
#: nothing: vLLM's own code reads ``is_causal``.
VLLM_CAUSAL_FAMILIES = ("gemma", "gemma2")
#: The vLLM model implementation that runs `VLLM_CAUSAL_FAMILIES` bidirectionally.
VLLM_BIDIRECTIONAL_IMPL = "transformers"
