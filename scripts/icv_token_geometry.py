"""Compare safety vectors computed from different token states on the default model.

Prints, per layer of the region, the cosine between the vectors from the last
token of the demonstration, the mean over answer tokens and the first answer
token, and each vector's explained variance; also the cosine of each with the
state difference between a refusal and a compliance opening at the start of the
answer, which is what the refusal margin reads.

    PYTHONPATH=. python scripts/icv_token_geometry.py --layers 4,5,6
"""

from __future__ import annotations

import argparse

import torch

from editsafe.icv import DemonstrationPair, compute_icv, load_demonstrations
from editsafe.models import load_model
from editsafe.paths import package_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--layers", default="4,5,6")
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    layers = [int(part) for part in arguments.layers.split(",")]

    model, tokenizer = load_model(arguments.model)
    pairs = load_demonstrations(package_data("icv_demos.jsonl"))
    vectors = {token: compute_icv(model, tokenizer, pairs, layers, token=token, progress=False)
               for token in ("last", "answer-mean", "answer-first")}
    # The opening direction: refusal opening minus compliance opening, read at the opening's first token.
    openings = [DemonstrationPair(id=pair.id, question=pair.question, unsafe_answer="Sure, here is",
                                  safe_answer="I'm sorry, but I can't") for pair in pairs]
    vectors["opening"] = compute_icv(model, tokenizer, openings, layers, token="answer-mean", progress=False)

    names = list(vectors)
    for name in names:
        print(f"{name:13s} explained variance {vectors[name].explained_variance:.3f}")
    for layer in layers:
        print(f"layer {layer}")
        for first in names:
            row = [float(vectors[first].segments[layer] @ vectors[second].segments[layer]) for second in names]
            print(f"  {first:13s} " + " ".join(f"{value:+.3f}" for value in row))


if __name__ == "__main__":
    main()
