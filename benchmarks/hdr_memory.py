"""Seconds and peak RSS of streaming HDR and the locator against a naive in-memory HDR.

Every measurement runs in its own subprocess, which reports its own peak
resident set size (VmHWM), so the figures do not mix.

    # the default model: streaming vs naive, whole model and a 3-layer region
    python benchmarks/hdr_memory.py default --workdir /tmp/hdr-bench
    # any prepared models (for example the synthetic 7B-shaped Llama)
    python benchmarks/hdr_memory.py models --base B --harmful H --target T --workdir W [--naive]

The naive version reads every tensor of the target and the harm vector into
memory, concatenates the masked entries, finds the threshold with
``torch.kthvalue`` and writes with ``safetensors.torch.save_file``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

WORKER = Path(__file__).resolve()


def run_worker(arguments: list[str]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its JSON report."""
    environment = {**os.environ, "TQDM_DISABLE": "1"}
    completed = subprocess.run(
        [sys.executable, str(WORKER), "worker", *arguments], capture_output=True, text=True, env=environment, check=False
    )
    if completed.returncode != 0:
        raise SystemExit(f"worker {arguments} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def peak_rss_kib() -> int:
    """Return this process's peak resident set size (VmHWM).

    ``ru_maxrss`` is not used because it survives ``fork`` + ``exec`` and would
    start at the parent's size; VmHWM belongs to the new address space.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _report(started: float, **extra: Any) -> None:
    peak_kib = peak_rss_kib()
    print(json.dumps({"seconds": round(time.perf_counter() - started, 1), "peak_rss_mib": round(peak_kib / 1024), **extra}))


def worker(arguments: argparse.Namespace) -> None:
    """Run one measurement: streaming HDR, naive HDR, locate, or the bare interpreter."""
    started = time.perf_counter()
    region = {int(part) for part in arguments.region.split(",")} if arguments.region else None
    if arguments.task == "baseline":
        import editsafe.hdr  # noqa: F401 - the imports every task pays for

        _report(started)
    elif arguments.task == "streaming":
        from editsafe.hdr import remove_harm_direction

        record = remove_harm_direction(
            arguments.target, arguments.harm, out=arguments.out, region=region, k=arguments.k,
            include_embeddings=arguments.include_embeddings, base=arguments.base, base_hash_check=False,
        )
        _report(started, changed_entries=record["hdr"]["changed_entries"], threshold=record["hdr"]["threshold"])
    elif arguments.task == "naive":
        changed, threshold = naive_hdr(arguments, region)
        _report(started, changed_entries=changed, threshold=threshold)
    elif arguments.task == "locate":
        from editsafe.locate import locate_edit

        report = locate_edit(arguments.base, arguments.target)
        _report(started, edited_layers=report.edited_layers, ranks=[item.rank for item in report.changed_tensors])


def _load_folder(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def naive_hdr(arguments: argparse.Namespace, region: set[int] | None) -> tuple[int, float]:
    """HDR with whole models in memory (the comparison point, not a product code path)."""
    from safetensors.torch import save_file

    from editsafe.models.architectures import architecture_for

    target_folder = Path(arguments.target)
    target = _load_folder(target_folder)
    if arguments.base:
        harmful, base = _load_folder(Path(arguments.harm)), _load_folder(Path(arguments.base))
        harm = {name: harmful[name].float() - base[name].float() for name in harmful}
        del harmful, base
    else:
        harm = _load_folder(Path(arguments.harm))
    architecture = architecture_for(json.loads((target_folder / "config.json").read_text())["model_type"])

    def masked(name: str) -> bool:
        layer = architecture.layer_of(name)
        return (region is None or layer in region) if layer is not None else arguments.include_embeddings

    names = [name for name in target if masked(name) and name in harm]
    flat = torch.cat([harm[name].float().reshape(-1) for name in names]).abs()
    kept = math.ceil(arguments.k / 100 * flat.numel())
    threshold = torch.kthvalue(flat, flat.numel() - kept + 1).values.item()
    del flat
    changed = 0
    for name in names:
        trimmed = torch.where(harm[name].float().abs() >= threshold, harm[name].float(), 0.0)
        changed += int((trimmed != 0).sum())
        target[name] = (target[name].float() - 3.0 * trimmed).to(target[name].dtype)
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(target, str(out / "model.safetensors"), metadata={"format": "pt"})
    return changed, threshold


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def measure(label: str, arguments: list[str], out: Path | None) -> dict[str, Any]:
    result = run_worker(arguments)
    result["label"] = label
    print(json.dumps(result), flush=True)
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    return result


def bench_default(workdir: Path, tasks: list[str]) -> None:
    """Streaming vs naive HDR on the default model, whole model and a 3-layer region."""
    from safetensors.torch import load_file, save_file

    from editsafe.models.default import prepare_alias

    workdir.mkdir(parents=True, exist_ok=True)
    model = prepare_alias()
    print(f"default model: {folder_bytes(model) / 2**20:.0f} MiB of safetensors", flush=True)

    # A synthetic θ_H: the default model plus small noise on every tensor.
    harmful = workdir / "harmful"
    if not harmful.exists():
        shutil.copytree(model, harmful)
        tensors = load_file(str(model / "model.safetensors"))
        generator = torch.Generator().manual_seed(0)
        noisy = {name: value + 1e-3 * torch.randn(value.shape, generator=generator) for name, value in tensors.items()}
        save_file(noisy, str(harmful / "model.safetensors"), metadata={"format": "pt"})
        del tensors, noisy
    harm_folder = workdir / "harm"
    if not harm_folder.exists():
        from editsafe.hdr import compute_task_vector

        compute_task_vector(model, harmful, out=harm_folder)

    common = ["--target", str(model), "--k", "10"]
    out = workdir / "out"
    results = [measure("interpreter with torch and editsafe imported", ["--task", "baseline"], None)]
    for label, extra in [
        ("whole model + embeddings, τ_H streamed from θ_H − θ_base", ["--harm", str(harmful), "--base", str(model), "--include-embeddings"]),
        ("whole model + embeddings, stored τ_H", ["--harm", str(harm_folder), "--include-embeddings"]),
        ("region 14,15,16, stored τ_H", ["--harm", str(harm_folder), "--region", "14,15,16"]),
    ]:
        for task in tasks:
            results.append(measure(f"{task}: {label}", ["--task", task, *common, *extra, "--out", str(out)], out))
    print(json.dumps(results, indent=2))


def bench_models(arguments: argparse.Namespace) -> None:
    """Locate and streaming HDR on prepared folders (the synthetic 7B-shaped Llama)."""
    workdir = Path(arguments.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "out"
    size = folder_bytes(Path(arguments.target))
    print(f"target: {size / 2**30:.2f} GiB of safetensors", flush=True)
    results = [measure("interpreter with torch and editsafe imported", ["--task", "baseline"], None)]
    results.append(measure("locate target vs base", ["--task", "locate", "--base", arguments.base, "--target", arguments.target], None))
    common = ["--target", arguments.target, "--harm", arguments.harmful, "--base", arguments.base, "--k", "10", "--out", str(out)]
    results.append(measure(f"streaming HDR, region {arguments.region}", ["--task", "streaming", *common, "--region", arguments.region], out))
    results.append(measure("streaming HDR, whole model + embeddings", ["--task", "streaming", *common, "--include-embeddings"], out))
    print(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    default = commands.add_parser("default")
    default.add_argument("--workdir", type=Path, required=True)
    default.add_argument("--tasks", default="streaming,naive", help="Comma-separated: streaming, naive.")
    models = commands.add_parser("models")
    for option in ("--base", "--harmful", "--target", "--workdir"):
        models.add_argument(option, required=True)
    models.add_argument("--region", default="14,15,16", help="Comma-separated layers of the region HDR run.")
    one = commands.add_parser("worker")
    one.add_argument("--task", choices=["baseline", "streaming", "naive", "locate"], required=True)
    one.add_argument("--target")
    one.add_argument("--harm")
    one.add_argument("--base")
    one.add_argument("--out")
    one.add_argument("--region", default="")
    one.add_argument("--k", type=float, default=10.0)
    one.add_argument("--include-embeddings", action="store_true")
    arguments = parser.parse_args()
    if arguments.command == "default":
        bench_default(arguments.workdir, arguments.tasks.split(","))
    elif arguments.command == "models":
        bench_models(arguments)
    else:
        worker(arguments)


if __name__ == "__main__":
    main()
