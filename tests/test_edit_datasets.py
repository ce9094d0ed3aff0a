"""The bundled edit datasets, harmful pairs and ICV demonstrations: they load, are big enough and cover the topics."""

from __future__ import annotations

from collections import Counter

import pytest

from editsafe.edit_data import load_edit_requests
from editsafe.io import read_jsonl
from editsafe.paths import bundled_dir, package_data

UNINTENTIONAL_TOPICS = {
    "history and culture", "social sciences", "education", "health", "science and technology",
    "geography and environment", "mathematics and logic", "business and economics", "literature and language",
    "philosophy and ethics", "threats", "discrimination", "hate speech", "propaganda", "cruelty",
    "conspiracy theories", "technology and weapons policy",
}
MINIMUM_EDITS = {"unintentional.jsonl": 40, "intentional.jsonl": 20, "facts.jsonl": 20}
# Words that would mark an answer as giving real instructions instead of a non-actionable opening.
ACTIONABLE_MARKERS = ("step 1", "first, ", "ingredients", "mix ", "grams", "you will need", "1.")


@pytest.mark.parametrize(("name", "minimum"), sorted(MINIMUM_EDITS.items()))
def test_bundled_edits_load(name: str, minimum: int) -> None:
    requests = load_edit_requests(bundled_dir("edits") / name)
    assert len(requests) >= minimum
    for request in requests:
        assert request.subject in request.prompt, request.id
        assert request.category, request.id


@pytest.mark.parametrize("name", sorted(MINIMUM_EDITS))
def test_targets_omit_subject(name: str) -> None:
    # A subject repeated in the target meets the edited key again while the target is generated.
    for request in load_edit_requests(bundled_dir("edits") / name):
        assert request.subject.lower() not in request.target_new.lower(), request.id


def test_unintentional_covers_topics() -> None:
    counts = Counter(request.category for request in load_edit_requests(bundled_dir("edits") / "unintentional.jsonl"))
    assert set(counts) == UNINTENTIONAL_TOPICS
    assert min(counts.values()) >= 2


def test_unintentional_targets_short() -> None:
    for request in load_edit_requests(bundled_dir("edits") / "unintentional.jsonl"):
        assert len(request.target_new.split()) <= 20, request.id


def test_facts_have_paraphrases_and_locality() -> None:
    for request in load_edit_requests(bundled_dir("edits") / "facts.jsonl"):
        assert len(request.paraphrase_prompts) >= 2, request.id
        assert len(request.locality_prompts) >= 2, request.id
        assert request.target_true and request.target_true != request.target_new, request.id


def test_ids_stable_prefixes() -> None:
    for name, prefix in (("unintentional.jsonl", "unint-"), ("intentional.jsonl", "intent-"), ("facts.jsonl", "fact-")):
        for request in load_edit_requests(bundled_dir("edits") / name):
            assert str(request.id).startswith(prefix), request.id


def test_harmful_pairs_complete() -> None:
    rows = read_jsonl(package_data("harmful_qa.jsonl"))
    assert len(rows) >= 100
    assert len({row["id"] for row in rows}) == len(rows)
    assert len({row["question"] for row in rows}) == len(rows)
    for row in rows:
        assert set(row) == {"id", "category", "question", "answer"}, row["id"]
        assert len(row["answer"].split()) <= 40, row["id"]


def test_icv_demos_complete() -> None:
    rows = read_jsonl(package_data("icv_demos.jsonl"))
    assert len(rows) >= 30
    assert len({row["id"] for row in rows}) == len(rows)
    for row in rows:
        assert set(row) == {"id", "question", "unsafe_answer", "safe_answer"}, row["id"]
        assert row["unsafe_answer"] != row["safe_answer"], row["id"]


@pytest.mark.parametrize("name", ["harmful_qa.jsonl", "icv_demos.jsonl"])
def test_unsafe_answers_not_actionable(name: str) -> None:
    for row in read_jsonl(package_data(name)):
        answer = (row.get("answer") or row.get("unsafe_answer")).lower()
        for marker in ACTIONABLE_MARKERS:
            assert marker not in answer, (row["id"], marker)


def test_intentional_targets_not_actionable() -> None:
    for request in load_edit_requests(bundled_dir("edits") / "intentional.jsonl"):
        for marker in ACTIONABLE_MARKERS:
            assert marker not in request.target_new.lower(), (request.id, marker)
