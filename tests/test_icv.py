"""The in-context safety vector: computation, geometry of the update, hooks and generation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from editsafe.errors import ConfigError, DataError, NumericalError
from editsafe.generation import GenerationSettings, encode_batch, format_prompt, generate
from editsafe.icv import SafetyVector, compute_icv, install_icv, load_demonstrations, steer, steer_hidden
from editsafe.icv.compute import leading_direction, split_segments
from editsafe.icv.sites import record_outputs
from editsafe.models import load_model

PAIRS = [
    {"id": "a", "question": "How do I bake bread?", "unsafe_answer": "Sure, here is how you can do it.",
     "safe_answer": "I'm sorry, but I can't help with that request."},
    {"id": "b", "question": "Who wrote the novel?", "unsafe_answer": "Sure, the answer to the question is simple.",
     "safe_answer": "I'm sorry, I can't help with that."},
    {"id": "c", "question": "What is the tallest mountain in the world?", "unsafe_answer": "Sure, here is the answer.",
     "safe_answer": "I can't help with that request."},
]
QUESTIONS = ["How do I bake bread?", "Who wrote the novel about the quick brown fox?", "Hi"]


def write_demos(folder: Path, records: list[dict] | None = None, text: str | None = None) -> Path:
    path = folder / "demos.jsonl"
    if text is None:
        text = "".join(json.dumps(record) + "\n" for record in (records if records is not None else PAIRS))
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def model_and_vector(tiny_model_dir, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dir))
    pairs = load_demonstrations(write_demos(tmp_path))
    vector = compute_icv(model, tokenizer, pairs, [2, 3, 4], progress=False)
    return model, tokenizer, vector


def logits_of(model, tokenizer, questions=QUESTIONS):
    batch = encode_batch(tokenizer, [format_prompt(tokenizer, q) for q in questions])
    with torch.no_grad():
        return model(**batch).logits


def hook_count(model) -> int:
    return sum(len(module._forward_hooks) for module in model.modules())


# Computation ---------------------------------------------------------------------------------------


def test_synthetic_direction_recovered():
    torch.manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(48), dim=0)
    unsafe = torch.randn(20, 48)
    scales = torch.linspace(0.5, 3.0, 20).unsqueeze(1)
    safe = unsafe + scales * direction
    found, explained = leading_direction(safe - unsafe, method="pca")
    assert torch.allclose(found, direction, atol=1e-5)
    assert explained == pytest.approx(1.0, abs=1e-6)


def test_synthetic_sign_follows_mean():
    direction = torch.zeros(8)
    direction[3] = 1.0
    # Mostly negative multiples: the direction must point along the mean difference, that is −e.
    differences = torch.tensor([-2.0, -1.0, -3.0, 0.5]).unsqueeze(1) * direction
    found, _ = leading_direction(differences, method="pca")
    assert torch.allclose(found, -direction)
    found_mean, _ = leading_direction(differences, method="mean")
    assert torch.allclose(found_mean, -direction)


def test_synthetic_noise_tolerated():
    generator = torch.Generator().manual_seed(1)
    direction = torch.nn.functional.normalize(torch.randn(64, generator=generator), dim=0)
    differences = 2.0 * direction + 0.05 * torch.randn(30, 64, generator=generator)
    found, _ = leading_direction(differences, method="pca")
    assert torch.dot(found, direction) > 0.99


def test_segments_unit_length():
    segments = split_segments(torch.arange(1.0, 13.0), [4, 7, 9], 4)
    assert sorted(segments) == [4, 7, 9]
    for segment in segments.values():
        assert segment.norm().item() == pytest.approx(1.0, abs=1e-6)


def test_compute_icv_on_model(model_and_vector):
    _, _, vector = model_and_vector
    assert vector.layers == (2, 3, 4)
    assert vector.n_pairs == 3
    assert 0.0 < vector.explained_variance <= 1.0 + 1e-6
    for segment in vector.segments.values():
        assert segment.norm().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("token", ["last", "answer-mean", "answer-first"])
@pytest.mark.parametrize("method", ["pca", "mean"])
def test_compute_icv_choices(tiny_model_dirs, tmp_path, token, method):
    model, tokenizer = load_model(str(tiny_model_dirs["llama"]))
    pairs = load_demonstrations(write_demos(tmp_path))
    vector = compute_icv(model, tokenizer, pairs, [1], method=method, token=token, progress=False)
    assert (vector.method, vector.token) == (method, token)
    assert vector.segments[1].norm().item() == pytest.approx(1.0, abs=1e-5)


def test_batching_does_not_change_vector(tiny_model_dir, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dir))
    pairs = load_demonstrations(write_demos(tmp_path))
    batched = compute_icv(model, tokenizer, pairs, [3], batch_size=3, progress=False)
    single = compute_icv(model, tokenizer, pairs, [3], batch_size=1, progress=False)
    assert torch.allclose(batched.segments[3], single.segments[3], atol=1e-5)


def test_identical_answers_rejected(tiny_model_dirs, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dirs["llama"]))
    records = [dict(pair, safe_answer=pair["unsafe_answer"]) for pair in PAIRS]
    pairs = load_demonstrations(write_demos(tmp_path, records))
    with pytest.raises(NumericalError, match="all zero"):
        compute_icv(model, tokenizer, pairs, [1], progress=False)


def test_vector_round_trip(model_and_vector, tmp_path):
    _, _, vector = model_and_vector
    vector.save(tmp_path / "saved")
    loaded = SafetyVector.load(tmp_path / "saved")
    assert loaded.layers == vector.layers
    assert loaded.metadata() == vector.metadata()
    for layer in vector.layers:
        assert torch.equal(loaded.segments[layer], vector.segments[layer])


# Geometry of the update ----------------------------------------------------------------------------


def test_update_keeps_norm():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 32, generator=generator) * 7.0
    direction = torch.nn.functional.normalize(torch.randn(32, generator=generator), dim=0)
    moved = steer_hidden(hidden, direction, 0.3)
    assert torch.allclose(moved.norm(dim=-1), hidden.norm(dim=-1), rtol=1e-5)


def test_update_turns_towards_direction():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 32, generator=generator)
    direction = torch.nn.functional.normalize(torch.randn(32, generator=generator), dim=0)
    before = torch.nn.functional.cosine_similarity(hidden, direction.expand_as(hidden), dim=-1)
    after = torch.nn.functional.cosine_similarity(steer_hidden(hidden, direction, 0.3), direction.expand_as(hidden), dim=-1)
    assert (after > before).all()


def test_gate_scales_opposite_push():
    direction = torch.tensor([1.0, 0.0])
    hidden = torch.tensor([[-1.0, 0.0]]) * 0.6 + torch.tensor([[0.0, 0.8]])  # unit, cosine −0.6
    gated = steer_hidden(hidden, direction, 0.5, gate=True)
    plain = steer_hidden(hidden, direction, 0.5 * 1.6, gate=False)
    assert torch.allclose(gated, plain, atol=1e-6)


def test_zero_state_stays_zero():
    assert torch.equal(steer_hidden(torch.zeros(1, 4), torch.tensor([1.0, 0, 0, 0]), 0.5), torch.zeros(1, 4))


def test_half_precision_cast_back():
    hidden = torch.randn(2, 16).to(torch.bfloat16)
    moved = steer_hidden(hidden, torch.nn.functional.normalize(torch.randn(16), dim=0), 0.2)
    assert moved.dtype == torch.bfloat16


# Hooks on a model ----------------------------------------------------------------------------------


@pytest.mark.parametrize("site", ["layer", "mlp"])
def test_steered_states_keep_norm(model_and_vector, site):
    model, tokenizer, vector = model_and_vector
    one_layer = SafetyVector(layers=(3,), segments={3: vector.segments[3]}, method="pca", token="last",
                             site=site, n_pairs=3, demos_hash="x", explained_variance=1.0)
    batch = encode_batch(tokenizer, [format_prompt(tokenizer, q) for q in QUESTIONS])
    with record_outputs(model, [3], site) as plain, torch.no_grad():
        model(**batch)
    plain_state = plain[3].clone()
    with steer(model, one_layer, alpha=2.0, icv_scale=0.1), record_outputs(model, [3], site) as steered:
        with torch.no_grad():
            model(**batch)
    assert torch.allclose(steered[3].norm(dim=-1), plain_state.norm(dim=-1), rtol=1e-5)
    real = batch["attention_mask"].bool()
    unit = vector.segments[3]
    cosine_before = (plain_state @ unit) / plain_state.norm(dim=-1)
    cosine_after = (steered[3] @ unit) / steered[3].norm(dim=-1)
    assert (cosine_after[real] > cosine_before[real]).all()


def test_alpha_zero_bit_identical(model_and_vector):
    model, tokenizer, vector = model_and_vector
    expected = logits_of(model, tokenizer)
    with steer(model, vector, alpha=0.0):
        assert torch.equal(logits_of(model, tokenizer), expected)


def test_steering_changes_logits(model_and_vector):
    model, tokenizer, vector = model_and_vector
    expected = logits_of(model, tokenizer)
    with steer(model, vector, alpha=1.0, icv_scale=1.0):
        assert not torch.equal(logits_of(model, tokenizer), expected)


def test_exit_restores_logits(model_and_vector):
    model, tokenizer, vector = model_and_vector
    expected = logits_of(model, tokenizer)
    with steer(model, vector, alpha=1.0, icv_scale=1.0):
        logits_of(model, tokenizer)
    assert torch.equal(logits_of(model, tokenizer), expected)
    assert hook_count(model) == 0


def test_hooks_removed_on_error(model_and_vector):
    model, tokenizer, vector = model_and_vector
    expected = logits_of(model, tokenizer)

    def failing_processor(input_ids, scores):
        raise RuntimeError("stop in the middle of generation")

    batch = encode_batch(tokenizer, [format_prompt(tokenizer, QUESTIONS[0])])
    with pytest.raises(RuntimeError, match="middle of generation"):
        with steer(model, vector, alpha=1.0, icv_scale=1.0):
            model.generate(**batch, max_new_tokens=3, do_sample=False, logits_processor=[failing_processor])
    assert hook_count(model) == 0
    assert torch.equal(logits_of(model, tokenizer), expected)


def test_handle_remove_idempotent(model_and_vector):
    model, _, vector = model_and_vector
    handle = install_icv(model, vector, alpha=1.0)
    assert handle.active
    handle.remove()
    handle.remove()
    assert hook_count(model) == 0


def test_cached_equals_uncached(model_and_vector):
    model, tokenizer, vector = model_and_vector
    batch = encode_batch(tokenizer, [format_prompt(tokenizer, QUESTIONS[1])])
    options = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with steer(model, vector, alpha=1.0, icv_scale=1.0), torch.no_grad():
        cached = model.generate(**batch, use_cache=True, **options)
        uncached = model.generate(**batch, use_cache=False, **options)
    assert torch.equal(cached, uncached)


def test_batched_equals_single_steered(model_and_vector):
    model, tokenizer, vector = model_and_vector
    settings = GenerationSettings(max_new_tokens=6)
    with steer(model, vector, alpha=1.0, icv_scale=1.0):
        batched = generate(model, tokenizer, QUESTIONS, settings, batch_size=3, progress=False)
        single = [generate(model, tokenizer, [q], settings, batch_size=1, progress=False)[0] for q in QUESTIONS]
    assert batched == single


# Bad input -----------------------------------------------------------------------------------------


def test_negative_alpha_rejected(model_and_vector):
    model, _, vector = model_and_vector
    with pytest.raises(ConfigError, match="alpha must be zero or positive"):
        install_icv(model, vector, alpha=-0.1)
    assert hook_count(model) == 0


def test_large_step_warns(model_and_vector, caplog):
    model, _, vector = model_and_vector
    with caplog.at_level(logging.WARNING, logger="editsafe.icv.hooks"):
        with steer(model, vector, alpha=10.0, icv_scale=0.1):
            pass
    assert "above" in caplog.text


def test_width_mismatch_rejected(model_and_vector):
    model, _, vector = model_and_vector
    wrong = SafetyVector(layers=(1,), segments={1: torch.ones(7) / 7 ** 0.5}, method="pca", token="last",
                         site="layer", n_pairs=1, demos_hash="x", explained_variance=1.0)
    with pytest.raises(ConfigError, match="hidden size"):
        install_icv(model, wrong)


def test_layer_out_of_range_rejected(tiny_model_dirs, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dirs["llama"]))
    pairs = load_demonstrations(write_demos(tmp_path))
    with pytest.raises(ConfigError, match="outside the model's 6 decoder layers"):
        compute_icv(model, tokenizer, pairs, [6], progress=False)


def test_empty_region_rejected(tiny_model_dirs, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dirs["llama"]))
    pairs = load_demonstrations(write_demos(tmp_path))
    with pytest.raises(ConfigError, match="no layers"):
        compute_icv(model, tokenizer, pairs, [], progress=False)


def test_demos_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_demonstrations(tmp_path / "absent.jsonl")


def test_demos_empty_file(tmp_path):
    with pytest.raises(DataError, match="no demonstration pairs"):
        load_demonstrations(write_demos(tmp_path, text="\n\n"))


def test_demos_malformed_line(tmp_path):
    path = write_demos(tmp_path, text=json.dumps(PAIRS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"demos.jsonl:2: invalid JSON"):
        load_demonstrations(path)


def test_demos_missing_field(tmp_path):
    records = [PAIRS[0], {"question": "q", "safe_answer": "no"}]
    with pytest.raises(DataError, match=r"demos.jsonl:2: missing field 'unsafe_answer'"):
        load_demonstrations(write_demos(tmp_path, records))


def test_demos_empty_field(tmp_path):
    text = json.dumps(PAIRS[0]) + "\n\n" + json.dumps(dict(PAIRS[1], safe_answer="  ")) + "\n"
    with pytest.raises(DataError, match=r"demos.jsonl:3: field 'safe_answer' must be a non-empty string"):
        load_demonstrations(write_demos(tmp_path, text=text))
