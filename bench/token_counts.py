"""Token counting of the data audit: the per-row reference (chat template + tokenize, one row at a time) against
the batched count (the template's framing learnt once, one fast-tokenizer batch) and a warm re-audit from the cache.

    python bench/token_counts.py [--scale 0.01] [--rows 2000]

Inputs are bench/data_build.py's synthetic paper-scale sets (SpineMed-450k format, medical-o1, MedThoughts,
PubMedVision), read by the real readers; the tokenizer is the real Qwen one (the offline tiny model carries it).
Prints rows/s of each and the ratio against the issue's target (>= 10x per row), and the warm re-audit seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--rows", type=int, default=2000, help="rows timed with the per-row reference")
    args = parser.parse_args()
    from spinegpt.data_mixes import audit, readers, sources
    from transformers import AutoTokenizer

    from spinegpt.offline import tiny_model

    spec = importlib.util.spec_from_file_location("data_build", HERE / "data_build.py")
    assert spec is not None and spec.loader is not None
    data_build = importlib.util.module_from_spec(spec)
    sys.modules["data_build"] = data_build
    spec.loader.exec_module(data_build)
    with tempfile.TemporaryDirectory(prefix="spinegpt-bench-") as tmp:
        os.environ["SPINEGPT_CACHE"] = str(Path(tmp) / "cache")
        inputs = Path(tmp) / "inputs"
        data_build.generate(inputs, scale=args.scale, seed=0)
        rows = []
        for name, rel in (
            ("spinemed", "SpineMed-450k/train.jsonl"),
            ("medical_o1", "medical-o1-reasoning-SFT/medical_o1_sft.json"),
            ("medthoughts", "MedThoughts-8K/MedThoughts-8K.jsonl"),
            ("pubmedvision", "PubMedVision/PubMedVision_Alignment_VQA.json"),
        ):
            options = readers.ReadOptions(data_root=inputs / "open_datasets", image_root=(inputs / rel).parent)
            rows += [r.to_row() for r in sources.read(name, inputs / rel, options) if isinstance(r, readers.Record)]
        path = Path(tmp) / "train.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        counter = audit.Counter(AutoTokenizer.from_pretrained(str(tiny_model.ensure())), 3136, 50176)
        sample = rows[: args.rows]
        started = time.perf_counter()
        reference = [counter.count(r) for r in sample]
        per_row = len(sample) / (time.perf_counter() - started)
        started = time.perf_counter()
        batched = audit.counts(path, counter)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        audit.counts(path, counter)
        warm = time.perf_counter() - started
        assert batched[: len(sample)] == reference, "the batched counts differ from the per-row reference"
        tokens = sum(batched)
        rate = len(rows) / cold
        print(f"rows: {len(rows):,} ({tokens / len(rows):,.0f} tokens a row on average), {os.cpu_count()} CPU(s)")
        print(f"per-row reference (apply_chat_template per row): {per_row:,.0f} rows/s")
        print(
            f"batched (framing once + fast tokenizer batches), cold: {rate:,.0f} rows/s, {cold:.1f}s "
            f"-> {rate / per_row:.1f}x the reference (target >= 10x: {'met' if rate / per_row >= 10 else 'NOT met'})"
        )
        print(f"warm re-audit from the cache (file hash + lookup): {warm:.2f}s for {len(rows):,} rows")
        print(
            f"paper scale (~689k rows) at these rates: reference {689_000 / per_row / 60:.1f} min, batched "
            f"{689_000 / rate / 60:.1f} min, warm ~{warm * 689_000 / len(rows):.0f}s"
        )


if __name__ == "__main__":
    main()
