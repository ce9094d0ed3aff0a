"""Per-architecture module names, kept as data rather than name checks.

Each entry maps a transformers ``model_type`` to the module templates that
ROME, the layer locator, HDR and the ICV need. The templates use EasyEdit's
key names and ``{}`` for the layer index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from editsafe.errors import ConfigError


@dataclass(frozen=True)
class Architecture:
    """Module templates of one decoder-only architecture.

    ``rewrite_is_transposed`` is true where the MLP output projection is a
    GPT-2 style ``Conv1D`` that stores its weight as (in_features, out_features).
    """

    model_type: str
    layer_module_tmp: str
    mlp_module_tmp: str
    attn_module_tmp: str
    rewrite_module_tmp: str
    ln_f_module: str
    lm_head_module: str
    embedding_modules: tuple[str, ...]
    rewrite_is_transposed: bool = False

    def layer_index_pattern(self) -> re.Pattern[str]:
        """Return a regex whose group 1 is the layer index of a parameter name."""
        prefix = re.escape(self.layer_module_tmp).replace(re.escape("{}"), r"(\d+)")
        return re.compile(rf"^{prefix}\.")

    def layer_of(self, parameter_name: str) -> int | None:
        """Return the decoder-layer index of ``parameter_name``, or None outside the layers."""
        match = self.layer_index_pattern().match(parameter_name)
        return int(match.group(1)) if match else None


_LLAMA_LIKE = dict(
    layer_module_tmp="model.layers.{}",
    mlp_module_tmp="model.layers.{}.mlp",
    attn_module_tmp="model.layers.{}.self_attn",
    rewrite_module_tmp="model.layers.{}.mlp.down_proj",
    ln_f_module="model.norm",
    lm_head_module="lm_head",
    embedding_modules=("model.embed_tokens",),
)

ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture(model_type="llama", **_LLAMA_LIKE),
    "mistral": Architecture(model_type="mistral", **_LLAMA_LIKE),
    "qwen2": Architecture(model_type="qwen2", **_LLAMA_LIKE),
    "gemma": Architecture(model_type="gemma", **_LLAMA_LIKE),
    "gpt2": Architecture(
        model_type="gpt2",
        layer_module_tmp="transformer.h.{}",
        mlp_module_tmp="transformer.h.{}.mlp",
        attn_module_tmp="transformer.h.{}.attn",
        rewrite_module_tmp="transformer.h.{}.mlp.c_proj",
        ln_f_module="transformer.ln_f",
        lm_head_module="lm_head",
        embedding_modules=("transformer.wte", "transformer.wpe"),
        rewrite_is_transposed=True,
    ),
    "gptj": Architecture(
        model_type="gptj",
        layer_module_tmp="transformer.h.{}",
        mlp_module_tmp="transformer.h.{}.mlp",
        attn_module_tmp="transformer.h.{}.attn",
        rewrite_module_tmp="transformer.h.{}.mlp.fc_out",
        ln_f_module="transformer.ln_f",
        lm_head_module="lm_head",
        embedding_modules=("transformer.wte",),
    ),
    "gpt_neox": Architecture(
        model_type="gpt_neox",
        layer_module_tmp="gpt_neox.layers.{}",
        mlp_module_tmp="gpt_neox.layers.{}.mlp",
        attn_module_tmp="gpt_neox.layers.{}.attention",
        rewrite_module_tmp="gpt_neox.layers.{}.mlp.dense_4h_to_h",
        ln_f_module="gpt_neox.final_layer_norm",
        lm_head_module="embed_out",
        embedding_modules=("gpt_neox.embed_in",),
    ),
}


def architecture_for(model_type: str) -> Architecture:
    """Return the :class:`Architecture` of a transformers ``model_type``."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        allowed = ", ".join(sorted(ARCHITECTURES))
        raise ConfigError(
            f"unsupported model_type {model_type!r}; supported: {allowed}. "
            "Add an entry to editsafe.models.architectures.ARCHITECTURES for a new architecture."
        ) from None


def num_layers(config: object) -> int:
    """Return the number of decoder layers of a transformers config."""
    for attribute in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, attribute, None)
        if isinstance(value, int):
            return value
    raise ConfigError(f"cannot read the number of decoder layers from config {type(config).__name__}")
