"""When encoding compiles the model first (`should_compile`): the one decision the encode command, its worker
processes and the Ray actors share."""

from __future__ import annotations

import os
import shutil

import torch

from ..modeling.packing import runs_varlen


#: `compile_for_inference` costs a fixed time once and saves a fraction of eager encoding time, so it pays only for
#: enough work, counted in FLOPs (2 × non-embedding parameters × tokens); the threshold and its measurement are in
#: benchmarks/RESULTS.md, "When compiling pays".
AUTO_COMPILE_MIN_FLOPS = 1e14
#: Characters per token assumed when only the size of an input is known (English BPE vocabularies: 3.5–4.5).
CHARS_PER_TOKEN = 4


def should_compile(model: torch.nn.Module, tokens: int, device: str | torch.device | None = None,
                   requested: bool | None = None) -> bool:
    """Whether to `compile_for_inference` before encoding about ``tokens`` tokens with ``model`` on ``device``.

    ``requested`` True or False is the user's choice and wins. None decides: yes on a CPU with a C++ compiler
    (inductor needs one) when the forward FLOPs of the input reach `AUTO_COMPILE_MIN_FLOPS`, so that the one-off
    compile is paid back; never elsewhere (not measured on accelerators), and never for a model whose packed calls
    attend per text (`runs_varlen`): a compiled model packs with masked rows, and per-text attention gains more
    (about 1.2×) than compiling does (1.05–1.1×).
    """
    if requested is not None:
        return bool(requested)
    if torch.device(device or "cpu").type != "cpu" or runs_varlen(model):
        return False
    if not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        return False
    parameters = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    return 2 * parameters * tokens >= AUTO_COMPILE_MIN_FLOPS
