"""Evaluation of llm2vec-hf checkpoints: ``llm2vec-hf eval DIR --tasks ...``.

- ``instructions``: LLM2Vec's per-task instruction set for the English MTEB tasks and how one is chosen;
- ``tasks``: the mteb 2.x tasks to run (optional extra ``[eval]``): mteb task names, LLM2Vec's set, local files;
- ``runner``: runs them through mteb's own encoder classes and writes mteb's results folder;
- ``model_index``: results as model-card ``model-index`` entries;
- ``word_probes``: linear probes on frozen token representations (POS, chunking, NER on CoNLL-format data);
- ``evaluate``: one checkpoint on the tasks ``llm2vec-hf eval --tasks`` names, and the summary it prints
  (the command's arguments: ``llm2vec_hf.commands.eval``).

mteb is imported only when an MTEB task runs, so the word probes work without the extra.
"""
