"""What must never be published: pickles (by name or by content), environment and credential files, archives
(by name or content: what they hold cannot be scanned as it is), and anything that looks like a secret (the
patterns of detect-secrets' plugins and a few it lacks, or the very token used to push), in a file's name or its
content, streamed in overlapping blocks (any size, bounded memory). Used by `checkpoint_check`."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..loading.paths import PICKLE_SUFFIXES

#: Every suffix of a file name is compared: "weights.pkl.gz" is a pickle too.
PICKLE_EXTRA = (".pickle", ".joblib", ".dill", ".pyc", ".pyo", ".sav", ".pdparams", ".npz", ".mar",
                ".nemo", ".keras", ".h5", ".hdf5", ".msgpack", ".onnx", ".pb", ".tflite")
#: File names that hold credentials by convention (compared lower-cased).
CREDENTIAL_NAMES = {
    ".netrc", "_netrc", ".git-credentials", ".pypirc", ".npmrc", ".dockercfg", "credentials", "credentials.json",
    "token", "hf_token", ".hf_token", "stored_tokens", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519",
    "client_secret.json", "service_account.json", ".htpasswd",
}
CREDENTIAL_SUFFIXES = (".pem", ".key", ".p12", ".pfx", ".jks", ".keystore", ".kdbx", ".ppk", ".asc", ".gpg")
#: detect-secrets (Yelp's maintained detector) plugins whose patterns are scanned for, with the kind they name:
#: their ``denylist`` regexes, compiled for bytes. Its keyword and high-entropy plugins are not used: every
#: tokenizer vocabulary and weight header is full of random-looking strings.
DETECT_SECRETS_PLUGINS = {
    "aws.AWSKeyDetector": "an AWS access key or secret key",
    "basic_auth.BasicAuthDetector": "a password in a URL",
    "stripe.StripeDetector": "a Stripe key",
    "github_token.GitHubTokenDetector": "a GitHub token",
    "gitlab_token.GitLabTokenDetector": "a GitLab token",
    "slack.SlackDetector": "a Slack token",
    "private_key.PrivateKeyDetector": "a private key",
    "pypi_token.PypiTokenDetector": "a PyPI token",
    "sendgrid.SendGridDetector": "a SendGrid key",
    "openai.OpenAIDetector": "an OpenAI key",
    "azure_storage_key.AzureStorageKeyDetector": "an Azure storage key",
    "square_oauth.SquareOAuthDetector": "a Square OAuth secret",
    "npm.NpmDetector": "an npm token",
}


def _detect_secrets_patterns() -> list[tuple[str, re.Pattern]]:
    import importlib

    patterns = []
    for name, kind in DETECT_SECRETS_PLUGINS.items():
        module, cls = name.rsplit(".", 1)
        plugin = getattr(importlib.import_module(f"detect_secrets.plugins.{module}"), cls)
        patterns += [(kind, re.compile(regex.pattern.encode(), regex.flags & ~re.UNICODE)) for regex in plugin.denylist]
    return patterns


#: Content patterns of secrets (never printed: only the kind is named): detect-secrets' and those it lacks.
SECRET_PATTERNS = [
    ("a Hugging Face token", re.compile(rb"\bhf_[A-Za-z0-9]{30,}")),
    ("a private key", re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("a GitHub token", re.compile(rb"\bgithub_pat_[A-Za-z0-9_]{40,}")),
    ("an API key", re.compile(rb"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{32,}")),
    ("a Slack token", re.compile(rb"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("a Google API key", re.compile(rb"\bAIza[0-9A-Za-z_-]{35}")),
    # detect-secrets finds an AWS secret key only quoted; env files and shell exports write it bare
    ("an AWS secret key", re.compile(rb"(?i)aws.{0,20}?(?:key|secret).{0,20}?[=:]\s*[0-9a-zA-Z/+]{40}(?![0-9a-zA-Z/+])")),
    *_detect_secrets_patterns(),
]
#: Archives and compressed files by their first bytes (tar: "ustar" at byte 257): their content cannot be scanned
#: as it is, so they are refused; upload the files they hold instead.
ARCHIVE_MAGIC = {b"PK\x03\x04": "zip", b"PK\x05\x06": "zip", b"\x1f\x8b": "gzip", b"BZh": "bzip2",
                 b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"7z\xbc\xaf\x27\x1c": "7z",
                 b"Rar!\x1a\x07": "rar", b"\x04\x22\x4d\x18": "lz4"}
ARCHIVE_SUFFIXES = (".zip", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".tar", ".rar", ".lz4", ".whl", ".egg")
#: Files are scanned for secrets in blocks of this size (any size of file; memory holds one block).
SCAN_BLOCK = 8 * 1024 * 1024
#: Blocks overlap by this much, so a secret that straddles two blocks is still seen whole.
SCAN_OVERLAP = 4096


def refused_by_name(relpath: str) -> str | None:
    name = relpath.rsplit("/", 1)[-1]
    lowered = name.lower()
    suffixes = {"." + part for part in lowered.split(".")[1:]}  # ".pkl" and "a.pkl.gz" alike
    if suffixes & set(PICKLE_SUFFIXES + PICKLE_EXTRA):
        return "pickle file or other non-safetensors weights; only safetensors are uploaded"
    if lowered.startswith(".env.") or lowered.endswith(".env") or lowered == ".envrc":
        return "environment file"
    if lowered in CREDENTIAL_NAMES or lowered.endswith(CREDENTIAL_SUFFIXES) or lowered.startswith("id_rsa"):
        return "credential file"
    if suffixes & set(ARCHIVE_SUFFIXES):
        return "archive or compressed file, whose content cannot be checked for secrets; upload the files it holds"
    return None


def refused_by_content(path: Path) -> str | None:
    """Pickles under any name: the pickle protocol 2-5 header, or a torch zip archive holding ``data.pkl``."""
    with open(path, "rb") as handle:
        head = handle.read(262)
        if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
            return "a pickle (by its content); only safetensors are uploaded"
    if head.startswith(b"PK\x03\x04"):
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                if any(n.endswith(".pkl") for n in archive.namelist()):
                    return "an archive holding a pickle (a torch.save file); only safetensors are uploaded"
        except (zipfile.BadZipFile, OSError):
            pass
    kind = next((kind for magic, kind in ARCHIVE_MAGIC.items() if head.startswith(magic)), None)
    if kind is None and head[257:262] == b"ustar":
        kind = "tar"
    if kind:
        return f"a {kind} archive (by its content), whose content cannot be checked for secrets; upload the files it holds"
    return None


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The raw JSON header (tensor entries and ``__metadata__``): the file's only free text."""
    # Read by hand: safe_open drops fields it does not know from tensor entries, but they are uploaded all the same.
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path.name} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw)
        if length <= 0 or length > 100 * 1024 * 1024:
            raise CheckpointError(f"{path.name} is not a safetensors file (bad header length)")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path.name} is not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name} is not a safetensors file (unreadable header)")
    return header


