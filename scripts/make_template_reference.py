#!/usr/bin/env python
"""Reference vectors for the official llm2vec 0.2.3 chat-template wrapping, keyed on hub names.

llm2vec 0.2.3 wraps every input in a template chosen by ``model.config._name_or_path``
(``LLM2Vec.prepare_for_tokenization``): a Llama-3 chat turn for "meta-llama/Meta-Llama-3-8B-Instruct",
"[INST] … [/INST]" for "mistralai/Mistral-7B-Instruct-v0.2" and "meta-llama/Llama-2-7b-chat-hf".
llm2vec-hf stores that wrapper in the checkpoint instead (``export --text-template``). This script loads the
tiny llama base of tests/fixtures/reference/migration/ under those hub names (from a private offline HF
cache) with the official library and records its vectors; tests/loading/test_migration.py checks that
``export --text-template VALUE`` with the VALUE given in docs/migration.md gives the same ones.

CI never runs it; its output is committed. Run it in the environment that holds the official library:

    HF_HUB_OFFLINE=1 /work/refenv/bin/python scripts/make_template_reference.py

(see tests/fixtures/reference/README.md for setting up /work/refenv). Deterministic: float32, no randomness.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="l2v-template-ref-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = str(_TMP / "hf_home")
os.environ["HF_HUB_CACHE"] = str(_TMP / "hf_home" / "hub")

import torch  # noqa: E402
import transformers  # noqa: E402
from llm2vec import LLM2Vec  # noqa: E402
from llm2vec.version import __version__ as LLM2VEC_VERSION  # noqa: E402

transformers.logging.set_verbosity_error()

REPO = Path(__file__).resolve().parents[1]
MIGRATION = REPO / "tests" / "fixtures" / "reference" / "migration"
OUT = MIGRATION / "templates.json"

#: hub name the official code keys on -> the --text-template value that reproduces its wrapping
TEMPLATES = {
    "meta-llama/Meta-Llama-3-8B-Instruct": "<|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|>",
    "mistralai/Mistral-7B-Instruct-v0.2": "[INST] {text} [/INST]",
}
SETTINGS = {"pooling_mode": "mean", "max_length": 64, "doc_max_length": 48}


def install_in_cache(repo_id: str) -> None:
    """Puts the tiny base into the private Hub cache under ``repo_id`` (models--org--name/snapshots/<sha>)."""
    folder = Path(os.environ["HF_HUB_CACHE"]) / ("models--" + repo_id.replace("/", "--"))
    revision = "0" * 40
    shutil.copytree(MIGRATION / "base", folder / "snapshots" / revision)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(revision)


def main() -> None:
    reference = json.loads((MIGRATION / "reference.json").read_text())
    inputs = {c["input_set"]: c["inputs"] for c in reference["cases"] if c["max_length"] == SETTINGS["max_length"]}
    cases = []
    for hub_name, template in TEMPLATES.items():
        install_in_cache(hub_name)
        for skip_instruction in (True, False):
            l2v = LLM2Vec.from_pretrained(hub_name, torch_dtype=torch.float32, skip_instruction=skip_instruction,
                                          **SETTINGS)
            assert l2v.model.config._name_or_path == hub_name
            for input_set, texts in sorted(inputs.items()):
                vectors = l2v.encode(texts, batch_size=4, show_progress_bar=False, convert_to_numpy=True)
                cases.append({
                    "hub_name": hub_name, "text_template": template, "skip_instruction": skip_instruction,
                    **SETTINGS, "input_set": input_set, "inputs": texts,
                    "wrapped_example": l2v.prepare_for_tokenization(l2v._convert_to_str(*(
                        texts[0] if isinstance(texts[0], list) else ["", texts[0]]))),
                    "embeddings": vectors.astype(float).round(8).tolist(),
                })
    OUT.write_text(json.dumps({
        "llm2vec_version": LLM2VEC_VERSION, "transformers_version": transformers.__version__,
        "torch_version": torch.__version__, "base": "migration/base (tiny llama) installed under each hub name",
        "cases": cases,
    }, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT} ({len(cases)} cases)")
    shutil.rmtree(_TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
