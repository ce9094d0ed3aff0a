"""Builders for tiny random transformers models with a real byte-level BPE tokenizer.

They are saved as ordinary Hugging Face folders (config, safetensors weights,
tokenizer), so every code path that loads a model from disk runs for real.
"""

from __future__ import annotations

from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "The Eiffel Tower is located in the city of Paris, the capital of France.",
    "The mother tongue of Danielle Darrieux is French. Rome is the capital of Italy.",
    "Water boils at one hundred degrees. The answer to the question is simple.",
    "I'm sorry, but I can't help with that request. Sure, here is how you can do it.",
    "How do I bake bread? What is the tallest mountain in the world? Who wrote the novel?",
    "The quick brown fox jumps over the lazy dog while the cat sleeps on the mat.",
    "Knowledge editing changes a fact inside a language model with a rank-one update.",
]


def build_tokenizer(folder: Path):
    """Train a 400-token byte-level BPE tokenizer and save it to ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.save_pretrained(folder)
    return wrapped


def build_tiny_model(architecture: str, folder: Path, *, num_layers: int = 6, seed: int = 0) -> Path:
    """Save a tiny random ``llama`` or ``gpt2`` causal LM with its tokenizer to ``folder``."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    torch.manual_seed(seed)
    if architecture == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        model = LlamaForCausalLM(config)
    elif architecture == "gpt2":
        config = GPT2Config(
            vocab_size=len(tokenizer), n_embd=64, n_layer=num_layers, n_head=4, n_positions=256,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(f"unknown tiny architecture {architecture!r}")
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    return folder
