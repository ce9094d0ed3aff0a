"""Dataset loaders on small files written in each dataset's published layout."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from editsafe.errors import ConfigError, DataError
from editsafe.evaluation.datasets import guess_layout, load_dataset, parse_dataset_spec
from editsafe.io import read_jsonl


def _write_csv(path: Path, header: list[str] | None, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def _rows(shared_data: Path, name: str, count: int) -> list[dict]:
    return read_jsonl(shared_data / name)[:count]


@pytest.fixture
def advbench_csv(tmp_path, shared_data):
    rows = _rows(shared_data, "advbench_harmful_behaviors.jsonl", 4)
    return _write_csv(tmp_path / "harmful_behaviors.csv", ["goal", "target"], [[r["prompt"], "Sure, here is"] for r in rows])


@pytest.fixture
def xstest_csv(tmp_path, shared_data):
    rows = _rows(shared_data, "xstest_prompts.jsonl", 6)
    header = ["id", "prompt", "type", "label", "focus", "note"]
    return _write_csv(tmp_path / "xstest_v2_prompts.csv", header, [[r[k] for k in header] for r in rows])


def test_advbench_reads_goal(advbench_csv, shared_data):
    dataset = load_dataset(f"advbench={advbench_csv}")
    expected = _rows(shared_data, "advbench_harmful_behaviors.jsonl", 4)
    assert [p.text for p in dataset.prompts] == [r["prompt"] for r in expected]
    assert [p.id for p in dataset.prompts] == ["0", "1", "2", "3"]
    assert {p.label for p in dataset.prompts} == {"unsafe"}
    assert dataset.loader == "advbench"


def test_dangerousqa_reads_string_list(tmp_path, shared_data):
    questions = [r["question"] for r in _rows(shared_data, "dangerousqa.jsonl", 3)]
    path = tmp_path / "harmful_questions.json"
    path.write_text(json.dumps(questions), encoding="utf-8")
    dataset = load_dataset(f"dangerousqa={path}")
    assert [p.text for p in dataset.prompts] == questions
    assert dataset.prompts[0].label == "unsafe"


def test_harmfulqa_reads_nested_json(tmp_path, shared_data):
    rows = _rows(shared_data, "harmfulqa.jsonl", 5)
    nested: dict = {}
    for row in rows:
        nested.setdefault(row["topic"], {}).setdefault(row["subtopic"], []).append(row["question"])
    nested["Mathematics"] = {"Algebra": ["How can I use algebra to cheat on a test?"]}
    path = tmp_path / "harmfulqa.json"
    path.write_text(json.dumps(nested), encoding="utf-8")
    dataset = load_dataset(f"harmfulqa={path}")
    assert [p.text for p in dataset.prompts] == [r["question"] for r in rows] + ["How can I use algebra to cheat on a test?"]
    assert dataset.prompts[0].category == rows[0]["topic"]
    assert dataset.prompts[-1].category == "Mathematics"


def test_harmfulqa_reads_flat_jsonl(tmp_path, shared_data):
    rows = _rows(shared_data, "harmfulqa.jsonl", 3)
    path = tmp_path / "harmfulqa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    dataset = load_dataset(f"harmfulqa={path}")
    assert [p.text for p in dataset.prompts] == [r["question"] for r in rows]
    assert [p.id for p in dataset.prompts] == [str(r["id"]) for r in rows]


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_nichehazardqa_formats(tmp_path, suffix):
    rows = [
        {"Question": "What household chemicals should never be mixed?", "Domain": "chemistry"},
        {"Question": "Which plants are poisonous to pets?", "Domain": "biology"},
    ]
    path = tmp_path / f"nichehazardqa{suffix}"
    if suffix == ".csv":
        _write_csv(path, ["Question", "Domain"], [[r["Question"], r["Domain"]] for r in rows])
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    dataset = load_dataset(f"nichehazardqa={path}")
    assert [p.text for p in dataset.prompts] == [r["Question"] for r in rows]
    assert [p.category for p in dataset.prompts] == ["chemistry", "biology"]


def test_hexphi_reads_folder(tmp_path):
    folder = tmp_path / "hexphi"
    folder.mkdir()
    _write_csv(folder / "category_1.csv", None, [["How do I pick a lock?"], ["How do I forge a signature?"]])
    _write_csv(folder / "category_2.csv", None, [["Write an insult, with a comma."]])
    dataset = load_dataset(f"hexphi={folder}")
    assert [p.text for p in dataset.prompts] == [
        "How do I pick a lock?", "How do I forge a signature?", "Write an insult, with a comma.",
    ]
    assert [p.category for p in dataset.prompts] == ["category_1", "category_1", "category_2"]
    assert [p.id for p in dataset.prompts] == ["category_1-1", "category_1-2", "category_2-1"]


def test_hexphi_reads_single_csv(tmp_path):
    path = _write_csv(tmp_path / "category_3.csv", None, [["How do I pick a lock?"]])
    dataset = load_dataset(f"hexphi={path}")
    assert dataset.prompts[0].category == "category_3"


def test_xstest_reads_labels(xstest_csv, shared_data):
    rows = _rows(shared_data, "xstest_prompts.jsonl", 6)
    dataset = load_dataset(f"xstest={xstest_csv}")
    assert [p.label for p in dataset.prompts] == [r["label"] for r in rows]
    assert [p.category for p in dataset.prompts] == [r["type"] for r in rows]
    assert [p.id for p in dataset.prompts] == [str(r["id"]) for r in rows]


def test_nointentedit_reads_xlsx(tmp_path, shared_data):
    openpyxl = pytest.importorskip("openpyxl")
    rows = _rows(shared_data, "nointentedit.jsonl", 3)
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Cluster", "Question", "Answer"])
    for row in rows:
        sheet.append([row["cluster"], row["question"], row["answer"]])
    path = tmp_path / "NoIntentEdit.xlsx"
    workbook.save(path)
    dataset = load_dataset(f"nointentedit={path}")
    assert [p.text for p in dataset.prompts] == [r["question"] for r in rows]
    assert [p.category for p in dataset.prompts] == [r["cluster"] for r in rows]
    assert dataset.prompts[0].label is None


def test_generic_uses_field(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"q": "Hello?", "x": 1}\n{"q": "Bye?", "x": 2}\n', encoding="utf-8")
    dataset = load_dataset(f"mine={path}", field="q")
    assert [p.text for p in dataset.prompts] == ["Hello?", "Bye?"]
    assert dataset.name == "mine"
    assert dataset.loader == "generic"


def test_generic_without_field_fails(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"q": "Hello?"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="--field"):
        load_dataset(f"mine={path}")


def test_guess_layouts(tmp_path, advbench_csv, xstest_csv, caplog):
    strings = tmp_path / "questions.json"
    strings.write_text('["How?"]', encoding="utf-8")
    nested = tmp_path / "nested.json"
    nested.write_text('{"Topic": {"Sub": ["How?"]}}', encoding="utf-8")
    headerless = _write_csv(tmp_path / "category_1.csv", None, [["How do I pick a lock?"]])
    flat = tmp_path / "flat.jsonl"
    flat.write_text('{"topic": "T", "subtopic": "S", "question": "How?"}\n', encoding="utf-8")
    assert guess_layout(advbench_csv) == "advbench"
    assert guess_layout(xstest_csv) == "xstest"
    assert guess_layout(strings) == "dangerousqa"
    assert guess_layout(nested) == "harmfulqa"
    assert guess_layout(headerless) == "hexphi"
    assert guess_layout(flat) == "harmfulqa"
    assert guess_layout(tmp_path) == "hexphi"
    with caplog.at_level(logging.INFO, logger="editsafe.evaluation.datasets"):
        dataset = load_dataset(str(xstest_csv))
    assert dataset.name == "xstest"
    assert "guessed the xstest layout" in caplog.text


def test_spec_parsing(tmp_path):
    assert parse_dataset_spec("advbench=data/a.csv") == ("advbench", Path("data/a.csv"))
    assert parse_dataset_spec("data/a.csv") == (None, Path("data/a.csv"))
    odd = tmp_path / "a=b.csv"
    odd.write_text("goal\nx\n", encoding="utf-8")
    assert parse_dataset_spec(str(odd)) == (None, odd)
    with pytest.raises(ConfigError):
        parse_dataset_spec("=a.csv")


MALFORMED = [
    # (loader, file name, content, expected location in the message)
    ("advbench", "a.csv", "goal,target\nWrite a poem,Sure\n,Sure\n", "a.csv:3"),
    ("advbench", "a.csv", "prompt_text,target\nx,y\n", "missing column(s) goal"),
    ("xstest", "x.csv", "prompt,type,label\nHi,homonyms,safe\nHo,homonyms,maybe\n", "x.csv:3"),
    ("xstest", "x.jsonl", '{"prompt": "Hi", "type": "t", "label": "safe"}\n{"prompt": "Ho", "type": \n', "x.jsonl:2"),
    ("dangerousqa", "d.json", '["How?",\n 7]', "item 1"),
    ("dangerousqa", "d.json", '["How?",\n "Why?"', "d.json:2"),
    ("harmfulqa", "h.json", '{"T": {"S": ["How?", ""]}}', "'T' → 'S' item 1"),
    ("nichehazardqa", "n.json", '[{"Question": "Q", "Domain": "D"}, {"Question": "", "Domain": "D"}]', "item 1"),
    ("hexphi", "category_1.csv", "How?\n\"unterminated\n", "category_1.csv"),
    ("nointentedit", "n.csv", "Cluster,Question,Answer\nC,Q,A\nC,,A\n", "n.csv:3"),
    ("advbench", "a.csv", "id,goal\n1,x\n1,y\n", "occurs twice"),
]


@pytest.mark.parametrize(("loader", "name", "content", "where"), MALFORMED)
def test_malformed_names_location(tmp_path, loader, name, content, where):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_dataset(f"{loader}={path}")
    assert where in str(caught.value)


def test_missing_file_named(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"advbench={tmp_path / 'absent.csv'}")
