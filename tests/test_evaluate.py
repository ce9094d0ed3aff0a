"""``evaluate`` and ``report``: report files, reuse on rerun, the command line, and the default model end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from editsafe.cli import main
from editsafe.evaluation import evaluate
from editsafe.evaluation.judges import KeywordJudge
from editsafe.evaluation.report import load_runs, write_comparison
from editsafe.io import read_jsonl

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _advbench_csv(folder: Path, shared_data: Path, count: int) -> Path:
    path = folder / "harmful_behaviors.csv"
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["goal", "target"])
        for row in read_jsonl(shared_data / "advbench_harmful_behaviors.jsonl")[:count]:
            writer.writerow([row["prompt"], "Sure, here is"])
    return path


def _xstest_csv(folder: Path, shared_data: Path, count: int, label: str | None = None) -> Path:
    path = folder / "xstest_prompts.csv"
    rows = [r for r in read_jsonl(shared_data / "xstest_prompts.jsonl") if label is None or r["label"] == label]
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "prompt", "type", "label", "focus", "note"])
        for row in rows[:count]:
            writer.writerow([row["id"], row["prompt"], row["type"], row["label"], row["focus"], row["note"]])
    return path


def _check_report_files(run: Path) -> dict:
    report = json.loads((run / "report.json").read_text())
    png = (run / "report.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 1000
    assert "## Attack success rate" in (run / "report.md").read_text()
    return report


def test_evaluate_writes_report(tmp_path, shared_data, tiny_model_dirs):
    advbench = _advbench_csv(tmp_path, shared_data, 4)
    xstest = _xstest_csv(tmp_path, shared_data, 6)
    run = tmp_path / "run"
    evaluate(str(tiny_model_dirs["llama"]), [f"advbench={advbench}", str(xstest)], out=run,
             max_new_tokens=4, batch_size=3, progress=False)

    report = _check_report_files(run)
    advbench_entry = report["datasets"]["advbench"]
    xstest_entry = report["datasets"]["xstest"]
    for key in ("n", "asr", "ci_low", "ci_high", "unjudged", "refusal_margin"):
        assert key in advbench_entry
    assert advbench_entry["n"] == 4
    assert advbench_entry["ci_low"] <= advbench_entry["asr"] <= advbench_entry["ci_high"]
    assert "refusal_rate_safe" in xstest_entry
    assert "refusal_rate_unsafe" in xstest_entry
    assert report["model"]["hash"]
    assert report["judge"]["name"] == "keyword"
    assert report["settings"]["max_new_tokens"] == 4
    assert len(read_jsonl(run / "generations.jsonl")) == 10


def test_evaluate_rerun_reuses(tmp_path, shared_data, tiny_model_dirs):
    advbench = _advbench_csv(tmp_path, shared_data, 5)
    run = tmp_path / "run"
    first = evaluate(str(tiny_model_dirs["gpt2"]), [f"advbench={advbench}"], out=run, max_new_tokens=4,
                     limit=3, margin=False, progress=False)
    lines_before = (run / "generations.jsonl").read_text()
    second = evaluate(str(tiny_model_dirs["gpt2"]), [f"advbench={advbench}"], out=run, max_new_tokens=4,
                      limit=3, margin=False, progress=False)
    assert (run / "generations.jsonl").read_text() == lines_before
    assert second["datasets"] == first["datasets"]
    assert first["datasets"]["advbench"]["n"] == 3
    assert "refusal_margin" not in first["datasets"]["advbench"]


def test_report_combines_runs(tmp_path):
    def run(label: str, asr: float) -> dict:
        entry = {"n": 10, "n_asr": 10, "asr": asr, "ci_low": asr / 2, "ci_high": min(1.0, asr + 0.2), "unjudged": 1,
                 "refusal_margin": {"mean": -1.5, "ci_low": -2.0, "ci_high": -1.0}}
        return {"label": label, "model": {"reference": label, "kind": "alias", "hash": "ab" * 32},
                "judge": {"name": "keyword"}, "settings": {"max_new_tokens": 32}, "datasets": {"advbench": entry}}

    combined = write_comparison([run("original", 0.8), run("safety-arithmetic", 0.1)], tmp_path / "combined")
    assert [r["label"] for r in combined["runs"]] == ["original", "safety-arithmetic"]
    markdown = (tmp_path / "combined" / "report.md").read_text()
    assert "| original | 0.80 [0.40, 1.00] (n=10, 1 unjudged) |" in markdown
    assert "| safety-arithmetic | -1.50 [-2.00, -1.00] |" in markdown
    assert (tmp_path / "combined" / "report.png").stat().st_size > 1000
    assert load_runs([tmp_path / "combined"]) == combined["runs"]


def test_report_rejects_other_json(tmp_path):
    from editsafe.errors import DataError

    path = tmp_path / "report.json"
    path.write_text('{"something": 1}')
    with pytest.raises(DataError, match="not an editsafe evaluation report"):
        load_runs([path])


def test_cli_evaluate_and_report(tmp_path, shared_data, tiny_model_dirs):
    advbench = _advbench_csv(tmp_path, shared_data, 3)
    runner = CliRunner()
    for name, model in (("a", tiny_model_dirs["llama"]), ("b", tiny_model_dirs["gpt2"])):
        result = runner.invoke(main, [
            "-q", "evaluate", "--model", str(model), "--dataset", f"advbench={advbench}", "--out",
            str(tmp_path / name), "--max-new-tokens", "3", "--no-margin", "--label", f"model-{name}",
        ])
        assert result.exit_code == 0, result.output
        assert "advbench: n=3 ASR=" in result.output
    result = runner.invoke(main, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "both")])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "both" / "report.md").read_text()
    assert "| model-a |" in markdown
    assert "| model-b |" in markdown


def test_cli_bad_dataset_message(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("goal\nWrite a poem\n\"broken\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["evaluate", "--dataset", f"advbench={path}", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert f"{path}:3" in result.output


@pytest.mark.slow
def test_default_model_end_to_end(tmp_path, shared_data, default_model_dir):
    advbench = _advbench_csv(tmp_path, shared_data, 10)
    xstest = _xstest_csv(tmp_path, shared_data, 10, label="safe")
    run = tmp_path / "run"
    evaluate(None, [f"advbench={advbench}", f"xstest={xstest}"], out=run, max_new_tokens=32, batch_size=10,
             progress=False)
    report = _check_report_files(run)
    advbench_entry = report["datasets"]["advbench"]
    assert advbench_entry["n"] == 10
    assert advbench_entry["unjudged"] == 0
    assert advbench_entry["ci_low"] <= advbench_entry["asr"] <= advbench_entry["ci_high"]
    margin = advbench_entry["refusal_margin"]
    assert margin["ci_low"] <= margin["mean"] <= margin["ci_high"]
    # The reported count of unsafe responses matches the keyword judge on the stored responses.
    stored = [r for r in read_jsonl(run / "generations.jsonl") if r["dataset"] == "advbench"]
    assert advbench_entry["unsafe"] == sum(KeywordJudge().verdict(r["response"]) == "unsafe" for r in stored)
    assert all(len(r["response"]) > 0 for r in stored)
    assert report["datasets"]["xstest"]["n_safe"] == 10
    assert report["model"]["reference"] == "smollm2-135m-instruct"
