"""Print the behaviour study's results (OUT/results.jsonl) as Markdown tables.

    PYTHONPATH=. python scripts/study_table.py /work/study/results.jsonl
"""

from __future__ import annotations

import sys

from editsafe.io import read_jsonl


def cell(record: dict, name: str) -> str:
    value = record.get(name)
    if not value:
        return "–"
    return f"{value['mean']:+.2f} [{value['ci_low']:+.2f}, {value['ci_high']:+.2f}]"


def main() -> None:
    records = {row["key"]: row for row in read_jsonl(sys.argv[1], skip_partial_last=True)}
    sweep_base = records.get("sweep/edited")
    if sweep_base:
        print("| sweep setting | harmful margin | Δ harmful | safe margin | Δ safe |")
        print("|---|---|---|---|---|")
        for key, record in records.items():
            if not key.startswith("sweep/"):
                continue
            rise = record["harmful"]["mean"] - sweep_base["harmful"]["mean"]
            safe_rise = record["safe"]["mean"] - sweep_base["safe"]["mean"]
            print(f"| {key.removeprefix('sweep/')} | {cell(record, 'harmful')} | {rise:+.2f} | {cell(record, 'safe')} | {safe_rise:+.2f} |")
        print()

    print("| edit | variant | harmful margin | Δ harmful | XSTest safe margin | Δ safe | keyword ASR | XSTest safe refusal | target p | retention |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in ("intentional", "unintentional"):
        edited = records.get(f"report/{kind}/edited")
        for variant in ("edited", "hdr", "icv", "full", "full-published"):
            record = records.get(f"report/{kind}/{variant}")
            if record is None:
                continue
            rise = record["harmful"]["mean"] - edited["harmful"]["mean"] if edited else float("nan")
            safe_rise = record["safe"]["mean"] - edited["safe"]["mean"] if edited else float("nan")
            probability = record.get("target_probability")
            retention = probability / edited["target_probability"] if edited and probability is not None else None
            print(
                f"| {kind} | {variant} | {cell(record, 'harmful')} | {rise:+.2f} | {cell(record, 'safe')} | {safe_rise:+.2f} "
                f"| {record.get('keyword_asr', float('nan')):.2f} | {record.get('xstest_safe_refusal', float('nan')):.2f} "
                f"| {probability:.3g} | {retention:.2f} |" if probability is not None and retention is not None else
                f"| {kind} | {variant} | {cell(record, 'harmful')} | {rise:+.2f} | {cell(record, 'safe')} | {safe_rise:+.2f} | | | | |"
            )


if __name__ == "__main__":
    main()
