"""Reports: one or more evaluation runs as JSON, a Markdown table and a PNG chart.

A run is the dict that :func:`editsafe.evaluation.evaluate` writes to
``report.json``. Several runs (the variants of ``editsafe compare``, or any
runs passed to ``editsafe report``) share one table: variants as rows,
datasets as columns. The chart draws ASR per dataset as grouped bars, one bar
per variant, with the Wilson interval as error bars. It renders with
matplotlib's Agg canvas, so it needs no display.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from editsafe.errors import DataError
from editsafe.evaluation.readers import read_json
from editsafe.io import atomic_path, write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"


def write_run_report(run: dict[str, Any], out_dir: str | os.PathLike[str]) -> None:
    """Write one run's ``report.json``, ``report.md`` and ``report.png`` into ``out_dir``."""
    folder = Path(out_dir)
    write_json_atomic(folder / REPORT_JSON, run)
    write_text_atomic(folder / REPORT_MD, render_markdown([run]))
    render_chart([run], folder / REPORT_PNG)


def write_comparison(runs: Sequence[dict[str, Any]], out_dir: str | os.PathLike[str], **extra: Any) -> dict[str, Any]:
    """Write a combined ``report.json`` (``{"runs": [...]}`` plus ``extra``), ``report.md`` and ``report.png``."""
    folder = Path(out_dir)
    combined = {**extra, "runs": list(runs)}
    write_json_atomic(folder / REPORT_JSON, combined)
    write_text_atomic(folder / REPORT_MD, render_markdown(runs, title=extra.get("title")))
    render_chart(runs, folder / REPORT_PNG)
    return combined


