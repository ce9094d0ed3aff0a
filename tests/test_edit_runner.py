"""The edit runner on the tiny Llama: output layout, resume, sequential mode, materialisation, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from editsafe.cli import main
from editsafe.edit_runner import run_edits
from editsafe.errors import ConfigError, DataError, EditError, MissingDependencyError
from editsafe.io import read_jsonl
from editsafe.models import load_model, load_patches
from tests.edit_fixtures import TINY_REQUESTS, single_thread, write_requests, write_tiny_hparams  # noqa: F401

WEIGHT_NAME = "model.layers.2.mlp.down_proj.weight"
MANIFEST_KEYS = {"id", "status", "layer", "weight_name", "metrics", "seconds", "folder"}
FOLDER_KEYS = {
    "kind", "id", "base", "request", "layer", "weight_name", "mode", "sequence", "patch_count", "seed", "backend",
    "hparams", "metrics", "seconds", "timings", "diagnostics", "editsafe_version",
}


@pytest.fixture()
def setup(tmp_path: Path, tiny_model_dirs: dict[str, Path]) -> dict:
    return {
        "model": str(tiny_model_dirs["llama"]),
        "hparams": write_tiny_hparams(tmp_path / "rome.yaml"),
        "edits": write_requests(tmp_path / "edits.jsonl"),
        "out": tmp_path / "run",
    }


def run(setup: dict, **options) -> list[dict]:
    arguments = {"model": setup["model"], "hparams": setup["hparams"], "out": setup["out"], "progress": False}
    return run_edits(setup["edits"], **{**arguments, **options})


def folder_manifest(out: Path, identifier: str) -> dict:
    return json.loads((out / "edits" / identifier / "editsafe.json").read_text(encoding="utf-8"))


def fail_edit(monkeypatch: pytest.MonkeyPatch, identifier: str) -> None:
    """Make the patch computation of one request raise until ``monkeypatch.undo()``."""
    import editsafe.edit_step as edit_step

    real = edit_step.compute_patch

    def failing(step, request):
        if request.id == identifier:
            raise EditError("value optimisation diverged")
        return real(step, request)

    monkeypatch.setattr(edit_step, "compute_patch", failing)


def test_manifest_lines_complete(setup: dict) -> None:
    records = run(setup, limit=2)
    lines = read_jsonl(setup["out"] / "manifest.jsonl")
    assert lines == records
    assert [line["id"] for line in lines] == ["eiffel", "mother"]
    for line in lines:
        assert set(line) == MANIFEST_KEYS
        assert line["status"] == "done"
        assert line["layer"] == 2
        assert line["weight_name"] == WEIGHT_NAME
        assert set(line["metrics"]) == {"before", "after"}


def test_edit_folder_layout(setup: dict) -> None:
    run(setup, ids=["eiffel"], seed=3)
    manifest = folder_manifest(setup["out"], "eiffel")
    assert set(manifest) == FOLDER_KEYS
    assert manifest["kind"] == "rome-edit"
    assert manifest["seed"] == 3
    assert manifest["request"]["target_new"] == "Rome"
    assert manifest["base"]["path"] == str(Path(setup["model"]).resolve())
    assert manifest["hparams"]["layers"] == [2]
    assert len(load_patches(setup["out"] / "edits" / "eiffel" / "delta.safetensors")) == 1


def test_run_file_records_settings(setup: dict) -> None:
    run(setup, ids=["eiffel"], seed=5)
    record = json.loads((setup["out"] / "run.json").read_text(encoding="utf-8"))
    assert record["settings"]["seed"] == 5
    assert record["settings"]["ids"] == ["eiffel"]
    assert record["hparams"]["path"] == str(Path(setup["hparams"]).resolve())
    assert len(record["hparams"]["sha256"]) == 64
    assert record["base"]["hash"] == record["fingerprint"]["base_hash"]


def test_edit_folder_rebuilds_edited_weight(setup: dict) -> None:
    run(setup, ids=["eiffel"])
    folder = setup["out"] / "edits" / "eiffel"
    base, _ = load_model(setup["model"], device="cpu")
    edited, _ = load_model(folder, device="cpu")
    [patch] = load_patches(folder / "delta.safetensors")
    base_weight = dict(base.named_parameters())[WEIGHT_NAME]
    edited_weight = dict(edited.named_parameters())[WEIGHT_NAME]
    assert torch.allclose(edited_weight - base_weight, patch.delta(), atol=1e-6)
    assert torch.linalg.matrix_rank(edited_weight - base_weight, atol=1e-5) == 1


def test_other_weights_untouched(setup: dict) -> None:
    run(setup, ids=["eiffel"])
    base, _ = load_model(setup["model"], device="cpu")
    edited, _ = load_model(setup["out"] / "edits" / "eiffel", device="cpu")
    edited_parameters = dict(edited.named_parameters())
    for name, parameter in base.named_parameters():
        if name != WEIGHT_NAME:
            assert torch.equal(parameter, edited_parameters[name]), name


def test_resume_skips_finished(setup: dict) -> None:
    run(setup, limit=1)
    first = (setup["out"] / "edits" / "eiffel" / "editsafe.json").read_bytes()
    records = run(setup)
    assert [record["id"] for record in records] == ["eiffel", "mother", "water"]
    assert (setup["out"] / "edits" / "eiffel" / "editsafe.json").read_bytes() == first
    assert len(read_jsonl(setup["out"] / "manifest.jsonl")) == 3


def test_rerun_finished_changes_nothing(setup: dict) -> None:
    first = run(setup, limit=2)
    manifest = (setup["out"] / "manifest.jsonl").read_bytes()
    assert run(setup, limit=2) == first
    assert (setup["out"] / "manifest.jsonl").read_bytes() == manifest


def test_changed_settings_rejected(setup: dict) -> None:
    run(setup, limit=1)
    with pytest.raises(ConfigError, match="seed"):
        run(setup, limit=1, seed=1)


def test_overwrite_replaces_run(setup: dict) -> None:
    run(setup, limit=2)
    records = run(setup, limit=1, seed=1, overwrite=True)
    assert [record["id"] for record in records] == ["eiffel"]
    assert not (setup["out"] / "edits" / "mother").exists()


def test_unknown_id_rejected(setup: dict) -> None:
    with pytest.raises(ConfigError, match="nope"):
        run(setup, ids=["nope"])


def test_id_unusable_as_folder_rejected(setup: dict, tmp_path: Path) -> None:
    edits = write_requests(tmp_path / "slash.jsonl", [{**TINY_REQUESTS[0], "id": "geo/eiffel"}])
    with pytest.raises(DataError, match="cannot name an edit folder"):
        run({**setup, "edits": edits})


def test_partial_manifest_line_dropped(setup: dict) -> None:
    run(setup, limit=1)
    with open(setup["out"] / "manifest.jsonl", "a", encoding="utf-8") as stream:
        stream.write('{"id": "mother", "sta')
    records = run(setup, limit=2)
    assert [record["id"] for record in read_jsonl(setup["out"] / "manifest.jsonl")] == ["eiffel", "mother"]
    assert [record["status"] for record in records] == ["done", "done"]


def test_missing_manifest_rebuilt_from_folders(setup: dict) -> None:
    first = run(setup, limit=2)
    (setup["out"] / "manifest.jsonl").unlink()
    records = run(setup, limit=2)
    assert [record["id"] for record in records] == ["eiffel", "mother"]
    assert records[0]["metrics"] == first[0]["metrics"]


def test_sequential_accumulates_patches(setup: dict) -> None:
    run(setup, mode="sequential")
    counts = [len(load_patches(setup["out"] / "edits" / name / "delta.safetensors")) for name in ("eiffel", "mother", "water")]
    assert counts == [1, 2, 3]
    first = load_patches(setup["out"] / "edits" / "eiffel" / "delta.safetensors")[0]
    third_folder_first = load_patches(setup["out"] / "edits" / "water" / "delta.safetensors")[0]
    assert torch.equal(first.u, third_folder_first.u)
    assert torch.equal(first.right, third_folder_first.right)
    assert folder_manifest(setup["out"], "water")["sequence"] == ["eiffel", "mother", "water"]


def test_sequential_resume_matches_full_run(setup: dict, tmp_path: Path) -> None:
    run(setup, mode="sequential", limit=2)
    run(setup, mode="sequential")
    resumed = load_patches(setup["out"] / "edits" / "water" / "delta.safetensors")
    full = run({**setup, "out": tmp_path / "full"}, mode="sequential")
    assert [record["status"] for record in full] == ["done"] * 3
    straight = load_patches(tmp_path / "full" / "edits" / "water" / "delta.safetensors")
    for left, right in zip(resumed, straight):
        assert torch.allclose(left.right, right.right, atol=1e-5)


def test_sequential_second_edit_sees_first(setup: dict) -> None:
    records = run(setup, mode="sequential", ids=["eiffel", "mother"])
    single = run({**setup, "out": setup["out"].with_name("single")}, ids=["eiffel", "mother"])
    assert records[1]["metrics"]["before"] != single[1]["metrics"]["before"]


def test_materialized_model_matches_folder(setup: dict) -> None:
    from transformers import AutoModelForCausalLM

    run(setup, ids=["eiffel"], materialize=True)
    folder = setup["out"] / "edits" / "eiffel"
    plain = AutoModelForCausalLM.from_pretrained(folder / "model")
    rebuilt, _ = load_model(folder, device="cpu")
    rebuilt_state = rebuilt.state_dict()
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, rebuilt_state[name]), name


def test_materialized_tokenizer_saved(setup: dict) -> None:
    from transformers import AutoTokenizer

    run(setup, ids=["eiffel"], materialize=True)
    tokenizer = AutoTokenizer.from_pretrained(setup["out"] / "edits" / "eiffel" / "model")
    assert tokenizer("Rome")["input_ids"]


def test_failed_edit_recorded(setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_edit(monkeypatch, "mother")
    records = run(setup)
    assert [record["status"] for record in records] == ["done", "failed", "done"]
    assert records[1]["error"] == "EditError: value optimisation diverged"
    assert records[1]["layer"] == 2
    assert not (setup["out"] / "edits" / "mother").exists()


def test_failed_write_leaves_nothing(setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import editsafe.edit_folder as edit_folder

    real = edit_folder.save_patches

    def failing(path, patches):
        real(path, patches)
        if "mother" in str(path):
            raise RuntimeError("disk full")

    clean = run({**setup, "out": setup["out"].with_name("clean")})
    monkeypatch.setattr(edit_folder, "save_patches", failing)
    records = run(setup)
    assert [record["status"] for record in records] == ["done", "failed", "done"]
    assert sorted(path.name for path in (setup["out"] / "edits").iterdir()) == ["eiffel", "water"]
    # The model was restored after the failure, so the next edit starts from the same weights.
    assert records[2]["metrics"]["before"] == clean[2]["metrics"]["before"]


def test_failed_edit_retried_on_resume(setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_edit(monkeypatch, "mother")
    run(setup)
    monkeypatch.undo()
    records = run(setup)
    assert [(record["id"], record["status"]) for record in records] == [
        ("eiffel", "done"), ("water", "done"), ("mother", "done"),
    ]


def test_sequential_failure_skipped(setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_edit(monkeypatch, "mother")
    run(setup, mode="sequential")
    assert folder_manifest(setup["out"], "water")["sequence"] == ["eiffel", "water"]
    assert len(load_patches(setup["out"] / "edits" / "water" / "delta.safetensors")) == 2


def test_sequential_failure_not_retried(setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_edit(monkeypatch, "mother")
    run(setup, mode="sequential")
    monkeypatch.undo()
    records = run(setup, mode="sequential")
    assert [(record["id"], record["status"]) for record in records] == [
        ("eiffel", "done"), ("mother", "failed"), ("water", "done"),
    ]


def test_sequential_insert_before_rejected(setup: dict) -> None:
    run(setup, mode="sequential", ids=["mother"])
    with pytest.raises(ConfigError, match="already continued past eiffel"):
        run(setup, mode="sequential")


def test_edit_on_edited_base(setup: dict, tmp_path: Path) -> None:
    run(setup, ids=["eiffel"])
    first_folder = setup["out"] / "edits" / "eiffel"
    run({**setup, "model": str(first_folder), "out": tmp_path / "second"}, ids=["mother"])
    second_folder = tmp_path / "second" / "edits" / "mother"
    assert len(load_patches(second_folder / "delta.safetensors")) == 2
    assert folder_manifest(tmp_path / "second", "mother")["base"]["path"] == str(Path(setup["model"]).resolve())
    first_model, _ = load_model(first_folder, device="cpu")
    second_model, _ = load_model(second_folder, device="cpu")
    assert not torch.equal(
        dict(first_model.named_parameters())[WEIGHT_NAME], dict(second_model.named_parameters())[WEIGHT_NAME]
    )


def test_easyedit_backend_needs_package(setup: dict) -> None:
    import importlib.util

    if importlib.util.find_spec("easyeditor") is not None:
        pytest.skip("easyeditor is installed")
    with pytest.raises(MissingDependencyError, match="easyeditor"):
        run(setup, backend="easyedit")
    assert not (setup["out"] / "run.json").exists()


def test_cli_edit_runs(setup: dict) -> None:
    result = CliRunner().invoke(main, [
        "edit", "--model", setup["model"], "--hparams", str(setup["hparams"]), "--edits", str(setup["edits"]),
        "--ids", "eiffel,water", "--out", str(setup["out"]),
    ])
    assert result.exit_code == 0, result.output
    assert "2 edit(s) done, 0 failed" in result.output
    assert (setup["out"] / "edits" / "water" / "delta.safetensors").is_file()


def test_cli_reports_bad_ids(setup: dict) -> None:
    result = CliRunner().invoke(main, [
        "edit", "--model", setup["model"], "--hparams", str(setup["hparams"]), "--edits", str(setup["edits"]),
        "--ids", "nope", "--out", str(setup["out"]),
    ])
    assert result.exit_code == 1
    assert "no request with id(s) nope" in result.output


def test_tiny_requests_loadable() -> None:
    assert [row["id"] for row in TINY_REQUESTS] == ["eiffel", "mother", "water"]