def _views(blob: bytes) -> list[bytes]:
    """``blob`` and, when it holds NUL bytes, its every-2nd and every-4th byte views: ASCII text stored as
    UTF-16 (LE or BE) or UTF-32 becomes plain ASCII in one of them."""
    if b"\x00" not in blob:
        return [blob]
    return [blob] + [blob[i::2] for i in range(2)] + [blob[i::4] for i in range(4)]


def _find_secret(blob: bytes, token_bytes: bytes | None) -> str | None:
    for view in _views(blob):
        if token_bytes and token_bytes in view:
            return "contains the token used to push"
        for kind, pattern in SECRET_PATTERNS:
            if pattern.search(view):
                return f"contains what looks like {kind}"
    return None


def _blocks(path: Path):
    """The file in overlapping blocks (streamed: a file of any size is scanned in bounded memory)."""
    with open(path, "rb") as handle:
        tail = b""
        while True:
            block = handle.read(SCAN_BLOCK)
            if not block:
                return
            yield tail + block
            tail = block[-SCAN_OVERLAP:]


def find_secrets(folder: Path, files: list[tuple[str, int]], token: str | None) -> list[str]:
    """'path (what it looks like)' for each file whose name or content looks like a credential."""
    found = []
    token_bytes = token.encode() if token else None
    for relpath, _ in files:
        path = folder / relpath
        why = _find_secret(relpath.encode(), token_bytes)
        if why:  # the name is shown scrubbed: printing it would leak what it holds
            found.append(f"{scrub(relpath, token)} (its name {why[len('contains '):]})")
            continue
        if relpath.endswith(".safetensors"):
            # only the header holds free text: tensor names and __metadata__; the rest is numbers
            blobs: Any = [json.dumps(_safetensors_header(path), ensure_ascii=False).encode()]
        else:
            blobs = _blocks(path)
        for blob in blobs:
            why = _find_secret(blob, token_bytes)
            if why:
                found.append(f"{relpath} ({why})")
                break
    return found


def scrub(message: str, token: str | None) -> str:
    message = " ".join(str(message).split())
    if token:
        message = message.replace(token, "***")
    return re.sub(r"\bhf_[A-Za-z0-9]{30,}", "hf_***", message)
