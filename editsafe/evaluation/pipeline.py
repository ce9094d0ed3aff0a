"""``evaluate``: generate, judge and score one model on several datasets, and write the run's report.

A run folder contains:

* ``generations.jsonl`` and ``verdicts.jsonl``: stored responses and verdicts,
  reused by a rerun into the same folder (and resumed after a kill);
* ``report.json``: the model (reference, kind, content hash), the judge, the
  settings and seed, and one entry per dataset (see :func:`score_dataset`);
* ``report.md`` and ``report.png``: the same figures as a table and a chart.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from editsafe.errors import ConfigError
from editsafe.evaluation.datasets import Dataset, load_dataset
from editsafe.evaluation.judges import VERDICTS_FILE, Judge, VerdictStore, judge_cached, make_judge
from editsafe.evaluation.margin import refusal_margin
from editsafe.evaluation.metrics import attack_success, attack_success_by_category, refusal_rates
from editsafe.evaluation.report import write_run_report
from editsafe.evaluation.store import GENERATIONS_FILE, GenerationStore, generate_stored, model_key
from editsafe.generation import GenerationSettings

logger = logging.getLogger(__name__)

REPORT_FILE = "report.json"


def evaluate(
    model: str | os.PathLike[str] | None = None,
    datasets: Sequence[str | os.PathLike[str]] = (),
    *,
    out: str | os.PathLike[str],
    judge: str = "keyword",
    judge_url: str | None = None,
    judge_model: str | None = None,
    judge_key_env: str = "OPENAI_API_KEY",
    judge_labels: Mapping[str, str] | None = None,
    field: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    chat_template: bool = True,
    prefix: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    margin: bool = True,
    label: str | None = None,
    ppl_text: str | os.PathLike[str] | None = None,
    multiple_choice: str | os.PathLike[str] | None = None,
    edit: str | os.PathLike[str] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a model reference on datasets (``NAME=PATH`` or ``PATH``) and write the run folder ``out``.

    Returns the report that is also written to ``out/report.json``. ``limit``
    keeps a seeded random sample of N prompts per dataset, in file order.
    ``edit`` names an edit folder whose request is scored on this model (edit
    retention), with locality agreement against the edit's base model.
    """
    from editsafe.models.loading import load_model

    if not datasets:
        raise ConfigError("give at least one dataset (--dataset NAME=PATH)")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    loaded = _unique_names([load_dataset(spec, field=field) for spec in datasets])
    for dataset in loaded:
        dataset.prompts = sample_prompts(dataset.prompts, limit, seed)
    judge_instance = make_judge(judge, url=judge_url, model=judge_model, key_env=judge_key_env, label_map=judge_labels)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, seed=seed, chat_template=chat_template, prefix=prefix)

    model_instance, tokenizer = load_model(model, device=device, dtype=dtype)
    resolved = model_instance.editsafe_reference
    out_dir = Path(out)
    generations = GenerationStore(out_dir / GENERATIONS_FILE)
    verdicts = VerdictStore(out_dir / VERDICTS_FILE)

    entries: dict[str, Any] = {}
    for dataset in loaded:
        logger.info("%s: %d prompts from %s", dataset.name, len(dataset.prompts), dataset.path)
        records = generate_stored(
            model_instance, tokenizer, dataset.prompts, dataset=dataset.name, settings=settings,
            store=generations, batch_size=batch_size, progress=progress,
        )
        entries[dataset.name] = score_dataset(
            dataset, records, judge_instance, verdicts, model=model_instance, tokenizer=tokenizer,
            settings=settings, margin=margin, batch_size=batch_size, seed=seed, progress=progress,
        )

    report: dict[str, Any] = {
        "label": label or str(resolved.reference),
        "model": {
            **resolved.provenance(), "weights_folder": str(resolved.weights_folder),
            "model_key": model_key(model_instance),
        },
        "judge": judge_instance.describe(),
        "settings": {**settings.to_dict(), "batch_size": batch_size, "limit": limit, "margin": margin},
        "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "editsafe_version": _version(),
        "datasets": entries,
    }
    utility = _utility(model_instance, tokenizer, ppl_text, multiple_choice, progress)
    if utility:
        report["utility"] = utility
    if edit is not None:
        report["edit"] = _edit_metrics(model_instance, tokenizer, edit, device=device, dtype=dtype)
    write_run_report(report, out_dir)
    return report


