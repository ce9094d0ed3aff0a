"""ROME hyperparameters in EasyEdit's YAML schema.

The keys and their meaning are EasyEdit's, unchanged, so a ROME file written
for EasyEdit loads here and :func:`save_hparams` with ``extensions=False``
writes a file that EasyEdit loads. editsafe adds a few optional keys
(``EXTENSION_KEYS``); EasyEdit's loader rejects unknown keys, so a file that
sets them is for editsafe only.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import yaml

from editsafe.errors import ConfigError
from editsafe.models.architectures import num_layers

FactToken = Literal["subject_last", "subject_first", "last"]
FACT_TOKENS: tuple[str, ...] = get_args(FactToken)

# EasyEdit's ROME keys, in the order its files list them.
EASYEDIT_KEYS: tuple[str, ...] = (
    "alg_name", "model_name", "stats_dir", "device", "layers", "fact_token", "v_num_grad_steps", "v_lr",
    "v_loss_layer", "v_weight_decay", "clamp_norm_factor", "kl_factor", "mom2_adjustment",
    "context_template_length_params", "rewrite_module_tmp", "layer_module_tmp", "mlp_module_tmp",
    "attn_module_tmp", "ln_f_module", "lm_head_module", "mom2_dataset", "mom2_n_samples", "mom2_dtype",
    "max_length", "model_parallel", "fp16",
)
EXTENSION_KEYS: tuple[str, ...] = ("context_templates", "seed", "mom2_corpus", "kl_prompt")

# Keys that EasyEdit gives a default for; every other EasyEdit key is required.
_OPTIONAL_KEYS = frozenset({"model_name", "stats_dir", "device", "max_length", "model_parallel", "fp16"})

_MOM2_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
                "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class RomeHyperParams:
    """ROME settings for one model (EasyEdit's ROME keys plus editsafe's optional extensions).

    The extensions are all optional:

    - ``context_templates``: a fixed list of templates with one ``{}`` each,
      used instead of sampling them from the model.
    - ``seed``: the seed of that sampling.
    - ``mom2_corpus``: the local text corpus for the second-moment statistics
      (JSON Lines with a ``text`` field, or plain text).
    - ``kl_prompt``: the template of the KL prompt (default ``"{} is a"``).
    """

    alg_name: str
    layers: tuple[int, ...]
    fact_token: str
    v_num_grad_steps: int
    v_lr: float
    v_loss_layer: int
    v_weight_decay: float
    clamp_norm_factor: float
    kl_factor: float
    mom2_adjustment: bool
    context_template_length_params: tuple[tuple[int, int], ...]
    rewrite_module_tmp: str
    layer_module_tmp: str
    mlp_module_tmp: str
    attn_module_tmp: str
    ln_f_module: str
    lm_head_module: str
    mom2_dataset: str
    mom2_n_samples: int
    mom2_dtype: str
    model_name: str = ""
    stats_dir: str = "./data/stats"
    device: int | str = 0
    max_length: int = 40
    model_parallel: bool = False
    fp16: bool = False
    context_templates: tuple[str, ...] | None = None
    seed: int | None = None
    mom2_corpus: str | None = None
    kl_prompt: str | None = None

    def __post_init__(self) -> None:
        _check_values(self)

    @property
    def layer(self) -> int:
        """The single decoder layer that ROME rewrites."""
        return self.layers[0]

    @property
    def kl_template(self) -> str:
        """The KL prompt template, ``"{} is a"`` unless ``kl_prompt`` sets another."""
        return self.kl_prompt if self.kl_prompt is not None else "{} is a"

    @property
    def mom2_torch_dtype(self) -> torch.dtype:
        """``mom2_dtype`` as a torch dtype."""
        return _MOM2_DTYPES[self.mom2_dtype]

    def replace(self, **changes: Any) -> RomeHyperParams:
        """Return a copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes)

    def to_dict(self, *, extensions: bool = True) -> dict[str, Any]:
        """Return the YAML mapping: EasyEdit's keys, then the extensions that are set."""
        record: dict[str, Any] = {}
        for key in EASYEDIT_KEYS:
            record[key] = _plain(getattr(self, key))
        if extensions:
            for key in EXTENSION_KEYS:
                value = getattr(self, key)
                if value is not None:
                    record[key] = _plain(value)
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any], *, source: str = "hyperparameters") -> RomeHyperParams:
        """Build and validate hyperparameters from a mapping read from YAML."""
        if not isinstance(record, dict):
            raise ConfigError(f"{source}: expected a mapping of ROME hyperparameters, got {type(record).__name__}")
        allowed = set(EASYEDIT_KEYS) | set(EXTENSION_KEYS)
        unknown = sorted(set(record) - allowed)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(EASYEDIT_KEYS)}, "
                f"and the editsafe extensions {', '.join(EXTENSION_KEYS)}"
            )
        missing = [key for key in EASYEDIT_KEYS if key not in record and key not in _OPTIONAL_KEYS]
        if missing:
            raise ConfigError(f"{source}: missing required key(s) {', '.join(missing)}")
        values = {key: _coerce(key, value, source) for key, value in record.items()}
        try:
            return cls(**values)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None


