"""``llm2vec-hf eval`` on MTEB: a retrieval task and an STS task defined from local files, run offline through
mteb's own evaluation code (mteb.evaluate, its retrieval and STS evaluators, its results folder).

The scores are checked against the same metrics computed here by hand from the checkpoint's own vectors, with
the instructions the evaluation should have chosen: a wrong instruction, a wrong side, or texts fed in another
form would change them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

mteb = pytest.importorskip("mteb", reason="mteb is not installed: install the extra, pip install -e '.[dev,eval]'")

from llm2vec_hf import cli  # noqa: E402
from llm2vec_hf.checkpoint.export import export_checkpoint  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"
STS_PROMPT = "Retrieve sentences that mean the same:"
RETRIEVAL_INSTRUCTION = "Given a word, retrieve the sentence that defines it:"  # task.json's, in colon form


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def checkpoint(tiny_bases, tmp_path_factory) -> Path:
    prompts = {"query": "Given a web search query, retrieve relevant passages ", "TinySTS": STS_PROMPT}
    folder = tmp_path_factory.mktemp("eval-mteb") / "tiny-llama"
    return Path(export_checkpoint(str(tiny_bases["llama"]), str(folder), prompts=prompts, max_length=64))


@pytest.fixture(scope="module")
def evaluated(checkpoint, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    output = tmp_path_factory.mktemp("eval-mteb-out")
    code = cli.main(["eval", str(checkpoint), "--tasks", str(FIXTURES / "retrieval"), str(FIXTURES / "sts"),
                     "--output", str(output), "--batch-size", "8", "--model-card"])
    assert code == 0
    return output, json.loads((output / "summary.json").read_text())


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def model(checkpoint):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(checkpoint), trust_remote_code=True)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return a @ b.T


def score(summary: dict, task: str) -> float:
    (row,) = [r for r in summary["rows"] if r["task"] == task]
    return row["score"]


def test_results_folder_is_mtebs(evaluated):
    output, summary = evaluated
    cache = mteb.ResultCache(str(output))
    assert cache.get_models() == [("tiny-llama", "no_revision_available")]
    assert sorted(cache.get_task_names()) == ["TinyDefinitionRetrieval", "TinySTS"]
    folder = output / "results" / "tiny-llama" / "no_revision_available"
    assert (folder / "model_meta.json").is_file()
    for task in ("TinyDefinitionRetrieval", "TinySTS"):
        result = mteb.TaskResult.from_disk(folder / f"{task}.json")
        assert result.get_score() == pytest.approx(score(summary, task), abs=1e-6)
    assert summary["mteb_results_dir"] == str(folder)


def test_instructions_used(evaluated):
    _, summary = evaluated
    used = summary["instructions"]
    assert used["TinyDefinitionRetrieval"]["query"] == [RETRIEVAL_INSTRUCTION, "task prompt"]
    assert used["TinyDefinitionRetrieval"]["document"][0] == ""
    assert used["TinySTS"]["all"] == [STS_PROMPT, "checkpoint prompt 'TinySTS'"]


def test_retrieval_score_is_ndcg_of_the_checkpoints_vectors(evaluated, model):
    _, summary = evaluated
    corpus = read_jsonl(FIXTURES / "retrieval" / "corpus.jsonl")
    queries = read_jsonl(FIXTURES / "retrieval" / "queries.jsonl")
    qrels = dict(line.split("\t")[:2] for line in (FIXTURES / "retrieval" / "qrels.tsv").read_text().splitlines()[1:])
    documents = model.encode([f"{d['title']} {d['text']}" for d in corpus], convert_to_numpy=True)
    vectors = model.encode([q["text"] for q in queries], prompt=RETRIEVAL_INSTRUCTION, convert_to_numpy=True)
    similarity = cosine(vectors, documents)
    gains = []
    for row, query in zip(similarity, queries):
        ranking = [corpus[i]["id"] for i in np.argsort(-row)]
        rank = ranking.index(qrels[query["id"]]) + 1
        gains.append(1 / math.log2(rank + 1) if rank <= 10 else 0.0)
    assert score(summary, "TinyDefinitionRetrieval") == pytest.approx(float(np.mean(gains)), abs=1e-5)  # mteb keeps 5 decimals


def test_sts_scores_use_the_checkpoint_prompt_on_both_sides(evaluated, model, checkpoint):
    from scipy.stats import pearsonr, spearmanr

    output, summary = evaluated
    pairs = read_jsonl(FIXTURES / "sts" / "pairs.jsonl")
    gold = [p["score"] for p in pairs]

    def similarities(prompt):
        a = model.encode([p["sentence1"] for p in pairs], prompt=prompt, convert_to_numpy=True)
        b = model.encode([p["sentence2"] for p in pairs], prompt=prompt, convert_to_numpy=True)
        return np.sum(cosine(a, b) * np.eye(len(pairs)), axis=1)

    with_prompt, without = similarities(STS_PROMPT), similarities(None)
    result = json.loads((output / "results" / "tiny-llama" / "no_revision_available" / "TinySTS.json").read_text())
    scores = result["scores"]["test"][0]
    assert scores["cosine_spearman"] == pytest.approx(spearmanr(with_prompt, gold).statistic, abs=2e-6)
    assert scores["cosine_pearson"] == pytest.approx(pearsonr(with_prompt, gold).statistic, abs=2e-6)
    # the prompt matters, so the check above can tell whether it was used
    assert abs(pearsonr(without, gold).statistic - scores["cosine_pearson"]) > 1e-3
    assert score(summary, "TinySTS") == pytest.approx(scores["cosine_spearman"], abs=1e-6)


def test_eval_command_shows_no_dependency_deprecation_notices(checkpoint, tmp_path, recwarn):
    """mteb, sentence-transformers and PEFT raise notices about their own calls into renamed APIs; the command's
    user cannot act on them. Judged by where each notice comes from, not by its wording."""
    code = cli.main(["eval", str(checkpoint), "--tasks", str(FIXTURES / "sts"), "--output", str(tmp_path)])
    assert code == 0
    site = Path(sentence_transformers_package_root()).parent
    leaked = [w for w in recwarn if issubclass(w.category, (FutureWarning, DeprecationWarning))
              and Path(w.filename).is_relative_to(site)]
    assert not leaked, [f"{w.filename}:{w.lineno}: {w.message}" for w in leaked]


def sentence_transformers_package_root() -> str:
    import sentence_transformers

    return str(Path(sentence_transformers.__file__).parent)


def test_instructions_file_takes_precedence(checkpoint, model, tmp_path):
    from scipy.stats import pearsonr

    (tmp_path / "instructions.json").write_text(json.dumps({"TinySTS": "Find paraphrases:"}))
    code = cli.main(["eval", str(checkpoint), "--tasks", str(FIXTURES / "sts"), "--output", str(tmp_path / "out"),
                     "--instructions", str(tmp_path / "instructions.json")])
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["instructions"]["TinySTS"]["all"] == ["Find paraphrases:", "--instructions 'TinySTS'"]
    pairs = read_jsonl(FIXTURES / "sts" / "pairs.jsonl")
    a = model.encode([p["sentence1"] for p in pairs], prompt="Find paraphrases:", convert_to_numpy=True)
    b = model.encode([p["sentence2"] for p in pairs], prompt="Find paraphrases:", convert_to_numpy=True)
    similarity = np.sum(cosine(a, b) * np.eye(len(pairs)), axis=1)
    result = json.loads(next((tmp_path / "out" / "results").rglob("TinySTS.json")).read_text())
    expected = pearsonr(similarity, [p["score"] for p in pairs]).statistic
    assert result["scores"]["test"][0]["cosine_pearson"] == pytest.approx(expected, abs=2e-6)


def test_scores_go_into_the_model_card(evaluated, checkpoint):
    _, summary = evaluated
    assert summary["model_card"] is True
    from huggingface_hub import ModelCard

    card = ModelCard.load(checkpoint / "README.md")
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[("MTEB TinySTS", "cosine_spearman")] == pytest.approx(score(summary, "TinySTS"), abs=1e-6)
    assert results[("MTEB TinyDefinitionRetrieval", "ndcg_at_10")] == pytest.approx(
        score(summary, "TinyDefinitionRetrieval"), abs=1e-6)


def test_unknown_task_is_a_clear_error(checkpoint, tmp_path, capsys):
    code = cli.main(["eval", str(checkpoint), "--tasks", "NoSuchTask", "--output", str(tmp_path)])
    assert code == 2
    assert "unknown MTEB task 'NoSuchTask'" in capsys.readouterr().err


@pytest.mark.slow
def test_llm2vec_task_set_resolves_in_mtebs_registry():
    """Every task of the shipped instruction set is an mteb task, English subsets only; no data is loaded."""
    from llm2vec_hf.evaluation.instructions import MTEB_INSTRUCTIONS, resolve_instruction
    from llm2vec_hf.evaluation.tasks import get_tasks

    tasks = get_tasks(["llm2vec-mteb"])  # mteb's MTEB(eng, v1): CQADupstack is one task of 12 sub-tasks
    assert len(tasks) == 56
    subsets = {t.metadata.name: t.hf_subsets for t in tasks if t.metadata.is_multilingual}
    assert subsets["STS17"] == ["en-en"] and subsets["STS22"] == ["en"]
    assert subsets["AmazonCounterfactualClassification"] == ["en"]
    encoded = [sub for t in tasks for sub in (t.metadata.tasks if hasattr(t.metadata, "tasks") else [t])]
    assert sorted(t.metadata.name for t in encoded) == sorted(MTEB_INSTRUCTIONS)
    for task in encoded:
        side = "query" if task.metadata.type in ("Retrieval", "Reranking") else None
        instruction, source = resolve_instruction(task.metadata.name, task.metadata.type, side, {})
        assert (instruction, source) == (MTEB_INSTRUCTIONS[task.metadata.name], "shipped instruction set")
    assert get_tasks(["GermanSTSBenchmark"])[0].hf_subsets == ["default"]  # monolingual: no language filter


def test_checkpoint_prompts_for_plain_mteb_follow_llm2vec():
    """sentence_transformers_prompts() stored in a checkpoint: mteb's own prompt lookup (what it does for any
    SentenceTransformer) then gives queries the instruction, retrieval documents none, symmetric tasks one."""
    from mteb.models.abs_encoder import get_prompt_name
    from mteb.types import PromptType

    from llm2vec_hf.evaluation.instructions import MTEB_INSTRUCTIONS, MTEB_TASK_TYPES, sentence_transformers_prompts

    prompts = sentence_transformers_prompts()
    for name, instruction in MTEB_INSTRUCTIONS.items():
        metadata = mteb.get_task(name).metadata
        assert (MTEB_TASK_TYPES.get(name) or "symmetric") == (
            metadata.type if metadata.type in ("Retrieval", "Reranking") else "symmetric")
        sides = ((PromptType.query, instruction), (PromptType.document, "")) if name in MTEB_TASK_TYPES else (
            (None, instruction), (PromptType.query, instruction))
        for side, wanted in sides:
            assert prompts[get_prompt_name(prompts, metadata, side)] == wanted


def test_registered_mteb_tasks_get_the_shipped_instructions(model, tmp_path):
    """Real mteb task classes (STS12, SciFact) with a few rows put in place of their Hub data: mteb's own
    InstructSentenceTransformerModel gives them LLM2Vec's instructions (queries and STS texts), documents none."""
    from datasets import Dataset
    from mteb.models.instruct_wrapper import InstructSentenceTransformerModel

    from llm2vec_hf.evaluation.instructions import MTEB_INSTRUCTIONS
    from llm2vec_hf.evaluation.runner import model_meta, mteb_encoders, task_instructions
    from llm2vec_hf.evaluation.tasks import get_tasks

    sts12, scifact = get_tasks(["STS12", "SciFact"])
    pairs = read_jsonl(FIXTURES / "sts" / "pairs.jsonl")
    sts12.dataset = {"test": Dataset.from_list(pairs)}
    corpus = [{"id": d["id"], "text": d["text"], "title": d["title"]}
              for d in read_jsonl(FIXTURES / "retrieval" / "corpus.jsonl")]
    scifact.dataset = {"default": {"test": {
        "corpus": Dataset.from_list(corpus),
        "queries": Dataset.from_list(read_jsonl(FIXTURES / "retrieval" / "queries.jsonl")),
        "relevant_docs": {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}},
        "top_ranked": None,
    }}}
    for task in (sts12, scifact):
        task.data_loaded = True
    resolved = task_instructions([sts12, scifact], {})
    assert resolved["STS12"].used() == {None: (MTEB_INSTRUCTIONS["STS12"], "shipped instruction set")}
    assert resolved["SciFact"].used() == {"query": (MTEB_INSTRUCTIONS["SciFact"], "shipped instruction set"),
                                          "document": ("", "none")}
    ((encoder, names),) = mteb_encoders(model, model_meta(model, "tiny-llama"), resolved)
    assert type(encoder) is InstructSentenceTransformerModel and names == ["STS12", "SciFact"]
    prompts = record_prompts(encoder.model)
    result = mteb.evaluate(encoder, [sts12, scifact], cache=mteb.ResultCache(str(tmp_path)),
                           overwrite_strategy="always", show_progress_bar=False)
    assert {r.task_name for r in result.task_results} == {"STS12", "SciFact"}
    assert set(prompts) == {MTEB_INSTRUCTIONS["STS12"], MTEB_INSTRUCTIONS["SciFact"], None}


