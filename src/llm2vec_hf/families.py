"""The support matrix: which families llm2vec-hf supports, refuses or cannot load on this transformers, and what
the conformance suite measured for each.

Nothing here is written by hand: ``pytest tests/modeling/test_conformance.py --family-matrix
src/llm2vec_hf/families.json`` records every check's outcome per family under the transformers version it ran on
(``tests/conftest.py``), once on the oldest supported transformers and once on the newest. ``llm2vec-hf families``
and ``docs/families.md`` render that file, the declarations in ``modeling/modeling_llm2vec.py`` and the serving
engines' status (``modeling/serving_engines.py``: vLLM's measured by ``benchmarks/vllm_families.py``, TEI's read
from its source).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .modeling.modeling_llm2vec import FAMILIES, REFUSED_FAMILIES, UNAVAILABLE_FAMILIES
from .modeling.serving_engines import TEI_FAMILIES
from .serving import vllm_status

#: The recorded outcomes that ship with the package.
MATRIX_FILE = Path(__file__).with_name("families.json")
#: check -> (column title, the conformance tests that decide it; a cell passes when all of them pass).
CHECKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "eager": ("eager", ("test_bidirectional", "test_equals_the_independent_reference")),
    "sdpa": ("sdpa", ("test_bidirectional", "test_equals_the_independent_reference")),
    "flex_attention": ("flex", ("test_flex_attention",)),
    "packed": ("packed rows", ("test_packed_rows_equal_padded_rows",)),
    "export": ("export: AutoModel = ST = LLM2Vec", ("test_export_paths_give_the_same_vectors",)),
    "native": ("no remote code", ("test_native_class_runs_the_export_bidirectionally",)),
    "mntp": ("MNTP", ("test_one_mntp_step_trains",)),
    "contrastive": ("contrastive", ("test_one_contrastive_step_trains",)),
}
BACKEND_CHECKS = ("eager", "sdpa", "flex_attention")


def matrix_cell(nodeid: str) -> tuple[str, str] | None:
    """``(family, check)`` of a conformance test id (``…/test_conformance.py::test_bidirectional[llama-sdpa]``), or
    None for any other test."""
    if "test_conformance.py::" not in nodeid or "[" not in nodeid:
        return None
    name, _, params = nodeid.rsplit("::", 1)[-1].partition("[")
    parts = params.rstrip("]").split("-")
    for check, (_, tests) in CHECKS.items():
        if name in tests:
            if check in ("eager", "sdpa"):  # parametrized by backend
                backend = next((p for p in parts if p in BACKEND_CHECKS), None)
                if backend is None:
                    return None
                check = backend
            family = next(p for p in parts if p not in BACKEND_CHECKS)
            return family, check
    return None


def record_outcomes(path: str | os.PathLike, outcomes: dict[str, dict[str, str]]) -> None:
    """Merges one run's ``{family: {check: outcome}}`` into ``path`` under this transformers' version."""
    import torch
    import transformers

    path = Path(path)
    data = json.loads(path.read_text()) if path.is_file() else {}
    runs = data.setdefault("runs", {})
    run = runs.setdefault(transformers.__version__, {"torch": torch.__version__, "outcomes": {}})
    run["torch"] = torch.__version__
    for family, checks in outcomes.items():
        run["outcomes"].setdefault(family, {}).update(checks)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def _version_key(version: str) -> tuple:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split(".")[:3])


def load_runs(path: str | os.PathLike = MATRIX_FILE) -> dict[str, dict]:
    """The recorded runs, oldest transformers first."""
    path = Path(path)
    runs = json.loads(path.read_text()).get("runs", {}) if path.is_file() else {}
    return dict(sorted(runs.items(), key=lambda item: _version_key(item[0])))


def _cell(outcomes: list[tuple[str, str]]) -> str:
    """One cell over the recorded versions: ✓ (passed on all), ✗ (failed on one, named), – reason (skipped)."""
    failed = [version for version, outcome in outcomes if outcome == "failed"]
    if failed:
        return "✗ (transformers " + ", ".join(failed) + ")"
    skipped = sorted({outcome.removeprefix("skipped: ") for _, outcome in outcomes if outcome.startswith("skipped")})
    if skipped:
        return "– " + "; ".join(skipped)
    return "✓" if outcomes else "not measured"


def support_rows(path: str | os.PathLike = MATRIX_FILE) -> list[dict[str, str]]:
    """One row per declared family (available here or not): status, min transformers, every check, serving."""
    runs = load_runs(path)
    rows = []
    for family in sorted(set(FAMILIES) | set(UNAVAILABLE_FAMILIES)):
        measured = [(version, run["outcomes"][family]) for version, run in runs.items() if family in run["outcomes"]]
        ran = [(v, o) for v, o in measured if not any(x.startswith("skipped: ") and "needs transformers" in x
                                                       for x in o.values())]
        working = [v for v, o in ran if "failed" not in o.values()]
        row = {
            "family": family,
            "status": "supported",  # the same table on every transformers; `render_matrix` says what this one lacks
            "min transformers": working[0] if working else "not measured",
        }
        for check, (title, _) in CHECKS.items():
            row[title] = _cell([(v, o[check]) for v, o in ran if check in o])
        row["vLLM"] = vllm_status(family)
        row["TEI"] = TEI_FAMILIES[family][0] if family in TEI_FAMILIES else "not served"
        rows.append(row)
    return rows


def refused_groups() -> dict[str, list[str]]:
    """``{reason: families}``: every refused family of the causal-LM mapping, grouped by its one-line reason."""
    groups: dict[str, list[str]] = {}
    for family, reason in sorted(REFUSED_FAMILIES.items()):
        groups.setdefault(reason, []).append(family)
    return groups


def render_matrix(markdown: bool = False, path: str | os.PathLike = MATRIX_FILE) -> str:
    """The support matrix as a Markdown table (docs/families.md) or as plain text (``llm2vec-hf families``)."""
    rows = support_rows(path)
    columns = ["family", "status", "min transformers"] + [title for title, _ in CHECKS.values()] + ["vLLM", "TEI"]
    runs = load_runs(path)
    measured_on = ", ".join(f"transformers {v} (torch {r['torch']})" for v, r in runs.items()) or "nothing yet"
    lines = []
    if markdown:
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in rows]
        lines += ["", f"Measured on {measured_on}.", "", "Refused (every other causal-LM family of transformers; "
                  "`family_for` raises the reason as one line):", ""]
        lines += [f"- {reason}: " + ", ".join(f"`{f}`" for f in families)
                  for reason, families in refused_groups().items()]
        return "\n".join(lines) + "\n"

    for row in rows:
        missing = UNAVAILABLE_FAMILIES.get(row["family"])
        lines.append(f"{row['family']}: {row['status']}" + (f" (not here: {missing})" if missing else ""))
        lines += [f"    {c}: {row[c]}" for c in columns[2:] if c in row]
    for reason, families in refused_groups().items():
        lines.append(f"refused: {reason}")
        lines.append("    " + ", ".join(families))
    lines.append(f"Measured on {measured_on}; docs/families.md has the table.")
    return "\n".join(lines) + "\n"