def load_runs(paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Read runs from run folders or report.json files; a combined report contributes all its runs."""
    runs: list[dict[str, Any]] = []
    for path_text in paths:
        path = Path(path_text)
        file = path / REPORT_JSON if path.is_dir() else path
        if not file.is_file():
            raise DataError(f"{file}: report not found; give a folder written by editsafe evaluate or compare")
        payload = read_json(file)
        found = payload.get("runs", [payload]) if isinstance(payload, dict) else None
        if not found or not all(isinstance(run, dict) and "datasets" in run for run in found):
            raise DataError(f"{file}: not an editsafe evaluation report (no 'datasets' entry)")
        runs.extend(found)
    return runs


def render_markdown(runs: Sequence[dict[str, Any]], *, title: str | None = None) -> str:
    """Return the Markdown report: models, ASR, refusal margin, over-safety, edit retention and utility."""
    datasets = _dataset_names(runs)
    lines = [f"# {title or 'editsafe evaluation report'}", ""]

    lines += ["## Models and settings", "", "| variant | model | kind | hash | judge | settings |", "|---|---|---|---|---|---|"]
    for run in runs:
        model = run.get("model", {})
        settings = run.get("settings", {})
        setting_text = ", ".join(
            f"{key}={settings.get(key)}" for key in ("max_new_tokens", "chat_template", "prefix", "seed", "limit")
        )
        judge = run.get("judge", {})
        judge_text = judge.get("name", "?") + (f" ({judge['model']})" if judge.get("model") else "")
        lines.append(f"| {_label(run)} | {model.get('path') or model.get('reference')} | {model.get('kind')} | "
                     f"`{str(model.get('hash', ''))[:12]}` | {judge_text} | {setting_text} |")

    lines += ["", "## Datasets", "", "| dataset | loader | file |", "|---|---|---|"]
    for name in datasets:
        entry = next(run["datasets"][name] for run in runs if name in run["datasets"])
        lines.append(f"| {name} | {entry.get('loader', '')} | {entry.get('path', '')} |")

    lines += ["", "## Attack success rate", "",
              "Unsafe responses / judged responses on the prompts not labelled safe, with the 95% Wilson "
              "interval; unjudged responses are counted apart.", ""]
    lines += _table(runs, datasets, _asr_cell)
    lines += ["", "## Refusal margin", "",
              "Mean log-odds (nats) of a refusal opening over a compliance opening, with a bootstrap 95% interval; "
              "higher means more refusing.", ""]
    lines += _table(runs, datasets, _margin_cell)

    xstest = [name for name in datasets if any("refusal_rate_safe" in run["datasets"].get(name, {}) for run in runs)]
    if xstest:
        lines += ["", "## Over-safety (XSTest)", "",
                  "Refusal rate on safe prompts (over-safety, lower is better) and on unsafe prompts "
                  "(higher is better), detected by refusal markers.", ""]
        lines += ["| variant | dataset | refusal rate, safe prompts | refusal rate, unsafe prompts |", "|---|---|---|---|"]
        for run in runs:
            for name in xstest:
                entry = run["datasets"].get(name, {})
                lines.append(f"| {_label(run)} | {name} | {_rate(entry, 'safe')} | {_rate(entry, 'unsafe')} |")

    if any(run.get("edit") for run in runs):
        lines += ["", "## Edit retention", "", "| variant | metric | value |", "|---|---|---|"]
        for run in runs:
            for key, value in _flatten(run.get("edit") or {}).items():
                lines.append(f"| {_label(run)} | {key} | {_number(value)} |")

    if any(run.get("utility") for run in runs):
        lines += ["", "## Utility", "", "| variant | metric | value |", "|---|---|---|"]
        for run in runs:
            utility = run.get("utility") or {}
            if "perplexity" in utility:
                ppl = utility["perplexity"]
                lines.append(f"| {_label(run)} | perplexity ({ppl.get('tokens')} tokens) | {ppl['perplexity']:.3f} |")
            if "multiple_choice" in utility:
                choice = utility["multiple_choice"]
                lines.append(f"| {_label(run)} | multiple-choice accuracy (n={choice['n']}) | "
                             f"{_interval(choice['accuracy'], *choice['accuracy_ci'])} |")
    return "\n".join(lines) + "\n"


def render_chart(runs: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Save a grouped bar chart of ASR per dataset (one bar per variant, Wilson error bars) as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    datasets = _dataset_names(runs)
    figure = Figure(figsize=(max(4.0, 1.6 * len(datasets) * max(1, len(runs)) ** 0.5 + 2), 3.6), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(runs))
    for index, run in enumerate(runs):
        heights, errors = [], [[], []]
        for name in datasets:
            entry = run["datasets"].get(name, {})
            asr = entry.get("asr")
            heights.append(asr or 0.0)
            errors[0].append(max(0.0, asr - entry["ci_low"]) if asr is not None else 0.0)
            errors[1].append(max(0.0, entry["ci_high"] - asr) if asr is not None else 0.0)
        positions = [d + (index - (len(runs) - 1) / 2) * width for d in range(len(datasets))]
        axes.bar(positions, heights, width, yerr=errors, capsize=3, label=_label(run))
    axes.set_xticks(range(len(datasets)))
    axes.set_xticklabels(datasets)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("attack success rate")
    axes.legend(fontsize="small")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")


def _table(runs: Sequence[dict[str, Any]], datasets: list[str], cell: Any) -> list[str]:
    lines = ["| variant | " + " | ".join(datasets) + " |", "|---" * (len(datasets) + 1) + "|"]
    for run in runs:
        lines.append(f"| {_label(run)} | " + " | ".join(cell(run["datasets"].get(name)) for name in datasets) + " |")
    return lines


def _asr_cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "–"
    if entry.get("asr") is None:
        return f"– (n={entry.get('n_asr', 0)})"
    unjudged = f", {entry['unjudged']} unjudged" if entry.get("unjudged") else ""
    return f"{_interval(entry['asr'], entry['ci_low'], entry['ci_high'])} (n={entry.get('n_asr')}{unjudged})"


def _margin_cell(entry: dict[str, Any] | None) -> str:
    margin = (entry or {}).get("refusal_margin")
    if not margin:
        return "–"
    return f"{margin['mean']:+.2f} [{margin['ci_low']:+.2f}, {margin['ci_high']:+.2f}]"


def _rate(entry: dict[str, Any], label: str) -> str:
    rate = entry.get(f"refusal_rate_{label}")
    if rate is None:
        return "–"
    low, high = entry.get(f"refusal_rate_{label}_ci", [None, None])
    return f"{_interval(rate, low, high)} (n={entry.get(f'n_{label}')})"


def _interval(value: float, low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return f"{value:.2f}"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _flatten(payload: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[name] = value
    return flat


def _label(run: dict[str, Any]) -> str:
    return str(run.get("label") or run.get("model", {}).get("reference") or "model")


def _dataset_names(runs: Sequence[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for run in runs:
        names.extend(name for name in run.get("datasets", {}) if name not in names)
    return names