def load_hparams(path: str | os.PathLike[str]) -> RomeHyperParams:
    """Read ROME hyperparameters from a YAML file (EasyEdit's ROME files load unchanged)."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"{source}: hyperparameter file not found")
    try:
        record = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: invalid YAML ({error})") from error
    return RomeHyperParams.from_dict(record, source=str(source))


def save_hparams(hparams: RomeHyperParams, path: str | os.PathLike[str], *, extensions: bool = True) -> None:
    """Write hyperparameters as YAML atomically; ``extensions=False`` writes a file EasyEdit can load."""
    from editsafe.io import write_text_atomic

    text = yaml.safe_dump(hparams.to_dict(extensions=extensions), sort_keys=False, default_flow_style=None)
    write_text_atomic(path, text)


def validate_for_model(hparams: RomeHyperParams, model: torch.nn.Module) -> None:
    """Check that the layers exist in ``model`` and that every module template resolves there."""
    layer_count = num_layers(model.config)
    for key, value in (("layers", hparams.layer), ("v_loss_layer", hparams.v_loss_layer)):
        if not 0 <= value < layer_count:
            raise ConfigError(
                f"{key}: layer {value} is outside this model, which has {layer_count} decoder layers "
                f"(valid: 0 to {layer_count - 1})"
            )

    module_names = {name for name, _ in model.named_modules()}
    templated = {
        "rewrite_module_tmp": hparams.layer,
        "layer_module_tmp": hparams.layer,
        "mlp_module_tmp": hparams.layer,
        "attn_module_tmp": hparams.layer,
    }
    for key, layer in templated.items():
        _require_module(module_names, key, getattr(hparams, key), getattr(hparams, key).format(layer))
    _require_module(module_names, "layer_module_tmp", hparams.layer_module_tmp,
                    hparams.layer_module_tmp.format(hparams.v_loss_layer))
    for key in ("ln_f_module", "lm_head_module"):
        _require_module(module_names, key, getattr(hparams, key), getattr(hparams, key))


def _require_module(module_names: set[str], key: str, template: str, name: str) -> None:
    if name in module_names:
        return
    examples = sorted(n for n in module_names if n.count(".") <= 4 and n)[:12]
    raise ConfigError(
        f"{key}: template {template!r} resolves to module {name!r}, which this model does not have; "
        f"existing modules include {', '.join(examples)}"
    )


def _check_values(hparams: RomeHyperParams) -> None:
    if hparams.alg_name != "ROME":
        raise ConfigError(f"alg_name is {hparams.alg_name!r}; this file must be a ROME file (alg_name: ROME)")
    if len(hparams.layers) != 1:
        raise ConfigError(
            f"layers is {list(hparams.layers)}; ROME rewrites exactly one layer, so give a list with one index"
        )
    if hparams.fact_token not in FACT_TOKENS:
        raise ConfigError(f"fact_token is {hparams.fact_token!r}; allowed: {', '.join(FACT_TOKENS)}")
    if hparams.v_num_grad_steps < 1:
        raise ConfigError(f"v_num_grad_steps is {hparams.v_num_grad_steps}; it must be at least 1")
    for key in ("v_lr", "clamp_norm_factor", "kl_factor", "v_weight_decay"):
        value = getattr(hparams, key)
        positive = key in ("v_lr", "clamp_norm_factor")
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            raise ConfigError(f"{key} is {value}; it must be a finite number {bound}")
    if hparams.mom2_dtype not in _MOM2_DTYPES:
        raise ConfigError(f"mom2_dtype is {hparams.mom2_dtype!r}; allowed: {', '.join(_MOM2_DTYPES)}")
    for key in ("rewrite_module_tmp", "layer_module_tmp", "mlp_module_tmp", "attn_module_tmp"):
        if getattr(hparams, key).count("{}") != 1:
            raise ConfigError(f"{key} is {getattr(hparams, key)!r}; it needs exactly one {{}} for the layer index")
    for length, count in hparams.context_template_length_params:
        if length < 1 or count < 0:
            raise ConfigError(
                f"context_template_length_params has the pair [{length}, {count}]; "
                "each pair is [token length >= 1, count >= 0]"
            )
    for template in hparams.context_templates or ():
        if template.count("{}") != 1:
            raise ConfigError(f"context_templates entry {template!r} needs exactly one {{}} for the prompt")
    if hparams.kl_prompt is not None and hparams.kl_prompt.count("{}") != 1:
        raise ConfigError(f"kl_prompt is {hparams.kl_prompt!r}; it needs exactly one {{}} for the subject")


# Expected type of each key: the coercion in _coerce turns YAML values into these.
_KINDS: dict[str, str] = {
    "alg_name": "str", "model_name": "str", "stats_dir": "str", "device": "device", "layers": "int_list",
    "fact_token": "str", "v_num_grad_steps": "int", "v_lr": "float", "v_loss_layer": "int",
    "v_weight_decay": "float", "clamp_norm_factor": "float", "kl_factor": "float", "mom2_adjustment": "bool",
    "context_template_length_params": "pairs", "rewrite_module_tmp": "str", "layer_module_tmp": "str",
    "mlp_module_tmp": "str", "attn_module_tmp": "str", "ln_f_module": "str", "lm_head_module": "str",
    "mom2_dataset": "str", "mom2_n_samples": "int", "mom2_dtype": "str", "max_length": "int",
    "model_parallel": "bool", "fp16": "bool", "context_templates": "str_list", "seed": "int",
    "mom2_corpus": "str", "kl_prompt": "str",
}
_KIND_NAMES = {
    "str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
    "int_list": "a list of integers", "str_list": "a list of strings",
    "pairs": "a list of [length, count] integer pairs", "device": "an integer or a string",
}


def _coerce(key: str, value: Any, source: str) -> Any:
    kind = _KINDS[key]
    if value is None and key in EXTENSION_KEYS:
        return None
    converted = _convert(kind, value)
    if converted is _INVALID:
        raise ConfigError(f"{source}: {key} is {value!r} ({type(value).__name__}); expected {_KIND_NAMES[kind]}")
    return converted


_INVALID = object()


def _convert(kind: str, value: Any) -> Any:
    if kind == "str":
        return value if isinstance(value, str) else _INVALID
    if kind == "bool":
        return value if isinstance(value, bool) else _INVALID
    if kind == "int":
        return value if _is_int(value) else _INVALID
    if kind == "device":
        return value if _is_int(value) or isinstance(value, str) else _INVALID
    if kind == "float":
        return _to_float(value)
    if kind == "int_list":
        if isinstance(value, list) and value and all(_is_int(item) for item in value):
            return tuple(value)
        return _INVALID
    if kind == "str_list":
        if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
            return tuple(value)
        return _INVALID
    if kind == "pairs":
        if isinstance(value, list) and all(
            isinstance(pair, list) and len(pair) == 2 and all(_is_int(item) for item in pair) for pair in value
        ):
            return tuple((pair[0], pair[1]) for pair in value)
        return _INVALID
    raise AssertionError(f"unhandled kind {kind}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _to_float(value: Any) -> Any:
    # PyYAML reads "1e-3" (no dot) as a string; EasyEdit converts such strings too.
    if isinstance(value, bool):
        return _INVALID
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return _INVALID
    return _INVALID


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value
