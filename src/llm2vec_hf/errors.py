"""Errors that name the problem; the CLI prints them as one line."""


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """``error`` as one line: libraries raise multi-line messages (PEFT's size mismatches list every tensor)."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class LLM2VecError(Exception):
    """Base class of llm2vec-hf's user-facing errors."""


class CheckpointError(LLM2VecError, OSError):
    """A model folder or repo id that is missing, incomplete or corrupt."""


class AdapterMismatchError(LLM2VecError, ValueError):
    """A PEFT adapter that does not fit the base model it is applied to."""


class TokenizerError(LLM2VecError, ValueError):
    """A tokenizer that does not fit its model (e.g. a special token with no embedding row)."""


def check_positive_options(**values) -> None:
    """Refuses, before any model loads, a command-line option that must be a positive integer (None: unset); the
    rule is the encoder's own (`check_positive_integer`), named as the option is spelled."""
    from .modeling.modeling_llm2vec import check_positive_integer

    for name, value in values.items():
        if value is not None:
            try:
                check_positive_integer(f"--{name.replace('_', '-')}", value)
            except ValueError as error:
                raise LLM2VecError(str(error)) from None
