"""The checkpoint on disk and on the Hub, in the order a checkpoint is made and published:

- ``export``: loads a base with its adapters, writes the transformers + sentence-transformers folder
  (staged, then swapped in atomically) and decides the sentence-transformers layout;
- ``model_card``: the README.md of the checkpoint (huggingface_hub's ``ModelCard``);
- ``validation``: what a folder must hold before it is uploaded;
- ``secret_scan``: files and contents that must never leave the machine;
- ``hub``: the upload (``llm2vec-hf push``).
"""
