"""Loading what a checkpoint is made of:

- ``paths``: a local folder or a Hub repo id, and the safetensors-only rule;
- ``models``: the base model as a bidirectional encoder and its tokenizer, and the encoding settings stored
  with them;
- ``adapters``: PEFT LoRA adapters, checked against their base and merged in order;
- ``json_files``: the one JSON / JSON-lines reader and writer.
"""
