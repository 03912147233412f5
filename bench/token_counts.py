"""Token counting of the data audit, each way against the per-row reference (chat template + tokenize, one row
at a time), on the same rows: the tokenizer's batch (the template's framing learnt once), tiktoken with the
tokenizer's ranks in one process, the same spread over processes, and a warm re-audit from the cache.

    python bench/token_counts.py [--scale 0.05] [--rows 2000]

Inputs are bench/data_build.py's synthetic paper-scale sets (SpineMed-450k format, medical-o1, MedThoughts,
PubMedVision), read by the real readers; the tokenizer is the real Qwen one (the offline tiny model carries it).
The reference is timed on a seeded random sample of the rows (so its rows are as long as the others' on average).
Target: >= 10x the reference's rows/s.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--rows", type=int, default=2000, help="rows timed with the per-row reference")
    args = parser.parse_args()
    import data_build  # beside this script: python puts the script's folder first on sys.path
    from transformers import AutoTokenizer

    from spinegpt.data_mixes import audit
    from spinegpt.offline import tiny_model

    cpus = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="spinegpt-bench-") as tmp:
        os.environ["SPINEGPT_CACHE"] = str(Path(tmp) / "cache")
        inputs = Path(tmp) / "inputs"
        data_build.generate(inputs, scale=args.scale, seed=0)
        rows = [row for found in data_build.engine_rows(inputs).values() for row in found]
        path = Path(tmp) / "train.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        counter = audit.TokenCounter(AutoTokenizer.from_pretrained(str(tiny_model.ensure())), 3136, 50176)
        assert counter.fast is not None, counter.why_not_fast
        sample = random.Random(0).sample(rows, min(args.rows, len(rows)))
        started = time.perf_counter()
        reference = [counter.count(r) for r in sample]
        per_row = len(sample) / (time.perf_counter() - started)
        # Each way starts cold: no count cache, no image sizes remembered.
        results = {}
        for way, workers in (("tokenizer batch", 1), ("tiktoken, 1 process", 1), ("tiktoken, processes", cpus)):
            fresh = copy.copy(counter)
            fresh.image = audit.ImageCosts(counter.min_pixels, counter.max_pixels)
            fresh.fast = (
                None
                if way == "tokenizer batch"
                else audit.FastRows(counter.fast.framing, counter.fast.bpe, fresh.image)
            )
            os.environ["SPINEGPT_CACHE"] = str(Path(tmp) / f"cache-{len(results)}")
            audit.PARALLEL_MIN_BYTES = 0 if workers > 1 else 1 << 62
            started = time.perf_counter()
            found = audit.counts(path, fresh, workers=workers)
            results[way] = time.perf_counter() - started
            lookup = {json.dumps(r, sort_keys=True): n for r, n in zip(rows, found, strict=True)}
            assert [lookup[json.dumps(r, sort_keys=True)] for r in sample] == reference, f"{way}: counts differ"
        started = time.perf_counter()
        audit.counts(path, counter, workers=cpus)
        warm = time.perf_counter() - started
        tokens = sum(found)
        print(
            f"rows: {len(rows):,} ({tokens / len(rows):,.0f} tokens a row on average, "
            f"{path.stat().st_size / 2**20:,.0f} MiB), {cpus} CPU(s)"
        )
        print(f"per-row reference (apply_chat_template per row, {len(sample):,} sampled rows): {per_row:,.0f} rows/s")
        for way, seconds in results.items():
            rate = len(rows) / seconds
            verdict = "met" if rate / per_row >= 10 else "NOT met"
            print(
                f"{way:<22} cold: {rate:>8,.0f} rows/s, {seconds:5.1f}s -> {rate / per_row:4.1f}x "
                f"(target >= 10x: {verdict})"
            )
        print(f"warm re-audit from the cache (file hash + lookup): {warm:.2f}s for {len(rows):,} rows")
        best = len(rows) / results["tiktoken, processes"]
        print(
            f"paper scale (~689k rows) at these rates: reference {689_000 / per_row / 60:.1f} min, "
            f"tiktoken with processes {689_000 / best / 60:.1f} min, warm ~{warm * 689_000 / len(rows):.0f}s"
        )


if __name__ == "__main__":
    main()
