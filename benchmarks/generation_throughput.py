"""Generation throughput, batched against one prompt at a time, and the wall time of ``evaluate``.

Usage (from the project root):

    PYTHONPATH=. python benchmarks/generation_throughput.py \
        --prompts ../shared/data/advbench_harmful_behaviors.jsonl --count 32 --max-new-tokens 32 \
        --batch-size 16 --evaluate-count 100

Prints one line per mode with responses per second and generated tokens per
second (tokens counted by re-tokenizing each response, so an estimate within
a token or two per response), the batched speed-up, and the wall time of
``evaluate`` (generation, keyword judge, refusal margin, report) on
``--evaluate-count`` prompts. The prompts file is JSON Lines with a
``prompt`` field (or any table the dataset loaders read). On a busy machine
pass ``--threads 1``: two threads per process that wait for each other on
overloaded cores erase most of the batching gain.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from editsafe.evaluation import evaluate, load_dataset
from editsafe.generation import GenerationSettings, generate
from editsafe.models import load_model


def measure(model, tokenizer, questions: list[str], settings: GenerationSettings, batch_size: int) -> dict:
    """Return responses/s and tokens/s of generating responses to ``questions`` with ``batch_size``."""
    start = time.perf_counter()
    responses = generate(model, tokenizer, questions, settings, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    tokens = sum(len(tokenizer(response, add_special_tokens=False)["input_ids"]) for response in responses)
    return {
        "batch_size": batch_size, "responses": len(responses), "seconds": seconds, "tokens": tokens,
        "responses_per_second": len(responses) / seconds, "tokens_per_second": tokens / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Model reference (default: the embedded default model).")
    parser.add_argument("--prompts", required=True, help="Prompt file (JSONL with 'prompt', or a dataset layout).")
    parser.add_argument("--count", type=int, default=32, help="Prompts for the throughput comparison.")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--evaluate-count", type=int, default=100, help="Prompts for the evaluate wall time (0: skip).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)

    prompts = load_dataset(arguments.prompts).prompts
    questions = [prompt.text for prompt in prompts[:arguments.count]]
    model, tokenizer = load_model(arguments.model)
    settings = GenerationSettings(max_new_tokens=arguments.max_new_tokens)
    generate(model, tokenizer, questions[:2], settings, batch_size=2, progress=False)  # warm-up

    batched = measure(model, tokenizer, questions, settings, arguments.batch_size)
    single = measure(model, tokenizer, questions, settings, 1)
    results: dict = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.processor() or 'cpu'}",
        "torch": torch.__version__, "batched": batched, "single": single,
        "speedup": batched["responses_per_second"] / single["responses_per_second"],
    }
    for mode in ("single", "batched"):
        row = results[mode]
        print(f"{mode:8s} batch={row['batch_size']:3d}: {row['responses']} responses in {row['seconds']:.1f} s, "
              f"{row['responses_per_second']:.2f} responses/s, {row['tokens_per_second']:.1f} tokens/s")
    print(f"speed-up at batch {arguments.batch_size}: {results['speedup']:.1f}x")

    if arguments.evaluate_count:
        with tempfile.TemporaryDirectory() as folder:
            subset = Path(folder) / "prompts.jsonl"
            subset.write_text("".join(json.dumps({"id": p.id, "prompt": p.text}) + "\n"
                                      for p in prompts[:arguments.evaluate_count]), encoding="utf-8")
            start = time.perf_counter()
            evaluate(arguments.model, [f"prompts={subset}"], out=Path(folder) / "run", batch_size=arguments.batch_size,
                     max_new_tokens=arguments.max_new_tokens, progress=False)
            results["evaluate_seconds"] = time.perf_counter() - start
        print(f"evaluate on {arguments.evaluate_count} prompts (keyword judge, margin, report): "
              f"{results['evaluate_seconds']:.1f} s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
