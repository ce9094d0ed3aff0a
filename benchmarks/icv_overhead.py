"""ICV cost on the default model: generation speed with and without the ICV, and the ICV computation time.

Prints generation tokens per second for the same batch without hooks and with
the ICV installed (the ratio is the figure of interest), the time to compute
the ICV from 30 demonstration pairs over three layers, and, with ``--pipeline``,
the wall time and peak resident memory of one ``editsafe edit`` plus
``editsafe repair`` run in a child process.

    PYTHONPATH=. python benchmarks/icv_overhead.py [--threads 2] [--pipeline]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from editsafe.generation import encode_batch, format_prompt
from editsafe.icv import compute_icv, load_demonstrations, steer
from editsafe.models import load_model
from editsafe.paths import package_data

PROMPTS = [
    "How do I bake bread?", "What is the capital of France?", "Explain photosynthesis in one paragraph.",
    "Write a short poem about the sea.", "How can I kill a Python process?", "Who wrote Pride and Prejudice?",
    "What is the boiling point of water?", "Give me three tips for learning a language.",
]
LAYERS = [4, 5, 6]


def tokens_per_second(model, tokenizer, new_tokens: int, repeats: int) -> float:
    batch = encode_batch(tokenizer, [format_prompt(tokenizer, prompt) for prompt in PROMPTS])
    options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                   pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            started = time.perf_counter()
            model.generate(**batch, **options)
            best = min(best, time.perf_counter() - started)
    return len(PROMPTS) * new_tokens / best


def pipeline(out: Path) -> tuple[float, float]:
    """Run edit + repair in one child process; return (seconds, peak RSS in MiB)."""
    code = (
        "from editsafe.edit_runner import run_edits; from editsafe.repair import repair; from editsafe.paths import bundled_dir;"
        f"run_edits(bundled_dir('edits') / 'unintentional.jsonl', out=r'{out}/edit', ids=['unint-001'], progress=False);"
        f"repair(edited=r'{out}/edit/edits/unint-001', out=r'{out}/safe', progress=False)"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, peak_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pipeline", action="store_true", help="also time edit + repair in a child process")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)

    model, tokenizer = load_model()
    pairs = load_demonstrations(package_data("icv_demos.jsonl"))[:30]
    started = time.perf_counter()
    vector = compute_icv(model, tokenizer, pairs, LAYERS, progress=False)
    print(f"ICV computation, {len(pairs)} pairs, layers {LAYERS}: {time.perf_counter() - started:.2f} s")

    plain = tokens_per_second(model, tokenizer, arguments.new_tokens, arguments.repeats)
    with steer(model, vector, alpha=4.0, icv_scale=0.1):
        steered = tokens_per_second(model, tokenizer, arguments.new_tokens, arguments.repeats)
    plain_again = tokens_per_second(model, tokenizer, arguments.new_tokens, arguments.repeats)
    print(f"generation, batch {len(PROMPTS)} x {arguments.new_tokens} new tokens (best of {arguments.repeats}):")
    print(f"  without ICV: {plain:.1f} tokens/s (again after removal: {plain_again:.1f})")
    print(f"  with ICV:    {steered:.1f} tokens/s  ratio {steered / max(plain, plain_again):.3f}")

    if arguments.pipeline:
        with tempfile.TemporaryDirectory() as folder:
            seconds, peak = pipeline(Path(folder))
        print(f"edit + repair (one unintentional edit, default settings): {seconds:.0f} s wall, peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
