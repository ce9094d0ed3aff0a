"""End to end on the default model: ``editsafe edit`` on bundled requests, then load an edit folder as a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import editsafe
from editsafe.cli import main
from editsafe.io import read_jsonl
from editsafe.paths import bundled_dir
from tests.edit_fixtures import single_thread  # noqa: F401

# An edit counts as taken when the target's probability after the prompt grows by at least this factor.
MINIMUM_GAIN = 10.0
# Fixed context templates replace the 20 sampled ones of the bundled file, so each value step runs 3 prompts, not 21.
FIXED_TEMPLATES = ["{}", "Here is a short note. {}", "I read this in a book. {}"]


@pytest.fixture(scope="module")
def edit_run(tmp_path_factory: pytest.TempPathFactory, default_model_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("edit-e2e")
    from editsafe.rome import default_hparams_path

    record = yaml.safe_load(default_hparams_path("smollm2-135m-instruct").read_text(encoding="utf-8"))
    record["context_templates"] = FIXED_TEMPLATES
    hparams = out / "rome.yaml"
    hparams.write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
    for name, ids in (("facts.jsonl", "fact-001,fact-002"), ("unintentional.jsonl", "unint-001")):
        result = CliRunner().invoke(main, [
            "edit", "--edits", str(bundled_dir("edits") / name), "--ids", ids, "--hparams", str(hparams),
            "--out", str(out / name),
        ])
        assert result.exit_code == 0, result.output
    return out


def manifest_records(out: Path) -> list[dict]:
    return read_jsonl(out / "facts.jsonl" / "manifest.jsonl") + read_jsonl(out / "unintentional.jsonl" / "manifest.jsonl")


@pytest.mark.slow
def test_default_model_edits_done(edit_run: Path) -> None:
    records = manifest_records(edit_run)
    assert [record["id"] for record in records] == ["fact-001", "fact-002", "unint-001"]
    for record in records:
        assert record["status"] == "done", record


@pytest.mark.slow
def test_default_model_edits_raise_target(edit_run: Path) -> None:
    for record in manifest_records(edit_run):
        before = record["metrics"]["before"]["efficacy"]["target_probability"]
        after = record["metrics"]["after"]["efficacy"]["target_probability"]
        assert after > MINIMUM_GAIN * before, (record["id"], before, after)


@pytest.mark.slow
def test_default_model_edit_folder_loads(edit_run: Path) -> None:
    folder = edit_run / "facts.jsonl" / "edits" / "fact-001"
    model, tokenizer = editsafe.load_model(folder, device="cpu")
    request = json.loads((folder / "editsafe.json").read_text(encoding="utf-8"))["request"]
    from editsafe.edit_metrics import edit_metrics
    from editsafe.rome import EditRequest

    metrics = edit_metrics(model, tokenizer, EditRequest.from_dict(request))
    stored = json.loads((folder / "editsafe.json").read_text(encoding="utf-8"))["metrics"]["after"]
    assert metrics["efficacy"]["target_probability"] == pytest.approx(
        stored["efficacy"]["target_probability"], rel=1e-3
    )
