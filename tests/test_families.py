"""The support matrix: recorded by the conformance suite, shipped as families.json, printed by `llm2vec-hf
families`, and shown in docs/families.md."""

from __future__ import annotations

from pathlib import Path

from llm2vec_hf import cli
from llm2vec_hf.families import CHECKS, MATRIX_FILE, load_runs, matrix_cell, render_matrix
from llm2vec_hf.modeling.modeling_llm2vec import FAMILIES, REFUSED_FAMILIES, UNAVAILABLE_FAMILIES

REPO = Path(__file__).resolve().parent.parent
START, END = "<!-- generated: llm2vec-hf families --markdown -->", "<!-- end generated -->"


def test_test_ids_map_to_matrix_cells():
    base = "tests/modeling/test_conformance.py::"
    assert matrix_cell(base + "test_bidirectional[qwen2_moe-sdpa]") == ("qwen2_moe", "sdpa")
    assert matrix_cell(base + "test_equals_the_independent_reference[gemma3_text-eager]") == ("gemma3_text", "eager")
    assert matrix_cell(base + "test_flex_attention[phi3]") == ("phi3", "flex_attention")
    assert matrix_cell(base + "test_one_mntp_step_trains[mixtral]") == ("mixtral", "mntp")
    assert matrix_cell(base + "test_windows_are_widened_not_dropped") is None
    assert matrix_cell("tests/modeling/test_packing.py::test_x[llama]") is None


def test_the_shipped_matrix_was_recorded_for_every_family_on_the_oldest_and_a_newer_transformers():
    """Adding a family without running the suite on both versions (--family-matrix) fails here."""
    runs = load_runs(MATRIX_FILE)
    assert "5.2.0" in runs and len(runs) >= 2, sorted(runs)
    for version, run in runs.items():
        for family in set(FAMILIES) | set(UNAVAILABLE_FAMILIES):
            outcomes = run["outcomes"].get(family)
            assert outcomes, (version, family)
            if not all("needs transformers" in outcome for outcome in outcomes.values()):  # not skipped as absent
                assert set(outcomes) == set(CHECKS), (version, family, outcomes)


def test_docs_show_the_recorded_matrix():
    doc = (REPO / "docs" / "families.md").read_text()
    generated = doc[doc.index(START) + len(START) : doc.index(END)].strip()
    assert generated == render_matrix(markdown=True).strip()


def test_families_command_prints_every_family(capsys):
    assert cli.main(["families"]) == 0
    out = capsys.readouterr().out
    for family in FAMILIES:
        assert f"\n{family}: " in "\n" + out
    refused_lines = [line for line in out.splitlines() if line.startswith("    ") and ": " not in line]
    listed = {name for line in refused_lines for name in line.strip().split(", ")}
    assert listed == set(REFUSED_FAMILIES)
    assert {line.removeprefix("refused: ") for line in out.splitlines() if line.startswith("refused: ")} == set(
        REFUSED_FAMILIES.values())
