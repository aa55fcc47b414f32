"""Which instruction an MTEB evaluation gives each task and side (no model, no mteb needed)."""

from __future__ import annotations

from llm2vec_hf.evaluation.instructions import MTEB_INSTRUCTIONS, as_instruction, resolve_instruction


def test_shipped_set_covers_the_56_english_tasks_llm2vec_reported():
    cqadupstack = [name for name in MTEB_INSTRUCTIONS if name.startswith("CQADupstack")]
    assert len(cqadupstack) == 12
    assert len(MTEB_INSTRUCTIONS) - len(cqadupstack) + 1 == 56
    assert MTEB_INSTRUCTIONS["MSMARCO"] == "Given a web search query, retrieve relevant passages that answer the query:"
    assert MTEB_INSTRUCTIONS["STSBenchmark"] == "Retrieve semantically similar text:"
    assert all(text.endswith(":") and text == text.strip() for text in MTEB_INSTRUCTIONS.values())


def test_retrieval_queries_get_the_shipped_instruction_and_documents_none():
    prompts = {"query": "Given a web search query, retrieve relevant passages ", "document": ""}
    assert resolve_instruction("SciFact", "Retrieval", "query", prompts) == (
        MTEB_INSTRUCTIONS["SciFact"], "shipped instruction set")
    assert resolve_instruction("SciFact", "Retrieval", "document", prompts)[0] == ""


def test_checkpoint_prompts_named_after_the_task_win():
    prompts = {"SciFact-query": "Q:", "SciFact-document": "D:", "STS12": "Same meaning:"}
    assert resolve_instruction("SciFact", "Retrieval", "query", prompts)[0] == "Q:"
    assert resolve_instruction("SciFact", "Retrieval", "document", prompts)[0] == "D:"
    # symmetric task: one instruction for both sides, whatever side mteb names
    assert resolve_instruction("STS12", "STS", None, prompts)[0] == "Same meaning:"
    assert resolve_instruction("STS12", "STS", "query", prompts)[0] == "Same meaning:"


def test_unknown_tasks_fall_back_to_task_prompt_then_checkpoint_then_default():
    assert resolve_instruction("MyTask", "Retrieval", "query", {}, task_prompt={"query": "Find the answer."}) == (
        "Find the answer:", "task prompt")
    assert resolve_instruction("MyTask", "Retrieval", "query", {"query": "Web search:"})[0] == "Web search:"
    # a checkpoint's generic "query" prompt is for retrieval; an STS task does not take it
    assert resolve_instruction("MySTS", "STS", None, {"query": "Web search:"}, default="Retrieve semantically similar text.") == (
        "Retrieve semantically similar text:", "mteb default for the task type")
    assert resolve_instruction("MySTS", "STS", None, {}) == ("", "none")


def test_instructions_can_be_switched_off():
    assert resolve_instruction("SciFact", "Retrieval", "query", {"SciFact": "x"}, use_instructions=False)[0] == ""


def test_as_instruction_matches_mteb_llm2vec_wrapper():
    assert as_instruction("Retrieve semantically similar text.") == "Retrieve semantically similar text:"
    assert as_instruction("  Given a claim, find documents  ") == "Given a claim, find documents:"
    assert as_instruction("") == ""


def test_user_overrides_come_first():
    overrides = {"STS12": "Mine:", "SciFact-query": "Q mine:", "SciFact-document": "D mine:"}
    prompts = {"STS12": "Checkpoint's:", "SciFact": "Checkpoint's:"}
    assert resolve_instruction("STS12", "STS", None, prompts, overrides=overrides) == ("Mine:", "--instructions 'STS12'")
    assert resolve_instruction("SciFact", "Retrieval", "query", prompts, overrides=overrides)[0] == "Q mine:"
    assert resolve_instruction("SciFact", "Retrieval", "document", prompts, overrides=overrides)[0] == "D mine:"
    # a task-wide override is for queries: documents of a retrieval task stay bare
    assert resolve_instruction("NQ", "Retrieval", "document", {}, overrides={"NQ": "x"})[0] == ""
