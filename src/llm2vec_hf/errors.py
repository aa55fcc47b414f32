"""Errors that name the problem; the CLI prints them as one line."""


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """``error`` as one line: libraries raise multi-line messages (PEFT's size mismatches list every tensor)."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def name_some(keys, count: int = 3) -> str:
    """A few of ``keys`` (sorted) and how many more: error messages name tensors without listing thousands."""
    keys = sorted(keys)
    shown = ", ".join(keys[:count])
    return shown + (f" and {len(keys) - count} more" if len(keys) > count else "")


class LLM2VecError(Exception):
    """Base class of llm2vec-hf's user-facing errors."""


class CheckpointError(LLM2VecError, OSError):
    """A model folder or repo id that is missing, incomplete or corrupt."""


class AdapterMismatchError(LLM2VecError, ValueError):
    """A PEFT adapter that does not fit the base model it is applied to."""


class TokenizerError(LLM2VecError, ValueError):
    """A tokenizer that does not fit its model (e.g. a special token with no embedding row)."""

