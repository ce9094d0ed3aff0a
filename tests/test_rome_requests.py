"""Edit requests and the token positions ROME reads from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from editsafe.errors import DataError
from editsafe.rome import EditRequest
from editsafe.rome.positions import encode_prompt, pad_batch, target_token_ids
from tests.tiny_models import build_tokenizer

RECORD = {
    "id": 7, "category": "geography", "prompt": "The Eiffel Tower is located in the city of",
    "subject": "Eiffel Tower", "target_new": "Rome", "target_true": "Paris",
    "paraphrase_prompts": ["Where is the Eiffel Tower? It is in"],
    "locality_prompts": [{"prompt": "The capital of Italy is", "answer": "Rome"}],
    "case_id": 12,
}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_tokenizer(Path(tmp_path_factory.mktemp("tokenizer")))


def test_from_dict_reads_fields() -> None:
    request = EditRequest.from_dict(RECORD, source="edits.jsonl:3")
    assert request.id == "7"
    assert request.paraphrase_prompts == ("Where is the Eiffel Tower? It is in",)
    assert request.locality_prompts == ({"prompt": "The capital of Italy is", "answer": "Rome"},)
    assert EditRequest.from_dict(request.to_dict()) == request


def test_placeholder_prompt_filled() -> None:
    request = EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="English")
    assert request.filled_prompt == "The mother tongue of Danielle Darrieux is"
    assert request.prompt_parts() == ("The mother tongue of ", " is")


def test_first_subject_occurrence_used() -> None:
    request = EditRequest(prompt="Paris and Paris are", subject="Paris", target_new="twins")
    assert request.prompt_parts() == ("", " and Paris are")


@pytest.mark.parametrize(
    ("change", "message"),
    [({"subject": "Big Ben"}, r"edits.jsonl:3: request '7': subject 'Big Ben' does not occur in prompt 'The Eiffel"),
     ({"target_new": None}, r"edits.jsonl:3: missing required field\(s\) target_new"),
     ({"prompt": 5}, r"edits.jsonl:3: field prompt must be a string, got int 5"),
     ({"target_new": "  "}, r"target_new must be a non-empty string"),
     ({"paraphrase_prompts": [1]}, r"paraphrase_prompts must be a list of strings"),
     ({"locality_prompts": [{"prompt": "x"}]}, r"locality_prompts\[0\] is .*prompt and answer")],
)
def test_bad_record_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=message):
        EditRequest.from_dict(RECORD | change, source="edits.jsonl:3")


def test_non_object_record_named() -> None:
    with pytest.raises(DataError, match="edits.jsonl:9: expected a JSON object"):
        EditRequest.from_dict(["prompt"], source="edits.jsonl:9")  # type: ignore[arg-type]


def test_subject_last_token(tokenizer: Any) -> None:
    request = EditRequest.from_dict(RECORD)
    encoded = encode_prompt(tokenizer, request, "subject_last")
    ids = list(encoded.input_ids)
    assert tokenizer.decode(ids[: encoded.fact_index + 1]) == "The Eiffel Tower"


def test_subject_first_token(tokenizer: Any) -> None:
    request = EditRequest.from_dict(RECORD)
    encoded = encode_prompt(tokenizer, request, "subject_first")
    ids = list(encoded.input_ids)
    assert tokenizer.decode(ids[: encoded.fact_index]) == "The"
    assert tokenizer.decode(ids[: encoded.fact_index + 1]).startswith("The E")


def test_last_token(tokenizer: Any) -> None:
    encoded = encode_prompt(tokenizer, EditRequest.from_dict(RECORD), "last")
    assert encoded.fact_index == len(encoded.input_ids) - 1


def test_fact_token_after_context(tokenizer: Any) -> None:
    request = EditRequest.from_dict(RECORD)
    bare = encode_prompt(tokenizer, request, "subject_last")
    templated = encode_prompt(tokenizer, request, "subject_last", context_template="Tower tower. {}")
    shift = len(templated.input_ids) - len(bare.input_ids)
    assert templated.fact_index == bare.fact_index + shift


def test_target_has_leading_space(tokenizer: Any) -> None:
    ids = target_token_ids(tokenizer, "The capital of Italy is", "Rome")
    assert tokenizer.decode(list(ids)) == " Rome"
    assert target_token_ids(tokenizer, "The capital of Italy is", " Rome") == ids


def test_targets_follow_prompt(tokenizer: Any) -> None:
    request = EditRequest.from_dict(RECORD)
    target_ids = target_token_ids(tokenizer, request.filled_prompt, "Rome")
    encoded = encode_prompt(tokenizer, request, "subject_last", target_ids=target_ids)
    prompt_length = len(encoded.input_ids) - len(target_ids) + 1
    assert encoded.target_positions == tuple(range(prompt_length - 1, prompt_length - 1 + len(target_ids)))
    assert encoded.input_ids[prompt_length:] == target_ids[:-1]


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_keeps_tokens(side: str) -> None:
    import torch

    batch = pad_batch([(5, 6, 7), (8,)], 0, side, torch.device("cpu"))
    assert batch.input_ids[0, batch.at(0, 2)] == 7
    assert batch.input_ids[1, batch.at(1, 0)] == 8
    assert batch.position_ids[1, batch.at(1, 0)] == 0
    assert batch.attention_mask.sum().item() == 4


def test_padding_side_invalid() -> None:
    import torch

    with pytest.raises(DataError, match="'middle'"):
        pad_batch([(1,)], 0, "middle", torch.device("cpu"))
