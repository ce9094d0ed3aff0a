"""Stored generation: resume after a kill, reuse on rerun, a partial last line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from editsafe.evaluation.datasets import Prompt
from editsafe.evaluation.store import GenerationStore, generate_stored
from editsafe.generation import GenerationSettings
from editsafe.models import load_model

QUESTIONS = [
    "How do I bake bread?", "Who wrote the novel?", "What is the tallest mountain?",
    "Where is the Eiffel Tower?", "Why does water boil?",
]
SETTINGS = GenerationSettings(max_new_tokens=4)
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Generates in batches of two and kills its own process with SIGKILL once the first batch is stored.
KILLED_RUN = """
import json, os, signal, sys
from editsafe.evaluation.datasets import Prompt
from editsafe.evaluation.store import GenerationStore, generate_stored
from editsafe.generation import GenerationSettings
from editsafe.models import load_model

model, tokenizer = load_model(sys.argv[1])
prompts = [Prompt(id=str(i), text=text) for i, text in enumerate(json.loads(sys.argv[3]))]
generate_stored(
    model, tokenizer, prompts, dataset="demo", settings=GenerationSettings(max_new_tokens=4),
    store=GenerationStore(sys.argv[2]), batch_size=2, progress=False,
    on_batch=lambda records: os.kill(os.getpid(), signal.SIGKILL),
)
"""


def _prompts() -> list[Prompt]:
    return [Prompt(id=str(index), text=text) for index, text in enumerate(QUESTIONS)]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_killed_run_resumes(tmp_path, tiny_model_dirs):
    model_dir = str(tiny_model_dirs["llama"])
    resumed_path = tmp_path / "resumed.jsonl"
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    completed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, model_dir, str(resumed_path), json.dumps(QUESTIONS)],
        env=environment, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == -signal.SIGKILL, completed.stderr
    assert [row["prompt_id"] for row in _lines(resumed_path)] == ["0", "1"]

    model, tokenizer = load_model(model_dir)
    generated: list[str] = []
    records = generate_stored(
        model, tokenizer, _prompts(), dataset="demo", settings=SETTINGS, store=GenerationStore(resumed_path),
        batch_size=2, progress=False, on_batch=lambda batch: generated.extend(r["prompt_id"] for r in batch),
    )
    clean_path = tmp_path / "clean.jsonl"
    clean = generate_stored(
        model, tokenizer, _prompts(), dataset="demo", settings=SETTINGS, store=GenerationStore(clean_path),
        batch_size=2, progress=False,
    )
    assert generated == ["2", "3", "4"]
    assert [r["prompt_id"] for r in _lines(resumed_path)] == ["0", "1", "2", "3", "4"]
    assert [r["response"] for r in records] == [r["response"] for r in clean]
    assert _lines(resumed_path) == _lines(clean_path)


def test_rerun_reuses_stored(tmp_path, tiny_model_dirs):
    model, tokenizer = load_model(str(tiny_model_dirs["llama"]))
    path = tmp_path / "generations.jsonl"
    first = generate_stored(model, tokenizer, _prompts(), dataset="demo", settings=SETTINGS,
                            store=GenerationStore(path), progress=False)
    calls: list[int] = []
    second = generate_stored(model, tokenizer, _prompts(), dataset="demo", settings=SETTINGS,
                             store=GenerationStore(path), progress=False, on_batch=lambda batch: calls.append(len(batch)))
    assert calls == []
    assert second == first
    assert len(_lines(path)) == len(QUESTIONS)


def test_changed_settings_regenerate(tmp_path, tiny_model_dirs):
    model, tokenizer = load_model(str(tiny_model_dirs["llama"]))
    store = GenerationStore(tmp_path / "generations.jsonl")
    generate_stored(model, tokenizer, _prompts()[:2], dataset="demo", settings=SETTINGS, store=store, progress=False)
    generate_stored(model, tokenizer, _prompts()[:2], dataset="demo", settings=GenerationSettings(max_new_tokens=5),
                    store=store, progress=False)
    changed_prompt = [Prompt(id="0", text="A different question under the same id")]
    generate_stored(model, tokenizer, changed_prompt, dataset="demo", settings=SETTINGS, store=store, progress=False)
    assert len(_lines(store.path)) == 5


def test_partial_last_line_dropped(tmp_path, tiny_model_dirs):
    model, tokenizer = load_model(str(tiny_model_dirs["llama"]))
    path = tmp_path / "generations.jsonl"
    generate_stored(model, tokenizer, _prompts()[:1], dataset="demo", settings=SETTINGS,
                    store=GenerationStore(path), progress=False)
    with open(path, "a", encoding="utf-8") as stream:
        stream.write('{"model_key": "abc", "respon')
    store = GenerationStore(path)
    assert len(store) == 1
    records = generate_stored(model, tokenizer, _prompts()[:2], dataset="demo", settings=SETTINGS,
                              store=store, progress=False)
    assert [r["prompt_id"] for r in _lines(path)] == ["0", "1"]
    assert len(records) == 2


def test_unloaded_model_rejected(tiny_model_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editsafe.errors import ModelReferenceError

    folder = tiny_model_dirs["llama"]
    model = AutoModelForCausalLM.from_pretrained(folder)
    with pytest.raises(ModelReferenceError, match="load_model"):
        generate_stored(model, AutoTokenizer.from_pretrained(folder), _prompts()[:1], dataset="demo",
                        settings=SETTINGS, store=GenerationStore(Path("unused.jsonl")), progress=False)
