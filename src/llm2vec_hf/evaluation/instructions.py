"""Per-task instructions for the English MTEB tasks, and how an evaluation picks one.

``MTEB_INSTRUCTIONS`` is the instruction set LLM2Vec was evaluated with (the official repository's
``test_configs/mteb/task_to_instructions.json``, McGill-NLP/llm2vec), itself the E5-Mistral set
(Wang et al., 2023, "Improving Text Embeddings with Large Language Models", Table 13) with a trailing colon.
LLM2Vec reads ``instruction + " " + text`` and pools only the text's tokens.

Where instructions go (as in LLM2Vec's and E5-Mistral's evaluations): for retrieval and reranking, only the
queries get the instruction and documents are encoded as they are; symmetric tasks (STS, classification,
clustering, pair classification, summarization) give it to every text.
"""

from __future__ import annotations

from typing import Any, Mapping

_CQADUPSTACK = (
    "Given a question, retrieve detailed question descriptions from Stackexchange that are duplicates to the "
    "given question:"
)
_STS = "Retrieve semantically similar text:"

#: task name -> instruction (56 English MTEB tasks; the 12 CQADupstack sub-forums share one).
MTEB_INSTRUCTIONS: dict[str, str] = {
    # Retrieval
    "ArguAna": "Given a claim, find documents that refute the claim:",
    "ClimateFEVER": "Given a claim about climate change, retrieve documents that support or refute the claim:",
    **{
        f"CQADupstack{forum}Retrieval": _CQADUPSTACK
        for forum in (
            "Android", "English", "Gaming", "Gis", "Mathematica", "Physics",
            "Programmers", "Stats", "Tex", "Unix", "Webmasters", "Wordpress",
        )
    },
    "DBPedia": "Given a query, retrieve relevant entity descriptions from DBPedia:",
    "FEVER": "Given a claim, retrieve documents that support or refute the claim:",
    "FiQA2018": "Given a financial question, retrieve user replies that best answer the question:",
    "HotpotQA": "Given a multi-hop question, retrieve documents that can help answer the question:",
    "MSMARCO": "Given a web search query, retrieve relevant passages that answer the query:",
    "NFCorpus": "Given a question, retrieve relevant documents that best answer the question:",
    "NQ": "Given a question, retrieve Wikipedia passages that answer the question:",
    "QuoraRetrieval": "Given a question, retrieve questions that are semantically equivalent to the given question:",
    "SCIDOCS": "Given a scientific paper title, retrieve paper abstracts that are cited by the given paper:",
    "SciFact": "Given a scientific claim, retrieve documents that support or refute the claim:",
    "Touche2020": "Given a question, retrieve detailed and persuasive arguments that answer the question:",
    "TRECCOVID": "Given a query on COVID-19, retrieve documents that answer the query:",
    # Reranking
    "AskUbuntuDupQuestions": "Retrieve duplicate questions from AskUbuntu forum:",
    "MindSmallReranking": "Retrieve relevant news articles based on user browsing history:",
    "SciDocsRR": "Given a title of a scientific paper, retrieve the titles of other relevant papers:",
    "StackOverflowDupQuestions": "Retrieve duplicate questions from StackOverflow forum:",
    # Classification
    "AmazonCounterfactualClassification": (
        "Classify a given Amazon customer review text as either counterfactual or notcounterfactual:"
    ),
    "AmazonPolarityClassification": "Classify Amazon reviews into positive or negative sentiment:",
    "AmazonReviewsClassification": "Classify the given Amazon review into its appropriate rating category:",
    "Banking77Classification": "Given a online banking query, find the corresponding intents:",
    "EmotionClassification": (
        "Classify the emotion expressed in the given Twitter message into one of the six emotions: anger, fear, "
        "joy, love, sadness, and surprise:"
    ),
    "ImdbClassification": "Classify the sentiment expressed in the given movie review text from the IMDB dataset:",
    "MassiveIntentClassification": "Given a user utterance as query, find the user intents:",
    "MassiveScenarioClassification": "Given a user utterance as query, find the user scenarios:",
    "MTOPDomainClassification": "Classify the intent domain of the given utterance in task-oriented conversation:",
    "MTOPIntentClassification": "Classify the intent of the given utterance in task-oriented conversation:",
    "ToxicConversationsClassification": "Classify the given comments as either toxic or not toxic:",
    "TweetSentimentExtractionClassification": (
        "Classify the sentiment of a given tweet as either positive, negative, or neutral:"
    ),
    # Clustering
    "ArxivClusteringP2P": "Identify the main and secondary category of Arxiv papers based on the titles and abstracts:",
    "ArxivClusteringS2S": "Identify the main and secondary category of Arxiv papers based on the titles:",
    "BiorxivClusteringP2P": "Identify the main category of Biorxiv papers based on the titles and abstracts:",
    "BiorxivClusteringS2S": "Identify the main category of Biorxiv papers based on the titles:",
    "MedrxivClusteringP2P": "Identify the main category of Medrxiv papers based on the titles and abstracts:",
    "MedrxivClusteringS2S": "Identify the main category of Medrxiv papers based on the titles:",
    "RedditClustering": "Identify the topic or theme of Reddit posts based on the titles:",
    "RedditClusteringP2P": "Identify the topic or theme of Reddit posts based on the titles and posts:",
    "StackExchangeClustering": "Identify the topic or theme of StackExchange posts based on the titles:",
    "StackExchangeClusteringP2P": "Identify the topic or theme of StackExchange posts based on the given paragraphs:",
    "TwentyNewsgroupsClustering": "Identify the topic or theme of the given news articles:",
    # Pair classification
    "SprintDuplicateQuestions": "Retrieve duplicate questions from Sprint forum:",
    "TwitterSemEval2015": "Retrieve tweets that are semantically similar to the given tweet:",
    "TwitterURLCorpus": "Retrieve tweets that are semantically similar to the given tweet:",
    # STS
    **{name: _STS for name in ("BIOSSES", "SICK-R", "STS12", "STS13", "STS14", "STS15", "STS16", "STS17", "STS22",
                               "STSBenchmark")},
    # Summarization
    "SummEval": "Given a news summary, retrieve other semantically similar summaries:",
}

