"""Write a synthetic Llama checkpoint with random weights as sharded safetensors, one tensor at a time.

The default shapes are those of a 7B Llama (hidden 4096, MLP 11008, 32 layers,
vocabulary 32000, untied head; about 6.7 billion parameters, 13.5 GB in bf16).
Every tensor is cut from a fixed pool of random values at an offset seeded by
the tensor's name, so the same base can be rebuilt and a ``harmful`` copy
(base + noise everywhere) or a ``target`` copy (base + one rank-one change)
differs from it exactly where intended. Memory stays near one tensor.

    python benchmarks/synthetic_llama.py --out /tmp/llama7b-base --copy base
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
from pathlib import Path

import torch

from editsafe.io import atomic_path
from editsafe.models.writer import StreamingSafetensorsWriter

SHARD_BYTES = 5 * 1024**3
_POOL_SIZE = 1 << 26


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


@functools.cache
def _pool(kind: str, bound: float) -> torch.Tensor:
    """Return a fixed pool of 2^26 uniform bf16 values in ±bound, drawn once per process."""
    return torch.empty(_POOL_SIZE, dtype=torch.bfloat16).uniform_(-bound, bound, generator=_generator("pool", kind))


def _from_pool(name: str, shape: tuple[int, ...], kind: str, bound: float) -> torch.Tensor:
    """Return a tensor cut from the pool at an offset derived from the name (wrapping around)."""
    pool = _pool(kind, bound)
    count = torch.Size(shape).numel()
    offset = int(torch.randint(0, _POOL_SIZE, (1,), generator=_generator(name, kind)).item())
    pieces, remaining = [], count
    while remaining > 0:
        piece = pool[offset:offset + remaining]
        pieces.append(piece)
        remaining -= piece.numel()
        offset = 0
    return torch.cat(pieces).reshape(shape)


def make_tensor(name: str, shape: tuple[int, ...], copy: str, edited_weight: str) -> torch.Tensor:
    """Return one bf16 tensor of the requested copy (base, harmful or target).

    Weights are uniform in ±0.035 (standard deviation about 0.02), cut from a
    fixed pool of random values at a per-name offset. Drawing 6.7 billion
    fresh values would take far longer than writing them on a small CPU, and
    HDR's cost does not depend on the values. Norm weights are ones.
    """
    if len(shape) == 1:
        return torch.ones(shape, dtype=torch.bfloat16)
    values = _from_pool(name, shape, "base", 0.035)
    if copy == "harmful":
        values = values + _from_pool(name, shape, "harm", 0.0035)
    elif copy == "target" and name == edited_weight:
        generator = _generator(name, "edit")
        right = torch.randn(shape[0], generator=generator) * 0.05
        u = torch.randn(shape[1], generator=generator)
        values = (values.float() + torch.outer(right, u / u.norm())).to(torch.bfloat16)
    return values


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
