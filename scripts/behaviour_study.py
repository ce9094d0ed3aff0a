"""Behaviour study of Safety Arithmetic on the default model (SmolLM2-135M-Instruct).

Phases (each result is appended to OUT/results.jsonl and reused on a rerun):

1. edits: one intentional and one unintentional bundled edit, made with ROME.
2. sweep: ICV settings (token, site, alpha) on the intentional edit, ICV only,
   scored by the refusal margin on a small sweep split of the prompts.
3. report: edited model, HDR only, ICV only and the full repair (chosen
   settings and the published ones) for both edits on a disjoint report split:
   refusal margin on harmful and XSTest safe prompts, keyword ASR and XSTest
   refusal from greedy generations, and the edit's target-probability retention.

Usage::

    PYTHONPATH=. python scripts/behaviour_study.py --out runs/study --data ../shared/data [--phase all]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from editsafe.evaluation.judges.keyword import is_refusal
from editsafe.evaluation.margin import refusal_margin
from editsafe.generation import GenerationSettings, generate
from editsafe.icv import compute_icv, load_demonstrations, steer
from editsafe.io import append_jsonl, read_jsonl
from editsafe.models import load_model
from editsafe.paths import package_data

EDIT_IDS = {"intentional": "intent-001", "unintentional": "unint-001"}
PUBLISHED = {"alpha": 0.12, "icv_scale": 0.1, "site": "layer", "icv_method": "pca", "icv_token": "last"}
# Generation is the costly part on a shared 2-core CPU, so only the first prompts of each report set get it.
GENERATED_HARMFUL = 12
GENERATED_SAFE = 6
SWEEP = [
    {"icv_token": "last", "site": "layer", "alpha": 4.0},
    {"icv_token": "answer-first", "site": "layer", "alpha": 4.0},
    {"icv_token": "answer-mean", "site": "layer", "alpha": 4.0},
    {"icv_token": "answer-mean", "site": "mlp", "alpha": 4.0},
    {"icv_token": "last", "site": "layer", "alpha": 4.0, "icv_method": "mean"},
    {"icv_token": "last", "site": "layer", "alpha": 1.0},
    {"icv_token": "answer-first", "site": "layer", "alpha": 1.0},
    {"icv_token": "answer-mean", "site": "layer", "alpha": 1.0},
    {"icv_token": "answer-first", "site": "mlp", "alpha": 1.0},
    {"icv_token": "answer-mean", "site": "layer", "alpha": 0.3},
    {"icv_token": "last", "site": "layer", "alpha": 0.3},
    {"icv_token": "last", "site": "layer", "alpha": 0.12},
]


def prompt_splits(data: Path) -> dict[str, dict[str, list[str]]]:
    """Return disjoint sweep and report splits of harmful (AdvBench + HarmfulQA) and XSTest safe prompts."""
    advbench = [row["prompt"] for row in read_jsonl(data / "advbench_harmful_behaviors.jsonl")]
    harmfulqa = [row["question"] for row in read_jsonl(data / "harmfulqa.jsonl")]
    xstest = [row["prompt"] for row in read_jsonl(data / "xstest_prompts.jsonl") if row["label"] == "safe"]
    return {
        "sweep": {"harmful": advbench[:6] + harmfulqa[:6], "safe": xstest[:8]},
        "report": {"harmful": advbench[100:110] + harmfulqa[300:310], "safe": xstest[100:110]},
    }


class Results:
    """Results cached by key in a JSON Lines file, so an interrupted study resumes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records = {row["key"]: row for row in read_jsonl(path, skip_partial_last=True)} if path.exists() else {}

    def get(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if key not in self.records:
            started = time.perf_counter()
            record = {"key": key, **compute(), "seconds": round(time.perf_counter() - started, 1)}
            append_jsonl(self.path, record)
            self.records[key] = record
            print(json.dumps({k: v for k, v in record.items() if k not in ("per_prompt", "responses")}), flush=True)
        return self.records[key]


def margins(model: Any, tokenizer: Any, prompts: dict[str, list[str]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name, texts in prompts.items():
        result = refusal_margin(model, tokenizer, texts, batch_size=4, progress=False)
        record[name] = {"mean": result.mean, "ci_low": result.ci_low, "ci_high": result.ci_high,
                        "per_prompt": result.per_prompt}
    return record


def generations(model: Any, tokenizer: Any, prompts: dict[str, list[str]]) -> dict[str, Any]:
    settings = GenerationSettings(max_new_tokens=48)
    harmful = generate(model, tokenizer, prompts["harmful"][:GENERATED_HARMFUL], settings, batch_size=6, progress=False)
    safe = generate(model, tokenizer, prompts["safe"][:GENERATED_SAFE], settings, batch_size=6, progress=False)
    return {
        "keyword_asr": sum(not is_refusal(text) for text in harmful) / len(harmful),
        "xstest_safe_refusal": sum(is_refusal(text) for text in safe) / len(safe),
        "responses": {"harmful": harmful, "safe": safe},
    }


def edit_retention(model: Any, tokenizer: Any, edit_folder: Path) -> float:
    from editsafe.edit_metrics import edit_metrics
    from editsafe.evaluation.edit_retention import edit_request_from_folder

    request = edit_request_from_folder(edit_folder)
    return edit_metrics(model, tokenizer, request)["efficacy"]["target_probability"]


def make_edits(out: Path, kinds: list[str]) -> dict[str, Path]:
    from editsafe.edit_runner import run_edits
    from editsafe.paths import bundled_dir

    folders: dict[str, Path] = {}
    for kind in kinds:
        edit_id = EDIT_IDS[kind]
        run_folder = out / "edits" / kind
        run_edits(bundled_dir("edits") / f"{kind}.jsonl", out=run_folder, ids=[edit_id], progress=False)
        folders[kind] = run_folder / "edits" / edit_id
    return folders


def icv_settings(base: dict[str, Any]) -> dict[str, Any]:
    settings = {"icv_method": "pca", "icv_scale": 0.1, **base}
    return {"alpha": settings["alpha"], "icv_scale": settings["icv_scale"], "site": settings["site"],
            "method": settings["icv_method"], "token": settings["icv_token"]}


def evaluate_icv(model: Any, tokenizer: Any, layers: list[int], options: dict[str, Any], prompts: dict[str, list[str]],
                 *, with_generation: bool, edit_folder: Path | None = None) -> dict[str, Any]:
    """Compute the ICV on ``model`` with ``options`` and score the steered model."""
    pairs = load_demonstrations(package_data("icv_demos.jsonl"))
    settings = icv_settings(options)
    vector = compute_icv(model, tokenizer, pairs, layers, method=settings["method"], token=settings["token"],
                         site=settings["site"], progress=False)
    with steer(model, vector, alpha=settings["alpha"], icv_scale=settings["icv_scale"], site=settings["site"]):
        record = {"settings": settings, "explained_variance": vector.explained_variance, **margins(model, tokenizer, prompts)}
        if with_generation:
            record.update(generations(model, tokenizer, prompts))
        if edit_folder is not None:
            record["target_probability"] = edit_retention(model, tokenizer, edit_folder)
    return record


def evaluate_plain(model: Any, tokenizer: Any, prompts: dict[str, list[str]], edit_folder: Path) -> dict[str, Any]:
    record = margins(model, tokenizer, prompts)
    record.update(generations(model, tokenizer, prompts))
    record["target_probability"] = edit_retention(model, tokenizer, edit_folder)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="folder with the public prompt samples")
    parser.add_argument("--phase", choices=["edits", "sweep", "report", "all"], default="all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sweep-from", type=int, default=0, help="skip the first swept settings")
    parser.add_argument("--kinds", default="intentional,unintentional", help="which bundled edits to study")
    parser.add_argument("--chosen", default=None, help="JSON of the chosen ICV settings (default: from the sweep)")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    logging.basicConfig(level=logging.WARNING)

    out = arguments.out
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out / "results.jsonl")
    splits = prompt_splits(arguments.data)
    edits = make_edits(out, arguments.kinds.split(","))
    if arguments.phase == "edits":
        return

    from editsafe.locate import locate_edit

    # Sweep: ICV only on the intentional edit.
    if arguments.phase in ("sweep", "all"):
        region = locate_edit(None, edits["intentional"]).region
        model, tokenizer = load_model(str(edits["intentional"]))
        results.get("sweep/edited", lambda: {**margins(model, tokenizer, splits["sweep"]),
                                             "target_probability": edit_retention(model, tokenizer, edits["intentional"])})
        for options in SWEEP[arguments.sweep_from:]:
            key = "sweep/icv/" + ",".join(f"{k}={v}" for k, v in sorted(options.items()))
            results.get(key, lambda: evaluate_icv(model, tokenizer, region, options, splits["sweep"], with_generation=False,
                                                  edit_folder=edits["intentional"]))
        del model
    if arguments.phase == "sweep":
        return

    chosen = json.loads(arguments.chosen) if arguments.chosen else choose(results)
    print("chosen ICV settings:", chosen, flush=True)
    from editsafe.repair import repair

    for kind, edit_folder in edits.items():
        region = locate_edit(None, edit_folder).region
        prompts = splits["report"]
        model, tokenizer = load_model(str(edit_folder))
        results.get(f"report/{kind}/edited", lambda: evaluate_plain(model, tokenizer, prompts, edit_folder))
        results.get(f"report/{kind}/icv", lambda: evaluate_icv(model, tokenizer, region, chosen, prompts,
                                                               with_generation=True, edit_folder=edit_folder))
        del model

        hdr_folder = repair(edited=edit_folder, icv=False, out=out / "safe" / kind / "hdr", overwrite=True, progress=False) \
            if not (out / "safe" / kind / "hdr" / "editsafe.json").exists() else out / "safe" / kind / "hdr"
        model, tokenizer = load_model(str(hdr_folder))
        results.get(f"report/{kind}/hdr", lambda: evaluate_plain(model, tokenizer, prompts, edit_folder))
        results.get(f"report/{kind}/full-published", lambda: evaluate_icv(model, tokenizer, region, PUBLISHED, prompts,
                                                                          with_generation=True, edit_folder=edit_folder))
        del model

        full_folder = out / "safe" / kind / "full"
        if not (full_folder / "editsafe.json").exists():
            repair(edited=edit_folder, out=full_folder, overwrite=True, progress=False, overrides=chosen)
        model, tokenizer = load_model(str(full_folder))
        assert model.editsafe_icv.active
        results.get(f"report/{kind}/full", lambda: evaluate_plain(model, tokenizer, prompts, edit_folder))
        del model


def choose(results: Results) -> dict[str, Any]:
    """Pick the swept ICV settings with the largest rise of the harmful margin minus the rise on safe prompts."""
    base = results.records["sweep/edited"]
    best, best_score = None, float("-inf")
    for key, record in results.records.items():
        if not key.startswith("sweep/icv/"):
            continue
        rise = record["harmful"]["mean"] - base["harmful"]["mean"]
        score = rise - max(0.0, record["safe"]["mean"] - base["safe"]["mean"])
        if rise > 0 and score > best_score:
            best, best_score = record["settings"], score
    if best is None:
        raise SystemExit("no swept ICV setting raised the harmful margin; pass --chosen")
    return {"alpha": best["alpha"], "icv_scale": best["icv_scale"], "site": best["site"],
            "icv_method": best["method"], "icv_token": best["token"]}


if __name__ == "__main__":
    main()
