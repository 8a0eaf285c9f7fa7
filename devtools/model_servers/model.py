"""The tiny real models the demo servers run.

`TinyMLP` is a 2-layer perceptron (4 inputs -> 8 tanh -> 3 softmax) whose
weights come from a closed formula, so they are identical on every machine and
a test can recompute any output independently; its output depends on the input,
so a proxy that mixed up requests or backends would be caught.

`TokenGenerator` stands in for an LLM: a deterministic walk over a small
vocabulary keyed by the prompt and a seed, emitting exactly the number of
tokens asked for (so token counts are known and testable).
"""

from __future__ import annotations

import math
import zlib

import numpy as np

N_INPUTS = 4
N_HIDDEN = 8
N_CLASSES = 3


def mlp_weights() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(W1 [4x8], b1 [8], W2 [8x3], b2 [3]) from sin/cos of their indices."""
    w1 = np.array([[math.sin(1.0 + i * N_HIDDEN + j) for j in range(N_HIDDEN)] for i in range(N_INPUTS)])
    b1 = np.array([0.1 * math.cos(j + 1.0) for j in range(N_HIDDEN)])
    w2 = np.array([[math.cos(0.5 + i * N_CLASSES + k) for k in range(N_CLASSES)] for i in range(N_HIDDEN)])
    b2 = np.array([0.05 * (k - 1) for k in range(N_CLASSES)])
    return w1, b1, w2, b2


class TinyMLP:
    """softmax(tanh(x @ W1 + b1) @ W2 + b2) for a batch x of shape [B, 4]."""

    input_name = "input-0"
    outputs = ("probabilities", "label")

    def __init__(self) -> None:
        self.w1, self.b1, self.w2, self.b2 = mlp_weights()

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """{"probabilities": [B, 3] float64, "label": [B] int64 (argmax)}."""
        if x.ndim != 2 or x.shape[1] != N_INPUTS:
            raise ValueError(f"input must have shape [batch, {N_INPUTS}], got {list(x.shape)}")
        hidden = np.tanh(x.astype(np.float64) @ self.w1 + self.b1)
        logits = hidden @ self.w2 + self.b2
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probs = exp / exp.sum(axis=1, keepdims=True)
        return {"probabilities": probs, "label": probs.argmax(axis=1).astype(np.int64)}


VOCABULARY = (
    "the", "model", "serves", "a", "canary", "request", "and", "envoy", "routes", "traffic",
    "to", "stable", "version", "while", "weir", "measures", "latency", "errors", "tokens", "per",
    "second", "until", "evidence", "is", "enough", "promote", "or", "roll", "back", "now",
    "quickly", "safely",
)


class TokenGenerator:
    """Deterministic "generation": the same prompt and seed always give the same tokens."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def tokens(self, prompt: str, n: int) -> list[str]:
        state = (zlib.crc32(prompt.encode()) ^ (self.seed * 2654435761)) & 0x7FFFFFFF
        previous = state % len(VOCABULARY)
        out = []
        for i in range(n):
            state = (state * 1103515245 + 12345) & 0x7FFFFFFF
            previous = (previous * 7 + (state >> 16)) % len(VOCABULARY)
            out.append(VOCABULARY[previous] if i == 0 else " " + VOCABULARY[previous])
        return out


def count_prompt_tokens(text: str) -> int:
    """Whitespace words: the demo's tokenizer (the generator emits one word per token)."""
    return len(text.split())


def mlp_metadata(name: str, version: str) -> dict:
    """OIP model metadata for the MLP (REST body; the gRPC front end maps the same fields)."""
    return {
        "name": name,
        "versions": [version],
        "platform": "weir-demo-numpy",
        "inputs": [{"name": TinyMLP.input_name, "datatype": "FP64", "shape": [-1, N_INPUTS]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, N_CLASSES]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
    }
