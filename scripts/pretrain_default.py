#!/usr/bin/env python
"""Pretrains the embedded default model (``src/llm2vec_hf/demo/default_model/``) on ``demo/data/unlabeled.txt``.

A small Llama-architecture causal LM with a 4096-token byte-level BPE tokenizer trained on the same text, trained
from scratch with the transformers ``Trainer`` (causal LM objective, fp32, CPU, fixed seed). 2% of the lines are
held out to report a validation loss; the WordNet evaluation synsets are not in the corpus at all (see
``scripts/build_demo_data.py``).

    python scripts/pretrain_default.py                 # train and save (about 12 min on a shared 2-core CPU)
    python scripts/pretrain_default.py --eval-only     # the sanity check: nDCG@10 on wordnet_eval.jsonl
    python scripts/pretrain_default.py --eval-only --supervised-probe 250   # + headroom after contrastive tuning

The figures of the committed model are in ``src/llm2vec_hf/demo/default_model/README.md`` and ``training_log.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

SEED = 0
VOCAB_SIZE = 4096
BLOCK_SIZE = 128
ARCH = dict(
    hidden_size=192,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=48,
    max_position_embeddings=512,
    tie_word_embeddings=True,
    rms_norm_eps=1e-5,
    initializer_range=0.02,
)
from llm2vec_hf.demo.assets import WORDNET_INSTRUCTION as INSTRUCTION  # noqa: E402  the demo task's instruction


def read_corpus(path: Path) -> tuple[list[str], list[str]]:
    """Lines of ``unlabeled.txt``, split into training lines and 2% held-out lines (deterministic)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    indices = list(range(len(lines)))
    random.Random(SEED).shuffle(indices)
    n_valid = max(1, len(lines) // 50)
    held_out = set(indices[:n_valid])
    return [l for i, l in enumerate(lines) if i not in held_out], [l for i, l in enumerate(lines) if i in held_out]


def pack(tokenizer, lines: list[str], block_size: int) -> torch.Tensor:
    """Tokenizes each line as ``<s> text </s>``, concatenates and cuts into blocks of ``block_size`` tokens."""
    ids: list[int] = []
    for start in range(0, len(lines), 1000):
        for row in tokenizer(lines[start : start + 1000], add_special_tokens=True)["input_ids"]:
            ids.extend(row + [tokenizer.eos_token_id])
    n = len(ids) // block_size
    return torch.tensor(ids[: n * block_size], dtype=torch.long).view(n, block_size)


class Blocks(torch.utils.data.Dataset):
    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def train(args) -> None:
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from llm2vec_hf.training.tiny_model import train_tokenizer

    torch.set_num_threads(args.threads)
    set_seed(SEED)
    t0 = time.time()
    train_lines, valid_lines = read_corpus(args.corpus)
    tokenizer = train_tokenizer("llama", VOCAB_SIZE, corpus=train_lines)
    train_blocks = pack(tokenizer, train_lines, BLOCK_SIZE)
    valid_blocks = pack(tokenizer, valid_lines, BLOCK_SIZE)
    tokenizer.model_max_length = ARCH["max_position_embeddings"]
    print(f"tokenizer: {len(tokenizer)} tokens, {time.time() - t0:.0f} s; corpus: {len(train_lines)} lines "
          f"-> {train_blocks.numel()} tokens; held out: {len(valid_lines)} lines -> {valid_blocks.numel()} tokens")

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
        **ARCH,
    )
    set_seed(SEED)
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters")

    tokens_per_step = args.batch_size * BLOCK_SIZE
    max_steps = args.max_steps
    history: list[dict] = []
    t_train = time.time()

    class Log(TrainerCallback):
        def on_log(self, _args, state, control, logs=None, **kwargs):
            if logs:
                row = {"step": state.global_step, "tokens": state.global_step * tokens_per_step,
                       "elapsed_s": round(time.time() - t_train, 1), **logs}
                history.append(row)
                print(json.dumps(row), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp,
            max_steps=max_steps,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=64,
            learning_rate=args.lr,
            lr_scheduler_type="cosine",
            warmup_steps=max(1, max_steps // 20),
            weight_decay=0.1,
            adam_beta2=0.98,
            max_grad_norm=1.0,
            logging_steps=args.log_every,
            eval_strategy="steps",
            eval_steps=max(args.log_every, max_steps // 5),
            save_strategy="no",
            report_to=[],
            seed=SEED,
            data_seed=SEED,
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=Blocks(train_blocks),
            eval_dataset=Blocks(valid_blocks),
            callbacks=[Log()],
        )
        initial = trainer.evaluate()
        print(f"initial held-out loss {initial['eval_loss']:.3f}")
        t_train = time.time()
        trainer.train()
        train_seconds = time.time() - t_train
        final = trainer.evaluate()

    out = args.output
    if out.exists():
        shutil.rmtree(out)
    model = model.to(torch.float32)
    model.config.use_cache = True
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, max_new_tokens=64
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    train_losses = [r["loss"] for r in history if "loss" in r]
    log = {
        "seed": SEED,
        "architecture": "LlamaForCausalLM",
        "parameters": n_params,
        "config": ARCH | {"vocab_size": len(tokenizer)},
        "corpus": "src/llm2vec_hf/demo/data/unlabeled.txt (98% train lines, 2% held out)",
        "corpus_tokens": train_blocks.numel(),
        "held_out_tokens": valid_blocks.numel(),
        "block_size": BLOCK_SIZE,
        "batch_size": args.batch_size,
        "steps": max_steps,
        "tokens_seen": max_steps * tokens_per_step,
        "epochs": round(max_steps * tokens_per_step / train_blocks.numel(), 2),
        "learning_rate": args.lr,
        "threads": args.threads,
        "train_wall_s": round(train_seconds, 1),
        "initial_held_out_loss": round(initial["eval_loss"], 4),
        "final_held_out_loss": round(final["eval_loss"], 4),
        "final_held_out_perplexity": round(math.exp(final["eval_loss"]), 2),
        "first_logged_train_loss": train_losses[0] if train_losses else None,
        "last_logged_train_loss": train_losses[-1] if train_losses else None,
        "torch": torch.__version__,
        "history": history,
    }
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    print(json.dumps({k: v for k, v in log.items() if k != "history"}, indent=1))


def ndcg_mrr(scores: torch.Tensor, gold: list[int], k: int = 10) -> tuple[float, float]:
    """nDCG@k and MRR@k for one relevant document per query (row i's relevant column is gold[i])."""
    ranks = (scores > scores[torch.arange(len(gold)), gold].unsqueeze(1)).sum(1)  # 0-based rank of the gold doc
    ndcg = torch.where(ranks < k, 1.0 / torch.log2(ranks.float() + 2), torch.zeros(()))
    mrr = torch.where(ranks < k, 1.0 / (ranks.float() + 1), torch.zeros(()))
    return ndcg.mean().item(), mrr.mean().item()


def evaluate(args) -> None:
    from llm2vec_hf import LLM2Vec
    from llm2vec_hf.demo.assets import load_eval_task

    torch.set_num_threads(args.threads)
    queries, docs, qrels = load_eval_task()
    qids, dids = list(queries), list(docs)
    gold = [dids.index(next(iter(qrels[q]))) for q in qids]
    results = []
    for name, bidirectional, pooling in (
        ("causal + weighted mean", False, "weighted_mean"),
        ("bidirectional (no training) + mean", True, "mean"),
        ("causal + mean", False, "mean"),
        ("causal + eos", False, "eos_token"),
    ):
        model = LLM2Vec.from_pretrained(str(args.output), enable_bidirectional=bidirectional, pooling_mode=pooling)
        t0 = time.time()
        with torch.no_grad():
            q = model.encode([[INSTRUCTION, queries[i]] for i in qids], batch_size=64, show_progress_bar=False,
                             convert_to_tensor=True)
            d = model.encode([docs[i] for i in dids], batch_size=64, show_progress_bar=False, convert_to_tensor=True)
        seconds = time.time() - t0
        q = torch.nn.functional.normalize(q.float(), dim=-1)
        d = torch.nn.functional.normalize(d.float(), dim=-1)
        ndcg, mrr = ndcg_mrr(q @ d.T, gold)
        results.append({"model": name, "ndcg@10": round(ndcg, 4), "mrr@10": round(mrr, 4),
                        "encode_s": round(seconds, 1)})
        print(json.dumps(results[-1]), flush=True)
    # Reference point: a random ranking.
    print(json.dumps({"model": "random (expected)", "ndcg@10": round(_random_ndcg(len(dids)), 4)}))


def supervised_probe(args) -> None:
    """Headroom check, not the demo: full fine-tuning of the bidirectional model (mean pooling) with an InfoNCE
    loss (in-batch + hard negatives, temperature 0.05) on ``wordnet_train.jsonl``, then nDCG@10 again."""
    from llm2vec_hf import LLM2Vec
    from llm2vec_hf.demo.assets import load_eval_task, load_pairs

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    model = LLM2Vec.from_pretrained(str(args.output), enable_bidirectional=True, pooling_mode="mean")
    queries, docs, qrels = load_eval_task()
    qids, dids = list(queries), list(docs)
    gold = [dids.index(next(iter(qrels[q]))) for q in qids]

    def score() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            q = model.encode([[INSTRUCTION, queries[i]] for i in qids], batch_size=64, show_progress_bar=False,
                             convert_to_tensor=True)
            d = model.encode([docs[i] for i in dids], batch_size=64, show_progress_bar=False, convert_to_tensor=True)
        normalize = torch.nn.functional.normalize
        return ndcg_mrr(normalize(q, dim=-1) @ normalize(d, dim=-1).T, gold)

    print(json.dumps({"probe": "before", "ndcg@10": round(score()[0], 4)}), flush=True)
    rows = load_pairs()
    random.Random(SEED).shuffle(rows)
    optimizer = torch.optim.AdamW(model.model.parameters(), lr=1e-4, weight_decay=0.01)
    batch_size, t0 = 32, time.time()
    for step in range(args.supervised_probe):
        batch = [rows[(step * batch_size + j) % len(rows)] for j in range(batch_size)]
        model.model.train()
        q = model(model.tokenize([(INSTRUCTION, r["query"]) for r in batch]))
        p = model(model.tokenize([("", r["positive"]) for r in batch]))
        n = model(model.tokenize([("", r["negative"]) for r in batch]))
        q = torch.nn.functional.normalize(q, dim=-1)
        d = torch.nn.functional.normalize(torch.cat([p, n]), dim=-1)
        loss = torch.nn.functional.cross_entropy(q @ d.T / 0.05, torch.arange(batch_size))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    ndcg, mrr = score()
    print(json.dumps({"probe": f"after {args.supervised_probe} steps x {batch_size}", "ndcg@10": round(ndcg, 4),
                      "mrr@10": round(mrr, 4), "train_s": round(time.time() - t0, 1)}), flush=True)


def _random_ndcg(n: int, k: int = 10) -> float:
    return sum(1.0 / math.log2(r + 2) for r in range(min(k, n))) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "src/llm2vec_hf/demo/data/unlabeled.txt")
    parser.add_argument("--output", type=Path, default=ROOT / "src/llm2vec_hf/demo/default_model")
    parser.add_argument("--max-steps", type=int, default=650)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--log-every", type=int, default=20)
    # One thread: on a shared 2-core machine, two intra-op threads ran 4.5x slower per step than one.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-only", action="store_true", help="only run the nDCG@10 sanity check")
    parser.add_argument("--supervised-probe", type=int, default=0, metavar="STEPS",
                        help="then fine-tune a copy in memory on wordnet_train.jsonl for STEPS steps and re-score")
    args = parser.parse_args(argv)
    if not args.eval_only:
        train(args)
    evaluate(args)
    if args.supervised_probe:
        supervised_probe(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
