"""``llm2vec-hf push``: upload an exported checkpoint folder to the Hugging Face Hub.

Before anything goes over the network the folder is checked (``check_checkpoint``): its config loads, its
safetensors weights cover every parameter the config asks for, its sentence-transformers files parse and name
files that exist, and its model card parses. Pickle files, ``.env`` files and anything that looks like a
credential (by name, or by content: token and private-key patterns, or the very token used to push) are refused.

The token comes from ``HF_TOKEN`` or the login cache (``huggingface_hub.get_token``); it is passed to the
``HfApi`` calls only, and scrubbed from any error message. Hub failures (bad repo id, no token, unreachable or
refusing Hub) raise ``PushError``, which the CLI prints as one line with a non-zero exit.

Upload: ``create_repo(exist_ok=True)``, ``create_branch`` for ``--revision`` (other than main), then one
``create_commit`` with every file of the folder. The uploaded README.md has its usage snippets pointed at the
repo id (the folder itself is left untouched).
"""

from __future__ import annotations

HELP = "upload a checkpoint folder to the Hugging Face Hub"


def add_arguments(parser) -> None:
    parser.add_argument("folder", metavar="DIR", help="exported checkpoint folder (llm2vec-hf export)")
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="Hub model repo; created if missing")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    parser.add_argument("--revision", metavar="R", help="branch to push to; created from main if missing")
    parser.add_argument("--commit-message", metavar="M", help="commit message")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the folder and print the files, sizes and card metadata; no network")


def main(args) -> int:
    from ..checkpoint.hub import push

    push(args.folder, args.repo_id, private=args.private, revision=args.revision,
         commit_message=args.commit_message, dry_run=args.dry_run)
    return 0