_RERANKING = ("AskUbuntuDupQuestions", "MindSmallReranking", "SciDocsRR", "StackOverflowDupQuestions")
_LAST_RETRIEVAL = list(MTEB_INSTRUCTIONS).index("TRECCOVID")
#: task -> mteb task type, for the tasks of ``MTEB_INSTRUCTIONS`` that are retrieval or reranking (the rest are
#: symmetric); checked against mteb's registry in the tests.
MTEB_TASK_TYPES: dict[str, str] = {
    **{name: "Retrieval" for name in list(MTEB_INSTRUCTIONS)[: _LAST_RETRIEVAL + 1]},
    **{name: "Reranking" for name in _RERANKING},
}

#: mteb task types whose two sides play different roles: only queries get the instruction.
ASYMMETRIC_TYPES = frozenset({"Retrieval", "Reranking", "InstructionRetrieval", "InstructionReranking"})


def as_instruction(text: str | None) -> str:
    """An mteb task prompt in LLM2Vec's form: stripped, ending with a colon (as mteb's own LLM2Vec wrapper does)."""
    text = (text or "").strip()
    if text and not text.endswith(":"):
        text = text.rstrip(".") + ":"
    return text


def resolve_instruction(
    task_name: str,
    task_type: str | None,
    prompt_type: str | None,
    checkpoint_prompts: Mapping[str, str | None] | None = None,
    task_prompt: str | Mapping[str, str] | None = None,
    shipped: Mapping[str, str] | None = None,
    use_instructions: bool = True,
    default: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """The instruction for one side (``prompt_type``: "query", "document" or None) of one task, and its source.

    ``overrides`` (the user's ``--instructions`` file) come first: ``{task}-{prompt_type}`` or ``{task}`` (for
    documents of asymmetric tasks only ``{task}-document``). Checkpoint named prompts are looked up with mteb's key
    names. Then, for a query or a symmetric task, first match wins:
    1. checkpoint prompt ``{task}-{prompt_type}``, then ``{task}``;
    2. the shipped set (``MTEB_INSTRUCTIONS``, or ``shipped``);
    3. the task's own prompt (mteb task metadata ``prompt``, or ``instruction`` of a local task), as a colon form;
    4. checkpoint prompt ``{task_type}-{prompt_type}``, then ``{task_type}``, then ``query`` (asymmetric tasks only);
    5. ``default`` (mteb's generic prompt for the task's type, e.g. "Retrieve text based on user query.").
    Documents of asymmetric tasks get ``{task}-document`` / ``{task_type}-document`` / ``document`` from the
    checkpoint, else nothing. Returns ``("", "none")`` when nothing applies or ``use_instructions`` is False.
    """
    if not use_instructions:
        return "", "disabled"
    # export stores a prompt as LLM2Vec reads it (``instruction.strip() + " "``, for stock modules and TEI); the
    # instruction itself is the stripped text
    prompts = {k: v.strip() for k, v in (checkpoint_prompts or {}).items() if v is not None}
    shipped = MTEB_INSTRUCTIONS if shipped is None else shipped
    asymmetric = task_type in ASYMMETRIC_TYPES
    overrides = overrides or {}
    side = prompt_type if asymmetric else None
    keys = [f"{task_name}-document"] if asymmetric and prompt_type == "document" else (
        ([f"{task_name}-{side}"] if side else []) + [task_name])
    for key in keys:
        if key in overrides:
            return overrides[key], f"--instructions {key!r}"
    if asymmetric and prompt_type == "document":
        for key in (f"{task_name}-document", f"{task_type}-document", "document"):
            if key in prompts:
                return prompts[key], f"checkpoint prompt {key!r}"
        return "", "none"
    keys = ([f"{task_name}-{side}"] if side else []) + [task_name]
    for key in keys:
        if key in prompts:
            return prompts[key], f"checkpoint prompt {key!r}"
    if task_name in shipped:
        return shipped[task_name], "shipped instruction set"
    if isinstance(task_prompt, Mapping):
        task_prompt = task_prompt.get(side or "query")
    if task_prompt:
        return as_instruction(task_prompt), "task prompt"
    keys = ([f"{task_type}-{side}"] if side else []) + ([task_type] if task_type else [])
    keys += ["query"] if asymmetric else []
    for key in keys:
        if key in prompts:
            return prompts[key], f"checkpoint prompt {key!r}"
    if default:
        return as_instruction(default), "mteb default for the task type"
    return "", "none"


def sentence_transformers_prompts(instructions: Mapping[str, str] | None = None,
                                  task_types: Mapping[str, str] | None = None) -> dict[str, str]:
    """Named prompts that carry the instruction set inside a checkpoint, keyed the way mteb looks them up.

    Retrieval/reranking tasks get ``{task}-query`` (the instruction) and ``{task}-document`` (empty); the others
    ``{task}``. Stored in a checkpoint's ``config_sentence_transformers.json`` (``export --prompt``), they make
    plain ``mteb.evaluate(SentenceTransformer(checkpoint), tasks)`` follow LLM2Vec's protocol, and
    ``llm2vec-hf eval`` reads them first. ``task_types`` (task -> mteb type) defaults to ``MTEB_TASK_TYPES``.
    """
    instructions = MTEB_INSTRUCTIONS if instructions is None else instructions
    task_types = MTEB_TASK_TYPES if task_types is None else task_types
    prompts: dict[str, str] = {}
    for task, instruction in instructions.items():
        if task_types.get(task) in ASYMMETRIC_TYPES:
            prompts[f"{task}-query"] = instruction
            prompts[f"{task}-document"] = ""
        else:
            prompts[task] = instruction
    return prompts


def instruction_table(resolved: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table of the instructions an evaluation used (task, side, source, instruction)."""
    lines = []
    for task, sides in resolved.items():
        for side, (instruction, source) in sides.items():
            lines.append(f"{task:<28} {side or '-':<9} {source:<30} {instruction!r}")
    return "\n".join(lines)