def record_prompts(model) -> list:
    """Records the ``prompt`` of every ``encode`` call of ``model`` (a SentenceTransformer)."""
    prompts, encode = [], model.encode

    def recording(*args, prompt=None, **kwargs):
        prompts.append(prompt)
        return encode(*args, prompt=prompt, **kwargs)

    model.encode = recording
    return prompts


@pytest.mark.slow
def test_documents_with_their_own_instruction_and_bare_tasks(checkpoint, model, tmp_path):
    """A task whose documents have an instruction gets its own mteb encoder (instructions by side); with
    --no-instructions every text is encoded bare: the scores are those of the vectors encoded that way."""
    from scipy.stats import spearmanr

    from llm2vec_hf.evaluation.runner import run_mteb

    document = "Represent the definition sentence:"
    overrides = {"TinyDefinitionRetrieval-document": document}
    result = run_mteb(str(checkpoint), [str(FIXTURES / "retrieval")], tmp_path / "own", instructions=overrides,
                      show_progress_bar=False)
    assert result["instructions"]["TinyDefinitionRetrieval"]["document"] == [
        document, "--instructions 'TinyDefinitionRetrieval-document'"]
    corpus = read_jsonl(FIXTURES / "retrieval" / "corpus.jsonl")
    queries = read_jsonl(FIXTURES / "retrieval" / "queries.jsonl")
    qrels = dict(line.split("\t")[:2] for line in (FIXTURES / "retrieval" / "qrels.tsv").read_text().splitlines()[1:])

    def ndcg(document_prompt):
        documents = model.encode([f"{d['title']} {d['text']}" for d in corpus], prompt=document_prompt)
        vectors = model.encode([q["text"] for q in queries], prompt=RETRIEVAL_INSTRUCTION)
        gains = []
        for row, query in zip(cosine(vectors, documents), queries):
            rank = [corpus[i]["id"] for i in np.argsort(-row)].index(qrels[query["id"]]) + 1
            gains.append(1 / math.log2(rank + 1) if rank <= 10 else 0.0)
        return float(np.mean(gains))

    assert result["rows"][0]["score"] == pytest.approx(ndcg(document), abs=1e-5)
    assert ndcg(document) != pytest.approx(ndcg(None), abs=1e-3)  # the document instruction matters here

    bare = run_mteb(str(checkpoint), [str(FIXTURES / "sts")], tmp_path / "bare", use_instructions=False,
                    show_progress_bar=False)
    assert bare["instructions"]["TinySTS"]["all"] == ["", "disabled"]
    pairs = read_jsonl(FIXTURES / "sts" / "pairs.jsonl")
    a = model.encode([p["sentence1"] for p in pairs])
    b = model.encode([p["sentence2"] for p in pairs])
    expected = spearmanr(np.sum(cosine(a, b) * np.eye(len(pairs)), axis=1), [p["score"] for p in pairs]).statistic
    assert bare["rows"][0]["score"] == pytest.approx(expected, abs=2e-6)
