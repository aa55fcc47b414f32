"""Evaluation of llm2vec-hf checkpoints: ``llm2vec-hf eval DIR --tasks ...``.

- ``instructions``: LLM2Vec's per-task instruction set for the English MTEB tasks and how one is chosen;
- ``mteb_tasks``: MTEB through mteb 2.x (optional extra ``[eval]``), local tasks from files, model-index entries;
- ``word_probes``: linear probes on frozen token representations (POS, chunking, NER on CoNLL-format data);
- ``evaluate``: one checkpoint on the tasks ``llm2vec-hf eval --tasks`` names, and the summary it prints
  (the command's arguments: ``llm2vec_hf.commands.eval``).

mteb is imported only when an MTEB task runs, so the word probes work without the extra.
"""
