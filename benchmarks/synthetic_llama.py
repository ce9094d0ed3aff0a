"""Write a synthetic Llama checkpoint with random weights as sharded safetensors, one tensor at a time.

The default shapes are those of a 7B Llama (hidden 4096, MLP 11008, 32 layers,
vocabulary 32000, untied head; about 6.7 billion parameters, 13.5 GB in bf16).
Every tensor is drawn from a generator seeded by the tensor's name, so the
same base can be rebuilt and a ``harmful`` copy (base + noise everywhere) or a
``target`` copy (base + one rank-one change) differs from it exactly where
intended. Memory stays near one tensor.

    python benchmarks/synthetic_llama.py --out /tmp/llama7b-base --copy base
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from editsafe.io import atomic_path
from editsafe.models.writer import StreamingSafetensorsWriter

SHARD_BYTES = 5 * 1024**3


def tensor_shapes(layers: int, hidden: int, intermediate: int, vocabulary: int) -> list[tuple[str, tuple[int, ...]]]:
    """Return the Llama parameter names and shapes in checkpoint order."""
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocabulary, hidden))]
    for layer in range(layers):
        prefix = f"model.layers.{layer}"
        shapes += [
            (f"{prefix}.input_layernorm.weight", (hidden,)),
            (f"{prefix}.self_attn.q_proj.weight", (hidden, hidden)),
            (f"{prefix}.self_attn.k_proj.weight", (hidden, hidden)),
            (f"{prefix}.self_attn.v_proj.weight", (hidden, hidden)),
            (f"{prefix}.self_attn.o_proj.weight", (hidden, hidden)),
            (f"{prefix}.post_attention_layernorm.weight", (hidden,)),
            (f"{prefix}.mlp.gate_proj.weight", (intermediate, hidden)),
            (f"{prefix}.mlp.up_proj.weight", (intermediate, hidden)),
            (f"{prefix}.mlp.down_proj.weight", (hidden, intermediate)),
        ]
    shapes += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocabulary, hidden))]
    return shapes


def _generator(name: str, salt: str) -> torch.Generator:
    seed = int.from_bytes(hashlib.sha256(f"{salt}:{name}".encode()).digest()[:8], "little") >> 1
    return torch.Generator().manual_seed(seed)


def make_tensor(name: str, shape: tuple[int, ...], copy: str, edited_weight: str) -> torch.Tensor:
    """Return one bf16 tensor of the requested copy (base, harmful or target)."""
    if len(shape) == 1:
        values = torch.ones(shape)
    else:
        values = torch.randn(shape, generator=_generator(name, "base")) * 0.02
    if copy == "harmful":
        values += torch.randn(shape, generator=_generator(name, "harm")) * 0.002
    elif copy == "target" and name == edited_weight:
        generator = _generator(name, "edit")
        right = torch.randn(shape[0], generator=generator) * 0.05
        u = torch.randn(shape[1], generator=generator)
        values += torch.outer(right, u / u.norm())
    return values.to(torch.bfloat16)


def write_model(out: Path, copy: str, layers: int, hidden: int, intermediate: int, vocabulary: int, edited_layer: int) -> None:
    """Write config.json, the shards and the index of one copy."""
    out.mkdir(parents=True, exist_ok=True)
    shapes = tensor_shapes(layers, hidden, intermediate, vocabulary)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in shapes:
        nbytes = 2 * torch.Size(shape).numel()
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes

    edited_weight = f"model.layers.{edited_layer}.mlp.down_proj.weight"
    weight_map: dict[str, str] = {}
    for index, shard in enumerate(shards, start=1):
        file_name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        entries = [(name, torch.bfloat16, shape) for name, shape in shard]
        with atomic_path(out / file_name) as temporary:
            with StreamingSafetensorsWriter(temporary, entries, {"format": "pt"}) as writer:
                for name, shape in shard:
                    writer.write(name, make_tensor(name, shape, copy, edited_weight))
        weight_map.update({name: file_name for name, _ in shard})
        print(f"{out.name}: wrote {file_name}", flush=True)

    total = sum(2 * torch.Size(shape).numel() for _, shape in shapes)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": 32,
        "num_key_value_heads": 32, "vocab_size": vocabulary, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "rms_norm_eps": 1e-5, "max_position_embeddings": 4096,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--copy", choices=["base", "harmful", "target"], required=True)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--vocabulary", type=int, default=32000)
    parser.add_argument("--edited-layer", type=int, default=15, help="Layer whose down_proj the target copy changes.")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    write_model(arguments.out, arguments.copy, arguments.layers, arguments.hidden, arguments.intermediate,
                arguments.vocabulary, arguments.edited_layer)


if __name__ == "__main__":
    main()
