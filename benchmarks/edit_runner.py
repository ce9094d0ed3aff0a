"""Run bundled edits on a model and print how many take and how long each one needs.

    python benchmarks/edit_runner.py --edits edits/facts.jsonl --limit 5 --out runs/bench-facts
    python benchmarks/edit_runner.py --fixed-templates --threads 1 --out runs/bench-fast

An edit "takes" when, after it, the target is the model's greedy continuation
of the prompt at every target token (teacher-forced token accuracy 1.0). The
gain is the ratio of the target probability after and before the edit. The
run resumes like ``editsafe edit``, so the figures of an interrupted run are
completed by running the same command again.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
from pathlib import Path

import torch
import yaml

from editsafe.edit_runner import run_edits
from editsafe.paths import bundled_dir

FIXED_TEMPLATES = ["{}", "Here is a short note. {}", "I read this in a book. {}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model reference (default: the embedded default model)")
    parser.add_argument("--edits", default=str(bundled_dir("edits") / "facts.jsonl"), help="request file")
    parser.add_argument("--ids", default=None, help="comma-separated request ids")
    parser.add_argument("--limit", type=int, default=None, help="run only the first N requests")
    parser.add_argument("--out", required=True, help="output folder (resumable)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--fixed-templates", action="store_true",
        help="use three fixed context templates instead of the 20 sampled ones of the bundled file",
    )
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)

    hparams = None
    if arguments.fixed_templates:
        from editsafe.rome import default_hparams_path

        record = yaml.safe_load(default_hparams_path(arguments.model or "smollm2-135m-instruct").read_text("utf-8"))
        record["context_templates"] = FIXED_TEMPLATES
        out = Path(arguments.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        hparams = out.parent / f"{out.name}.rome.yaml"
        hparams.write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")

    records = run_edits(
        arguments.edits, out=arguments.out, model=arguments.model, hparams=hparams,
        ids=arguments.ids.split(",") if arguments.ids else None, limit=arguments.limit,
    )
    report(records, arguments)


def report(records: list[dict], arguments: argparse.Namespace) -> None:
    done = [record for record in records if record["status"] == "done"]
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}")
    print(f"edits: {arguments.edits}; fixed templates: {arguments.fixed_templates}")
    print(f"{'id':<12} {'seconds':>8} {'p before':>10} {'p after':>10} {'gain':>10} {'acc after':>9} {'para after':>10} {'locality':>8}")
    taken = 0
    for record in done:
        before = record["metrics"]["before"]
        after = record["metrics"]["after"]
        gain = after["efficacy"]["target_probability"] / max(before["efficacy"]["target_probability"], 1e-300)
        accuracy = after["efficacy"]["token_accuracy"]
        taken += accuracy == 1.0
        paraphrase = after["generalisation"]["target_probability"] if after["generalisation"] else math.nan
        locality = after["locality"]["agreement"] if after["locality"] else math.nan
        print(
            f"{record['id']:<12} {record['seconds']:>8.1f} {before['efficacy']['target_probability']:>10.3g} "
            f"{after['efficacy']['target_probability']:>10.3g} {gain:>10.3g} {accuracy:>9.2f} {paraphrase:>10.3g} "
            f"{locality:>8.2f}"
        )
    failed = len(records) - len(done)
    print(f"taken: {taken} of {len(done)} done edits ({failed} failed)")
    if done:
        print(f"median seconds per edit: {statistics.median(record['seconds'] for record in done):.1f}")
    print(json.dumps({"taken": taken, "done": len(done), "failed": failed}))


if __name__ == "__main__":
    main()
