"""Time single ROME edits on a model with its bundled hyperparameters.

Prints, per request, the seconds spent on the context templates, the key,
the value optimisation and the update, the number of value steps, p(target)
before and after, and at the end the peak resident memory of the process.

    python benchmarks/rome_edit.py --requests PATH/counterfact_sample.jsonl --count 3
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model reference (default: the embedded default model)")
    parser.add_argument("--hparams", default=None, help="ROME YAML (default: the bundled file of the model)")
    parser.add_argument("--requests", required=True, help="JSONL edit requests (prompt, subject, target_new)")
    parser.add_argument("--count", type=int, default=3, help="number of requests to time")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    from editsafe import load_model
    from editsafe.io import read_jsonl
    from editsafe.rome import EditRequest, TemplateCache, compute_rome_patch, default_hparams_path, load_hparams

    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    started = time.perf_counter()
    model, tokenizer = load_model(arguments.model, device="cpu")
    load_seconds = time.perf_counter() - started
    hparams_path = arguments.hparams or default_hparams_path(model)
    hparams = load_hparams(hparams_path)
    records = read_jsonl(arguments.requests)[: arguments.count]

    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch threads {torch.get_num_threads()}, "
          f"python {sys.version.split()[0]}, torch {torch.__version__}")
    print(f"model loaded in {load_seconds:.1f} s; hparams {hparams_path}")
    templates = TemplateCache()
    totals = []
    for number, record in enumerate(records):
        request = EditRequest.from_dict(record, source=f"{arguments.requests}:{number + 1}")
        started = time.perf_counter()
        result = compute_rome_patch(model, tokenizer, request, hparams, seed=arguments.seed, templates=templates)
        total = time.perf_counter() - started
        totals.append(total)
        diagnostics = result.diagnostics
        row = {
            "id": request.id, "total_s": round(total, 1),
            **{f"{name}_s": round(seconds, 2) for name, seconds in result.timings.items()},
            "steps": diagnostics["steps"], "templates": len(result.context_templates),
            "p_before": round(diagnostics["p_first_target_before"], 4),
            "p_after": round(diagnostics["p_first_target_after"], 4),
        }
        print(json.dumps(row), flush=True)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"mean seconds per edit: {sum(totals) / len(totals):.1f} (first edit includes template sampling)")
    print(f"peak RSS: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