def score_dataset(
    dataset: Dataset,
    records: list[dict[str, Any]],
    judge: Judge,
    verdicts: VerdictStore,
    *,
    model: Any,
    tokenizer: Any,
    settings: GenerationSettings,
    margin: bool,
    batch_size: int,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """Judge a dataset's responses and return its report entry.

    The entry has ``n`` (prompts) and, over the ``n_asr`` prompts not
    labelled safe, ``asr``, ``ci_low``, ``ci_high``, ``unsafe``,
    ``unjudged``, ASR per category and the refusal margin (mean and
    interval). A dataset with safe-labelled prompts (XSTest) also gets
    ``refusal_rate_safe`` and ``refusal_rate_unsafe``.
    """
    harmful = [record for record in records if record.get("label") != "safe"]
    judged = judge_cached(judge, [(r["prompt"], r["response"]) for r in harmful], verdicts)
    scored = [{**record, "verdict": verdict["verdict"]} for record, verdict in zip(harmful, judged)]
    summary = attack_success([record["verdict"] for record in scored])

    entry: dict[str, Any] = {
        "loader": dataset.loader, "path": str(dataset.path), "n": len(records), "n_asr": summary["n"],
        "asr": summary["asr"], "ci_low": summary["ci_low"], "ci_high": summary["ci_high"],
        "unsafe": summary["unsafe"], "unjudged": summary["unjudged"],
        "categories": attack_success_by_category(scored),
    }
    if any(record.get("label") == "safe" for record in records):
        entry.update(refusal_rates(records))
    if margin and harmful:
        result = refusal_margin(
            model, tokenizer, [record["prompt"] for record in harmful], chat_template=settings.chat_template,
            prefix=settings.prefix, batch_size=batch_size, seed=seed, progress=progress,
        )
        entry["refusal_margin"] = {"mean": result.mean, "ci_low": result.ci_low, "ci_high": result.ci_high}
    return entry


def sample_prompts(prompts: list[Any], limit: int | None, seed: int) -> list[Any]:
    """Return ``limit`` prompts drawn with a seeded generator, in their original order (all when None)."""
    if limit is None or limit >= len(prompts):
        return prompts
    chosen = sorted(random.Random(seed).sample(range(len(prompts)), limit))
    return [prompts[index] for index in chosen]


def _unique_names(datasets: list[Dataset]) -> list[Dataset]:
    seen: set[str] = set()
    result = []
    for dataset in datasets:
        name = dataset.name
        if name in seen:
            name = f"{dataset.name}-{dataset.path.stem}"
            logger.info("two datasets are named %s; calling the one from %s %s", dataset.name, dataset.path, name)
        if name in seen:
            raise ConfigError(f"dataset name {name!r} is used twice; name them with NAME=PATH")
        seen.add(name)
        result.append(replace(dataset, name=name))
    return result


def _utility(
    model: Any, tokenizer: Any, ppl_text: str | os.PathLike[str] | None,
    multiple_choice: str | os.PathLike[str] | None, progress: bool,
) -> dict[str, Any]:
    from editsafe.evaluation.utility import multiple_choice_accuracy, perplexity

    utility: dict[str, Any] = {}
    if ppl_text is not None:
        utility["perplexity"] = perplexity(model, tokenizer, ppl_text, progress=progress)
    if multiple_choice is not None:
        utility["multiple_choice"] = multiple_choice_accuracy(model, tokenizer, multiple_choice, progress=progress)
    return utility


def _edit_metrics(model: Any, tokenizer: Any, edit: str | os.PathLike[str], *, device: str | None,
                  dtype: str | None) -> dict[str, Any]:
    from editsafe.edit_metrics import locality_reference
    from editsafe.evaluation.edit_retention import edit_request_from_folder, measure_edit
    from editsafe.models.loading import load_model
    from editsafe.models.refs import resolve_model

    request = edit_request_from_folder(edit)
    reference_predictions = None
    base = resolve_model(edit).base
    if request.locality_prompts and base is not None:
        base_model, base_tokenizer = load_model(base, device=device, dtype=dtype)
        reference_predictions = locality_reference(base_model, base_tokenizer, request)
        del base_model
    metrics = measure_edit(model, tokenizer, request, reference_predictions=reference_predictions)
    return {"folder": str(Path(edit).resolve()), "request_id": request.id, **metrics}


def _version() -> str:
    from editsafe import __version__

    return __version__
