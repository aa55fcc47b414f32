"""The parts of ``llm2vec-hf encode``, in the order data flows through them:

- ``inputs``: reads and checks the ``.txt``/``.jsonl`` lines; fingerprints the input and the checkpoint;
- ``encoders``: the model in this process, or sentence-transformers' worker processes;
- ``npy_writer``: the resumable ``.npy`` output, its progress record and its lock.

- ``file_encoder``: the resumable encode job that runs them over a file;
- ``ray_engine``: the same reader and in-process encoder on a Ray cluster (Ray is imported there only);
- ``compile_policy``: whether to compile the model before encoding (`should_compile`).
"""

#: Texts read, encoded and committed at a time.
DEFAULT_CHUNK_SIZE = 8192
