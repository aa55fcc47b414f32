"""How much padding the official run_supervised.py computes on the side-by-side benchmark's E5-like data.

    python benchmarks/official_padding.py [--batches 4,16,64] [--records-per-dataset 256] [--seed 42]

The official trainer embeds queries, positives and negatives in three calls, each padded to its longest text,
and its ``E5Data`` fills every batch from one dataset. This counts, per batch size, the tokens those padded calls
compute against the real tokens (texts cut at 512 tokens, the benchmark model's tokenizer): the most a
padding-free step can gain when both sides do the same work per real token. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main(argv=None) -> int:
    from transformers import AutoTokenizer

    from encode import build_model
    from train_data import prepare

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="4,16,64")
    parser.add_argument("--records-per-dataset", type=int, default=256)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "official_padding.json"))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="official-padding-"))
    build_model("llama-tiny", work / "model")  # the benchmark's tokenizer (the shape does not matter here)
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    data = prepare(work / "data", records_per_dataset=args.records_per_dataset, seed=args.seed)

    def tokens(text: str) -> int:
        return min(args.max_seq_length, len(tokenizer(text)["input_ids"]))

    by_dataset: dict[str, list[tuple[int, int, int]]] = {}
    for line in Path(data["supervised"]).read_text().splitlines():
        record = json.loads(line)
        query = f"{record['instruction']}; {record['query']}" if record.get("instruction") else record["query"]
        by_dataset.setdefault(record["dataset"], []).append(
            (tokens(query), tokens(record["positive"]), tokens(record["negative"])))
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        real = computed = 0
        rng = random.Random(args.seed)
        for records in by_dataset.values():
            records = records[:]
            rng.shuffle(records)
            for start in range(0, len(records) - batch + 1, batch):
                for column in zip(*records[start : start + batch]):
                    real += sum(column)
                    computed += max(column) * len(column)
        rows.append({"batch": batch, "real_tokens": real, "computed_tokens": computed,
                     "computed_over_real": computed / real, "padding": 1 - real / computed})
        print(f"batch {batch:>3}: the official computes {computed / real:.2f}x the real tokens "
              f"(padding {1 - real / computed:.0%})")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
