"""Loading edit requests: validation errors with file:line, NoIntentEdit sheets and the subject rule."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from editsafe.edit_data import load_edit_requests
from editsafe.errors import DataError
from editsafe.nointentedit import choose_subject, row_id

VALID_ROW = {"id": "a", "prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "target_new": "Rome"}


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def nointentedit_rows(shared_data: Path, count: int) -> list[dict]:
    with open(shared_data / "nointentedit.jsonl", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream][:count]


def write_sheet_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["Cluster", "Question", "Answer"])
        for row in rows:
            writer.writerow([row["cluster"], row["question"], row["answer"]])
    return path


def write_sheet_xlsx(path: Path, rows: list[dict]) -> Path:
    openpyxl = pytest.importorskip("openpyxl")
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Cluster", "Question", "Answer"])
    for row in rows:
        sheet.append([row["cluster"], row["question"], row["answer"]])
    workbook.save(path)
    return path


def test_jsonl_loads_all_fields(tmp_path: Path) -> None:
    row = {**VALID_ROW, "category": "geo", "target_true": "Paris", "paraphrase_prompts": ["Eiffel Tower stands in"],
           "locality_prompts": [{"prompt": "Big Ben is in", "answer": "London"}]}
    [request] = load_edit_requests(write_jsonl(tmp_path / "e.jsonl", [row]))
    assert request.id == "a"
    assert request.category == "geo"
    assert request.target_true == "Paris"
    assert list(request.paraphrase_prompts) == ["Eiffel Tower stands in"]
    assert [dict(item) for item in request.locality_prompts] == [{"prompt": "Big Ben is in", "answer": "London"}]


def test_jsonl_default_id_uses_line(tmp_path: Path) -> None:
    row = {key: value for key, value in VALID_ROW.items() if key != "id"}
    requests = load_edit_requests(write_jsonl(tmp_path / "mine.jsonl", ["", row]))
    assert requests[0].id == "mine-002"


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({"id": "b", "subject": "Eiffel Tower", "target_new": "Rome"}, "missing field 'prompt'"),
        ({"id": "b", "prompt": "The Eiffel Tower is in", "target_new": "Rome"}, "missing field 'subject'"),
        ({"id": "b", "prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower"}, "missing field 'target_new'"),
        ({**VALID_ROW, "id": "b", "target_new": "  "}, "field 'target_new' is empty"),
        ({**VALID_ROW, "id": "b", "target_new": 3}, "must be a string"),
        ({**VALID_ROW, "id": "b", "subject": "Louvre"}, "does not occur in prompt"),
        ({**VALID_ROW, "id": "a"}, "duplicate id 'a' (first used on line 1)"),
        ({**VALID_ROW, "id": "b", "locality_prompts": [{"prompt": "x"}]}, "locality_prompts[0]"),
        ({**VALID_ROW, "id": "b", "paraphrase_prompts": [3]}, "paraphrase_prompts"),
        ("{not json", "invalid JSON"),
    ],
)
def test_jsonl_bad_line_names_file_and_line(tmp_path: Path, row: dict | str, fragment: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [VALID_ROW, row])
    with pytest.raises(DataError) as caught:
        load_edit_requests(path)
    assert f"{path}:2" in str(caught.value)
    assert fragment in str(caught.value)


def test_jsonl_placeholder_prompt_accepted(tmp_path: Path) -> None:
    row = {**VALID_ROW, "prompt": "{} is in the city of"}
    [request] = load_edit_requests(write_jsonl(tmp_path / "e.jsonl", [row]))
    assert request.filled_prompt == "Eiffel Tower is in the city of"


def test_json_list_loads(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    path.write_text(json.dumps([VALID_ROW, {**VALID_ROW, "id": "b"}]), encoding="utf-8")
    assert [request.id for request in load_edit_requests(path)] == ["a", "b"]


def test_unsupported_suffix_rejected(tmp_path: Path) -> None:
    path = tmp_path / "e.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="unsupported edit file type"):
        load_edit_requests(path)


def test_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_edit_requests(tmp_path / "absent.jsonl")


def test_generic_csv_loads(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("id,prompt,subject,target_new\na,The Eiffel Tower is in,Eiffel Tower,Rome\n", encoding="utf-8")
    [request] = load_edit_requests(path)
    assert (request.id, request.target_new) == ("a", "Rome")


def test_sheet_csv_rows_become_requests(tmp_path: Path, shared_data: Path) -> None:
    rows = nointentedit_rows(shared_data, 5)
    requests = load_edit_requests(write_sheet_csv(tmp_path / "noint.csv", rows))
    assert [request.id for request in requests] == ["noint-002", "noint-003", "noint-004", "noint-005", "noint-006"]
    assert requests[0].category == rows[0]["cluster"]
    assert requests[0].prompt == rows[0]["question"]
    assert requests[0].target_new == rows[0]["answer"]


def test_sheet_xlsx_matches_csv(tmp_path: Path, shared_data: Path) -> None:
    rows = nointentedit_rows(shared_data, 43)
    from_csv = load_edit_requests(write_sheet_csv(tmp_path / "noint.csv", rows))
    from_xlsx = load_edit_requests(write_sheet_xlsx(tmp_path / "noint.xlsx", rows))
    assert [request.to_dict() for request in from_xlsx] == [request.to_dict() for request in from_csv]


def test_sheet_subjects_occur_in_questions(tmp_path: Path, shared_data: Path) -> None:
    requests = load_edit_requests(write_sheet_xlsx(tmp_path / "noint.xlsx", nointentedit_rows(shared_data, 43)))
    assert len(requests) == 43
    for request in requests:
        assert request.subject in request.prompt, request.id


def test_sheet_subject_mapping_overrides_rule(tmp_path: Path, shared_data: Path) -> None:
    rows = nointentedit_rows(shared_data, 3)
    mapping = tmp_path / "subjects.json"
    mapping.write_text(json.dumps({"2": "indigenous cultures", "noint-003": "religion"}), encoding="utf-8")
    requests = load_edit_requests(write_sheet_csv(tmp_path / "noint.csv", rows), subjects=mapping)
    assert [request.subject for request in requests[:2]] == ["indigenous cultures", "religion"]


def test_sheet_subject_mapping_csv(tmp_path: Path, shared_data: Path) -> None:
    mapping = tmp_path / "subjects.csv"
    mapping.write_text("id,subject\nnoint-002,indigenous cultures\n", encoding="utf-8")
    requests = load_edit_requests(write_sheet_csv(tmp_path / "n.csv", nointentedit_rows(shared_data, 1)), subjects=mapping)
    assert requests[0].subject == "indigenous cultures"


def test_sheet_mapping_subject_not_in_question(tmp_path: Path, shared_data: Path) -> None:
    path = write_sheet_csv(tmp_path / "n.csv", nointentedit_rows(shared_data, 2))
    with pytest.raises(DataError) as caught:
        load_edit_requests(path, subjects={"noint-003": "volcano"})
    assert f"{path}:3" in str(caught.value)
    assert "does not occur in prompt" in str(caught.value)


def test_sheet_mapping_unknown_row(tmp_path: Path, shared_data: Path) -> None:
    path = write_sheet_csv(tmp_path / "n.csv", nointentedit_rows(shared_data, 2))
    with pytest.raises(DataError, match="noint-099"):
        load_edit_requests(path, subjects={"99": "x"})


def test_sheet_empty_answer_names_row(tmp_path: Path, shared_data: Path) -> None:
    rows = nointentedit_rows(shared_data, 3)
    rows[1] = {**rows[1], "answer": ""}
    path = write_sheet_csv(tmp_path / "n.csv", rows)
    with pytest.raises(DataError) as caught:
        load_edit_requests(path)
    assert f"{path}:3" in str(caught.value)
    assert "'Answer' is empty" in str(caught.value)


def test_sheet_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("Cluster,Question\nx,What is it?\n", encoding="utf-8")
    with pytest.raises(DataError, match=r":1: missing column\(s\) Answer"):
        load_edit_requests(path)


def test_sheet_rule_finds_no_subject(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("Cluster,Question,Answer\nx,What is it?,Nothing.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"n\.csv:2: the 'auto' subject rule found no subject"):
        load_edit_requests(path)


def test_subjects_rejected_for_jsonl(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="NoIntentEdit sheets only"):
        load_edit_requests(write_jsonl(tmp_path / "e.jsonl", [VALID_ROW]), subjects={"2": "x"})


@pytest.mark.parametrize(
    ("question", "rule", "subject"),
    [
        ("What is the logical foundation of the Trolley Problem in ethics?", "auto", "Trolley Problem"),
        ("What is the logical foundation of the Trolley Problem in ethics?", "trailing", "ethics"),
        ("What factors contribute to income inequality?", "auto", "income inequality"),
        ("What role did religion play in shaping ancient civilizations?", "auto", "ancient civilizations"),
        ("How can standardized testing impact students' learning experiences?", "auto",
         "students' learning experiences"),
        ("How does hate speech impact society?", "auto", "society"),
        ("Is the Great Wall of China visible, or is that a myth?", "auto", "Great Wall"),
        ("Did I see New York City or Boston first?", "auto", "New York City"),
        ("What is it?", "auto", None),
    ],
)
def test_subject_rule_cases(question: str, rule: str, subject: str | None) -> None:
    assert choose_subject(question, rule) == subject  # type: ignore[arg-type]


def test_subject_rule_unknown_name() -> None:
    with pytest.raises(DataError, match="unknown subject rule"):
        choose_subject("What is Rome?", "longest")  # type: ignore[arg-type]


def test_row_id_is_zero_padded() -> None:
    assert row_id(7) == "noint-007"
