"""ROME hyperparameter files: EasyEdit's schema, validation and the bundled files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from editsafe.errors import ConfigError
from editsafe.paths import bundled_dir
from editsafe.rome import default_hparams_path, load_hparams, save_hparams, validate_for_model
from editsafe.rome.hparams import EASYEDIT_KEYS, RomeHyperParams

# A ROME file in the form EasyEdit ships for Llama models (its keys, its spelling of numbers).
EASYEDIT_LLAMA_YAML = """\
alg_name: "ROME"
model_name: "./hugging_cache/llama-2-7b"
stats_dir: "./data/stats"
device: 0
layers: [5]
fact_token: "subject_last"
v_num_grad_steps: 25
v_lr: 5e-1
v_loss_layer: 31
v_weight_decay: 1e-3
clamp_norm_factor: 4
kl_factor: 0.0625
mom2_adjustment: false
context_template_length_params: [[5, 10], [10, 10]]
rewrite_module_tmp: "model.layers.{}.mlp.down_proj"
layer_module_tmp: "model.layers.{}"
mlp_module_tmp: "model.layers.{}.mlp"
attn_module_tmp: "model.layers.{}.self_attn"
ln_f_module: "model.norm"
lm_head_module: "lm_head"
mom2_dataset: "wikipedia"
mom2_n_samples: 100000
mom2_dtype: "float32"
model_parallel: false
fp16: false
"""

BUNDLED = sorted((bundled_dir("hparams") / "ROME").glob("*.yaml"))


@pytest.fixture
def easyedit_file(tmp_path: Path) -> Path:
    path = tmp_path / "llama-7b.yaml"
    path.write_text(EASYEDIT_LLAMA_YAML, encoding="utf-8")
    return path


def _record(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _write(tmp_path: Path, record: dict[str, Any]) -> Path:
    path = tmp_path / "hparams.yaml"
    path.write_text(yaml.safe_dump(record), encoding="utf-8")
    return path


def test_easyedit_file_loads(easyedit_file: Path) -> None:
    hparams = load_hparams(easyedit_file)
    assert hparams.layers == (5,)
    assert hparams.v_lr == 0.5
    assert hparams.v_weight_decay == 0.001
    assert hparams.clamp_norm_factor == 4.0
    assert hparams.context_template_length_params == ((5, 10), (10, 10))
    assert hparams.max_length == 40


def test_round_trip_keeps_values(easyedit_file: Path, tmp_path: Path) -> None:
    hparams = load_hparams(easyedit_file)
    saved = tmp_path / "saved.yaml"
    save_hparams(hparams, saved)
    assert load_hparams(saved) == hparams


def test_round_trip_keeps_easyedit_keys(easyedit_file: Path, tmp_path: Path) -> None:
    saved = tmp_path / "saved.yaml"
    save_hparams(load_hparams(easyedit_file), saved)
    assert list(_record(saved)) == list(EASYEDIT_KEYS)
    assert set(_record(easyedit_file)) <= set(_record(saved))


def test_extensions_round_trip(easyedit_file: Path, tmp_path: Path) -> None:
    hparams = load_hparams(easyedit_file).replace(
        context_templates=("{}", "The. {}"), seed=3, mom2_corpus="corpus.jsonl", kl_prompt="{} is known as"
    )
    saved = tmp_path / "saved.yaml"
    save_hparams(hparams, saved)
    assert load_hparams(saved) == hparams


def test_easyedit_export_drops_extensions(easyedit_file: Path, tmp_path: Path) -> None:
    hparams = load_hparams(easyedit_file).replace(seed=3, context_templates=("{}",))
    saved = tmp_path / "saved.yaml"
    save_hparams(hparams, saved, extensions=False)
    assert set(_record(saved)) == set(EASYEDIT_KEYS)


def test_unknown_key_named(easyedit_file: Path, tmp_path: Path) -> None:
    record = _record(easyedit_file) | {"v_learning_rate": 0.1}
    with pytest.raises(ConfigError, match="v_learning_rate.*allowed keys: alg_name"):
        load_hparams(_write(tmp_path, record))


def test_missing_key_named(easyedit_file: Path, tmp_path: Path) -> None:
    record = _record(easyedit_file)
    del record["v_loss_layer"]
    with pytest.raises(ConfigError, match="missing required key.*v_loss_layer"):
        load_hparams(_write(tmp_path, record))


@pytest.mark.parametrize(
    ("key", "value"),
    [("layers", "5"), ("v_num_grad_steps", 2.5), ("v_lr", "fast"), ("mom2_adjustment", "no"),
     ("context_template_length_params", [[5]]), ("context_templates", "The. {}")],
)
def test_wrong_type_named(easyedit_file: Path, tmp_path: Path, key: str, value: Any) -> None:
    record = _record(easyedit_file) | {key: value}
    with pytest.raises(ConfigError, match=f"{key} is .*expected"):
        load_hparams(_write(tmp_path, record))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("fact_token", "subject_middle", "allowed: subject_last, subject_first, last"),
     ("layers", [4, 5], "exactly one layer"),
     ("alg_name", "MEMIT", "ROME file"),
     ("v_lr", float("nan"), "finite number > 0"),
     ("clamp_norm_factor", 0, "finite number > 0"),
     ("kl_factor", -1.0, "finite number >= 0"),
     ("mom2_dtype", "int8", "allowed: float32"),
     ("rewrite_module_tmp", "model.layers.mlp", "exactly one"),
     ("context_templates", ["The. prompt"], "exactly one"),
     ("kl_prompt", "is a", "exactly one")],
)
def test_invalid_value_named(easyedit_file: Path, tmp_path: Path, key: str, value: Any, message: str) -> None:
    record = _record(easyedit_file) | {key: value}
    with pytest.raises(ConfigError, match=message):
        load_hparams(_write(tmp_path, record))


def test_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_hparams(tmp_path / "absent.yaml")


def _tiny_model(model_type: str, layers: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig
    from transformers import MistralForCausalLM

    small = dict(vocab_size=64, num_attention_heads=2, num_key_value_heads=1, hidden_size=16,
                 intermediate_size=32, num_hidden_layers=layers)
    if model_type == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=layers, n_head=2))
    if model_type == "mistral":
        return MistralForCausalLM(MistralConfig(**small))
    return LlamaForCausalLM(LlamaConfig(**small))


@pytest.mark.parametrize(
    ("name", "model_type", "layers"),
    [("llama-2-7b", "llama", 32), ("llama-3-8b", "llama", 32), ("mistral-7b", "mistral", 32),
     ("gpt2-xl", "gpt2", 48), ("smollm2-135m-instruct", "llama", 30)],
)
def test_bundled_templates_resolve(name: str, model_type: str, layers: int) -> None:
    hparams = load_hparams(bundled_dir("hparams") / "ROME" / f"{name}.yaml")
    validate_for_model(hparams, _tiny_model(model_type, layers))


def test_bundled_files_are_easyedit_only() -> None:
    assert BUNDLED
    for path in BUNDLED:
        assert set(_record(path)) == set(EASYEDIT_KEYS), path.name


def test_layer_outside_model_named(easyedit_file: Path) -> None:
    with pytest.raises(ConfigError, match="layer 5 is outside .* 4 decoder layers .*0 to 3"):
        validate_for_model(load_hparams(easyedit_file), _tiny_model("llama", 4))


def test_unresolved_template_named(easyedit_file: Path) -> None:
    hparams = load_hparams(easyedit_file).replace(mlp_module_tmp="model.layers.{}.feed_forward")
    with pytest.raises(ConfigError, match="mlp_module_tmp.*model.layers.5.feed_forward.*model.layers"):
        validate_for_model(hparams, _tiny_model("llama", 32))


def test_llama_file_rejected_on_gpt2(easyedit_file: Path) -> None:
    with pytest.raises(ConfigError, match="rewrite_module_tmp.*existing modules include .*transformer"):
        validate_for_model(load_hparams(easyedit_file), _tiny_model("gpt2", 32))


def test_default_path_for_alias() -> None:
    assert default_hparams_path("smollm2-135m-instruct").name == "smollm2-135m-instruct.yaml"


@pytest.mark.parametrize(
    ("model_type", "expected"),
    [("llama", "llama-2-7b.yaml"), ("mistral", "mistral-7b.yaml"), ("gpt2", "gpt2-xl.yaml")],
)
def test_default_path_by_family(model_type: str, expected: str) -> None:
    assert default_hparams_path(_tiny_model(model_type, 2)).name == expected


def test_default_path_unknown_named() -> None:
    with pytest.raises(ConfigError, match="no bundled ROME hyperparameters.*smollm2-135m-instruct"):
        default_hparams_path("some-other-model")


def test_replace_validates(easyedit_file: Path) -> None:
    with pytest.raises(ConfigError, match="fact_token"):
        load_hparams(easyedit_file).replace(fact_token="first")


def test_frozen(easyedit_file: Path) -> None:
    hparams: RomeHyperParams = load_hparams(easyedit_file)
    with pytest.raises(AttributeError):
        hparams.v_lr = 1.0  # type: ignore[misc]
