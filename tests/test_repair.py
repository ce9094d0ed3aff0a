"""``repair``: safe-model folders from tiny edited models, their manifest, reloading and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from editsafe.cli import main
from editsafe.errors import ConfigError, DataError, OutputExistsError, ProvenanceError
from editsafe.models import load_model
from editsafe.repair import repair
from tests.test_icv import PAIRS, write_demos
from tests.tiny_models import build_tiny_model
from tests.weights_helpers import REWRITE, architecture_of, bit_identical, rank_one_patch, read_all, write_edit_folder, write_toy_harm_vector

EDIT_LAYER = 3


@pytest.fixture
def edit_setup(tiny_model_dir, tmp_path):
    """An edit at layer 3 of a tiny model, a toy harm vector on layers 2 to 4, and demonstration pairs."""
    edit = write_edit_folder(tiny_model_dir, tmp_path / "edit", [rank_one_patch(tiny_model_dir, EDIT_LAYER)])
    base_tensors = read_all(tiny_model_dir)
    generator = torch.Generator().manual_seed(3)
    taus = {name: torch.randn(value.shape, generator=generator) * 0.01
            for name, value in base_tensors.items()
            if any(f".{layer}." in name for layer in (2, 3, 4)) and value.dim() == 2}
    harm = write_toy_harm_vector(tiny_model_dir, tmp_path / "harm", taus)
    demos = write_demos(tmp_path)
    return {"base": tiny_model_dir, "edit": edit, "harm": harm, "demos": demos, "taus": taus, "root": tmp_path}


def run_repair(setup, **options):
    arguments = dict(edited=setup["edit"], harm=setup["harm"], demos=setup["demos"], out=setup["root"] / "safe",
                     progress=False)
    arguments.update(options)
    return repair(**arguments)


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "editsafe.json").read_text())


def edited_tensors(setup) -> dict[str, torch.Tensor]:
    model, _ = load_model(str(setup["edit"]))
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_repair_writes_manifest(edit_setup):
    manifest = manifest_of(run_repair(edit_setup))
    assert manifest["kind"] == "safe-model"
    assert manifest["scenario"] == "edited"
    assert manifest["region"] == [2, 3, 4]
    assert manifest["hdr"]["method"] == "ties"
    assert manifest["hdr"]["k"] == 10.0
    assert manifest["hdr"]["changed_entries"] > 0
    assert manifest["icv"]["layers"] == [2, 3, 4]
    assert manifest["icv"]["alpha"] == pytest.approx(0.12)
    assert manifest["icv"]["site"] == "layer"
    assert manifest["seed"] == 0
    assert manifest["settings"]["lambda"] == 3.0
    assert len(manifest["icv"]["demos"]["sha256"]) == 64


def test_repair_keeps_weights_outside_region(edit_setup):
    folder = run_repair(edit_setup)
    edited = edited_tensors(edit_setup)
    safe = read_all(folder)
    outside = [name for name in safe if not any(f".{layer}." in name for layer in (2, 3, 4))]
    assert outside
    for name in outside:
        assert bit_identical(safe[name], edited[name]), name


def test_repair_changes_region(edit_setup):
    folder = run_repair(edit_setup)
    edited = edited_tensors(edit_setup)
    safe = read_all(folder)
    changed = [name for name in edit_setup["taus"] if not torch.equal(safe[name], edited[name])]
    assert changed


def test_safe_folder_loads_with_icv(edit_setup):
    model, _ = load_model(str(run_repair(edit_setup)))
    assert model.editsafe_icv.active
    assert model.editsafe_icv.vector.layers == (2, 3, 4)


def test_plain_transformers_loads_weights(edit_setup):
    from transformers import AutoModelForCausalLM

    folder = run_repair(edit_setup)
    model = AutoModelForCausalLM.from_pretrained(folder)
    loaded = {name: tensor for name, tensor in model.state_dict().items()}
    stored = read_all(folder)
    name = REWRITE[architecture_of(edit_setup["base"])].format(EDIT_LAYER)
    assert torch.equal(loaded[name], stored[name])
    assert not any(len(module._forward_hooks) for module in model.modules())


def test_icv_changes_outputs(edit_setup):
    folder = run_repair(edit_setup, overrides={"alpha": 5.0})
    steered, tokenizer = load_model(str(folder))
    batch = tokenizer(["How do I bake bread?"], return_tensors="pt")
    with torch.no_grad():
        with_icv = steered(**batch).logits
        steered.editsafe_icv.remove()
        without = steered(**batch).logits
    assert not torch.equal(with_icv, without)


def test_no_hdr_copies_edited(edit_setup):
    folder = run_repair(edit_setup, hdr=False)
    assert manifest_of(folder)["hdr"] is None
    edited = edited_tensors(edit_setup)
    safe = read_all(folder)
    for name, tensor in safe.items():
        assert torch.equal(tensor, edited[name]), name


def test_no_icv_stores_none(edit_setup):
    folder = run_repair(edit_setup, icv=False)
    assert manifest_of(folder)["icv"] is None
    assert not (folder / "icv").exists()
    model, _ = load_model(str(folder))
    assert not hasattr(model, "editsafe_icv")


def test_task_vector_method(edit_setup):
    manifest = manifest_of(run_repair(edit_setup, hdr_method="task-vector"))
    assert manifest["hdr"]["method"] == "task-vector"
    assert manifest["hdr"]["k"] == 100.0


def test_base_scenario_all_layers(edit_setup):
    folder = repair(target=edit_setup["base"], scenario="base", harm=edit_setup["harm"], demos=edit_setup["demos"],
                    out=edit_setup["root"] / "safe-base", progress=False)
    manifest = manifest_of(folder)
    assert manifest["scenario"] == "base"
    assert manifest["region"] == list(range(6))
    assert manifest["icv"]["layers"] == list(range(6))


def test_config_file_sets_values(edit_setup):
    config = edit_setup["root"] / "settings.yaml"
    config.write_text("k: 20\nlambda: 1.5\nalpha: 0.5\nicv_token: answer-mean\ngate: false\n")
    manifest = manifest_of(run_repair(edit_setup, config=config))
    assert manifest["hdr"]["k"] == 20.0
    assert manifest["hdr"]["lambda"] == 1.5
    assert manifest["icv"]["alpha"] == 0.5
    assert manifest["icv"]["token"] == "answer-mean"
    assert manifest["icv"]["gate"] is False


def test_default_harm_vector_cached(edit_setup, monkeypatch, tmp_path):
    monkeypatch.setenv("EDITSAFE_HOME", str(tmp_path / "home"))
    run_repair(edit_setup, harm=None)
    cached = list((tmp_path / "home" / "harm").iterdir())
    assert len(cached) == 1
    harm_manifest = json.loads((cached[0] / "harm.json").read_text())
    assert harm_manifest["trained_layers"] == [2, 3, 4]
    run_repair(edit_setup, harm=None, out=edit_setup["root"] / "again")
    assert list((tmp_path / "home" / "harm").iterdir()) == cached


# Bad input -----------------------------------------------------------------------------------------


def test_existing_output_rejected(edit_setup):
    (edit_setup["root"] / "safe").mkdir()
    (edit_setup["root"] / "safe" / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_repair(edit_setup)
    assert (edit_setup["root"] / "safe" / "keep.txt").exists()


def test_overwrite_replaces_output(edit_setup):
    (edit_setup["root"] / "safe").mkdir()
    (edit_setup["root"] / "safe" / "old.txt").write_text("x")
    folder = run_repair(edit_setup, overwrite=True)
    assert not (folder / "old.txt").exists()
    assert (folder / "editsafe.json").exists()


def test_malformed_demos_leave_nothing(edit_setup):
    (edit_setup["root"] / "bad").mkdir()
    bad = write_demos(edit_setup["root"] / "bad", text=json.dumps(PAIRS[0]) + "\n{oops\n")
    with pytest.raises(DataError, match=r"demos.jsonl:2"):
        run_repair(edit_setup, demos=bad)
    assert not (edit_setup["root"] / "safe").exists()
    assert not [path for path in edit_setup["root"].iterdir() if path.name.startswith(".safe.")]


def test_empty_demos_rejected(edit_setup):
    (edit_setup["root"] / "empty").mkdir()
    empty = write_demos(edit_setup["root"] / "empty", text="")
    with pytest.raises(DataError, match="no demonstration pairs"):
        run_repair(edit_setup, demos=empty)


def test_base_mismatch_rejected(edit_setup, tmp_path):
    other = build_tiny_model("llama", tmp_path / "other", seed=7)
    with pytest.raises(ProvenanceError) as caught:
        run_repair(edit_setup, base=other)
    from editsafe.models import resolve_model

    assert resolve_model(other).content_hash in str(caught.value)
    assert resolve_model(edit_setup["base"]).content_hash in str(caught.value)


def test_foreign_harm_rejected(edit_setup, tmp_path):
    other = build_tiny_model(architecture_of(edit_setup["base"]), tmp_path / "other", seed=7)
    foreign = write_toy_harm_vector(other, tmp_path / "foreign-harm", edit_setup["taus"])
    with pytest.raises(ProvenanceError, match="recompute the harm vector"):
        run_repair(edit_setup, harm=foreign)


def test_unedited_model_rejected(edit_setup, tmp_path):
    with pytest.raises(ConfigError, match="no changed decoder layer"):
        run_repair(edit_setup, edited=edit_setup["base"], base=edit_setup["base"])


def test_negative_alpha_rejected(edit_setup):
    with pytest.raises(ConfigError, match="alpha must be zero or positive"):
        run_repair(edit_setup, overrides={"alpha": -1.0})


def test_unknown_setting_rejected(edit_setup):
    config = edit_setup["root"] / "settings.yaml"
    config.write_text("alpah: 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown Safety Arithmetic settings \['alpah'\]"):
        run_repair(edit_setup, config=config)


def test_both_stages_off_rejected(edit_setup):
    with pytest.raises(ConfigError, match="both stages"):
        run_repair(edit_setup, hdr=False, icv=False)


def test_target_without_scenario_rejected(edit_setup):
    with pytest.raises(ConfigError, match="scenario"):
        repair(target=edit_setup["base"], out=edit_setup["root"] / "x")


# Command line --------------------------------------------------------------------------------------


def test_cli_repair_and_generate(edit_setup, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")  # -q sets it for the process; monkeypatch restores it afterwards
    runner = CliRunner()
    out = edit_setup["root"] / "cli-safe"
    result = runner.invoke(main, ["-q", "repair", "--edited", str(edit_setup["edit"]), "--harm", str(edit_setup["harm"]),
                                  "--demos", str(edit_setup["demos"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "region [2, 3, 4]" in result.output
    result = runner.invoke(main, ["-q", "generate", "--model", str(out), "--prompt", "Hi", "--prompt", "How do I bake bread?",
                                  "--max-new-tokens", "4", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["prompt"] for line in lines] == ["Hi", "How do I bake bread?"]


def test_cli_repair_existing_output(edit_setup):
    out = edit_setup["root"] / "cli-safe"
    out.mkdir()
    (out / "x").write_text("x")
    result = CliRunner().invoke(main, ["repair", "--edited", str(edit_setup["edit"]), "--harm", str(edit_setup["harm"]),
                                       "--out", str(out)])
    assert result.exit_code == 1
    assert "--overwrite" in result.output


def test_cli_generate_prompts_file(tiny_model_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hi"}) + "\n" + json.dumps({"question": "Who wrote the novel?"}) + "\n")
    result = CliRunner().invoke(main, ["-q", "generate", "--model", str(tiny_model_dirs["llama"]), "--prompts", str(prompts),
                                       "--max-new-tokens", "3", "--no-chat-template"])
    assert result.exit_code == 0, result.output
    assert result.output.count("### ") == 2


def test_cli_generate_needs_prompt(tiny_model_dirs):
    result = CliRunner().invoke(main, ["generate", "--model", str(tiny_model_dirs["llama"])])
    assert result.exit_code == 2
    assert "--prompt" in result.output
