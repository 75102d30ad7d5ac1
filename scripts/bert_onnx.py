#!/usr/bin/env python3
"""bert_onnx.py: a BERT sentence-embedding encoder (all-MiniLM-L6-v2 and its kin) written as an ONNX
graph with onnx.helper, from safetensors weights, plus a numpy forward pass of the same weights.

Used by transformer.py; runnable alone to write the two exports and check them:

    PY="$(scripts/setup-python.sh)"
    "$PY" scripts/bert_onnx.py MODEL_DIR OUT_DIR     # MODEL_DIR holds model.safetensors + config.json

The graph (opset 17, the first with LayerNormalization), as PyTorch/transformers exports BERT:
  inputs   input_ids, attention_mask, token_type_ids: int64 [batch, sequence]
  embed    Gather(word_embeddings, input_ids)
           + Gather(position_embeddings, Slice(position_ids[1, 512], 0 .. Shape(input_ids)[1]))
           + Gather(token_type_embeddings, token_type_ids), LayerNormalization
  mask     (1 - Cast<float>(Unsqueeze(attention_mask, [1, 2]))) * -10000  [batch, 1, 1, sequence]
           (the additive mask of transformers 4.8, which this model was saved with; later versions
           use float32's lowest value instead)
  layer    Q/K/V = x W + b; Reshape [0, 0, 12, 32]; Transpose to heads (K to [b, h, d, s]);
           MatMul(Q, K^T) / sqrt(32) + mask; Softmax(-1); MatMul(., V); Transpose, Reshape [0, 0, 384];
           x W_o + b_o; Add residual; LayerNormalization;
           x W_1 + b_1; GELU in the erf form transformers exports (Div by sqrt 2, Erf, Add 1, Mul x,
           Mul 0.5); x W_2 + b_2; Add residual; LayerNormalization
  pool     sentence_embedding = normalize(sum(h * mask) / max(sum(mask), 1e-9)): the mean over the
           attention mask, L2-normalised (x / max(|x|, 1e-12)), as sentence-transformers' pipeline
           for this model (modules.json: Transformer, Pooling (mean), Normalize) gives it
  outputs  sentence_embedding float [batch, 384], last_hidden_state float [batch, sequence, 384]

Two styles of the projections ("x W + b"):
  matmul   MatMul(x[b, s, k], W[k, n]) then Add(b): what torch.onnx exports for nn.Linear on 3-D input
  gemm     Reshape(x, [-1, k]), Gemm(x, W[n, k], b, transB=1), Reshape back to
           Concat(Shape(x)[0:2], [n]): the 2-D form other exporters (and hand-fused graphs) use
The BERT pooler (dense + tanh on [CLS]) is not part of the sentence-embedding model and is left out.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

STYLES = ("matmul", "gemm")
MASK_VALUE = -10000.0
OPSET = 17

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def load_safetensors(path: Path) -> Dict[str, np.ndarray]:
    """The safetensors format read with numpy alone: u64 header length, JSON header, raw data."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        dtype = np.dtype(_ST_DTYPES[meta["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize,
                                  offset=base + begin).reshape(meta["shape"]).copy()
    return out


def load_config(model_dir: Path) -> dict:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    need = {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "layer_norm_eps",
            "vocab_size", "max_position_embeddings", "type_vocab_size", "hidden_act"}
    missing = need - set(cfg)
    if missing:
        raise SystemExit(f"{model_dir}/config.json lacks {sorted(missing)}")
    if cfg["hidden_act"] != "gelu":
        raise SystemExit(f"hidden_act {cfg['hidden_act']!r}: only gelu (erf) is written")
    return cfg


# ==========================================================================
# The ONNX graph.
# ==========================================================================


class _Builder:
    def __init__(self):
        import onnx  # noqa: F401

        self.nodes = []
        self.inits = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def init(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, hint: str, array) -> str:
        return self.init(self.name(hint), np.asarray(array))

    def op(self, op_type: str, inputs: List[str], hint: str = None, n_out: int = 1, **attrs):
        from onnx import helper

        base = hint or op_type.lower()
        node_name = self.name(base)
        outs = [f"{node_name}_out{i}" if n_out > 1 else f"{node_name}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=node_name, **attrs))
        return outs if n_out > 1 else outs[0]


def build_model(weights: Dict[str, np.ndarray], cfg: dict, style: str):
    """The onnx.ModelProto of the encoder in `style` (see the module doc)."""
    import onnx
    from onnx import TensorProto, helper

    if style not in STYLES:
        raise ValueError(f"style {style!r}; known: {STYLES}")
    d = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    head_dim = d // heads
    eps = float(cfg["layer_norm_eps"])
    w = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in weights.items()}
    b = _Builder()

    def linear(x: str, prefix: str, hint: str) -> str:
        weight = w[f"{prefix}.weight"]  # [out, in] as PyTorch stores it
        bias = w[f"{prefix}.bias"]
        n = weight.shape[0]
        if style == "matmul":
            wt = b.init(f"{prefix}.weight_t", np.ascontiguousarray(weight.T))  # [in, out]
            y = b.op("MatMul", [x, wt], f"{hint}_matmul")
            return b.op("Add", [y, b.init(f"{prefix}.bias", bias)], f"{hint}_bias")
        flat = b.op("Reshape", [x, b.const("flat_shape", np.array([-1, weight.shape[1]], np.int64))], f"{hint}_flatten")
        y = b.op("Gemm", [flat, b.init(f"{prefix}.weight", weight), b.init(f"{prefix}.bias", bias)], f"{hint}_gemm",
                 transB=1)
        lead = b.op("Shape", [x], f"{hint}_lead_shape", start=0, end=2)
        shape = b.op("Concat", [lead, b.const("out_dim", np.array([n], np.int64))], f"{hint}_out_shape", axis=0)
        return b.op("Reshape", [y, shape], f"{hint}_unflatten")

    def layer_norm(x: str, prefix: str, hint: str) -> str:
        return b.op("LayerNormalization", [x, b.init(f"{prefix}.weight", w[f"{prefix}.weight"]),
                                           b.init(f"{prefix}.bias", w[f"{prefix}.bias"])], hint, axis=-1, epsilon=eps)

    # Embeddings.
    words = b.op("Gather", [b.init("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"]),
                            "input_ids"], "word_embeddings", axis=0)
    seq = b.op("Shape", ["input_ids"], "seq_len", start=1, end=2)
    pos_ids = b.op("Slice", [b.init("embeddings.position_ids",
                                    np.arange(cfg["max_position_embeddings"], dtype=np.int64)[None]),
                             b.const("zero", np.array([0], np.int64)), seq, b.const("axis1", np.array([1], np.int64))],
                   "position_ids")
    pos = b.op("Gather", [b.init("embeddings.position_embeddings.weight", w["embeddings.position_embeddings.weight"]),
                          pos_ids], "position_embeddings", axis=0)
    types = b.op("Gather", [b.init("embeddings.token_type_embeddings.weight",
                                   w["embeddings.token_type_embeddings.weight"]), "token_type_ids"],
                 "token_type_embeddings", axis=0)
    x = b.op("Add", [b.op("Add", [words, pos], "embed_add_pos"), types], "embed_add_type")
    x = layer_norm(x, "embeddings.LayerNorm", "embed_layernorm")

    # Additive attention mask [batch, 1, 1, sequence].
    m = b.op("Unsqueeze", ["attention_mask", b.const("axes12", np.array([1, 2], np.int64))], "mask_unsqueeze")
    m = b.op("Cast", [m], "mask_cast", to=TensorProto.FLOAT)
    m = b.op("Sub", [b.const("one", np.array(1.0, np.float32)), m], "mask_invert")
    mask_add = b.op("Mul", [m, b.const("mask_value", np.array(MASK_VALUE, np.float32))], "mask_scale")

    heads_shape = b.const("heads_shape", np.array([0, 0, heads, head_dim], np.int64))
    merge_shape = b.const("merge_shape", np.array([0, 0, d], np.int64))
    scale = b.const("sqrt_head_dim", np.array(math.sqrt(head_dim), np.float32))
    sqrt2 = b.const("sqrt2", np.array(math.sqrt(2.0), np.float32))
    one = b.const("one", np.array(1.0, np.float32))
    half = b.const("half", np.array(0.5, np.float32))
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        h = f"l{i}"
        q = linear(x, f"{p}.attention.self.query", f"{h}_query")
        k = linear(x, f"{p}.attention.self.key", f"{h}_key")
        v = linear(x, f"{p}.attention.self.value", f"{h}_value")
        q = b.op("Transpose", [b.op("Reshape", [q, heads_shape], f"{h}_q_heads")], f"{h}_q_t", perm=[0, 2, 1, 3])
        k = b.op("Transpose", [b.op("Reshape", [k, heads_shape], f"{h}_k_heads")], f"{h}_k_t", perm=[0, 2, 3, 1])
        v = b.op("Transpose", [b.op("Reshape", [v, heads_shape], f"{h}_v_heads")], f"{h}_v_t", perm=[0, 2, 1, 3])
        s = b.op("MatMul", [q, k], f"{h}_scores")
        s = b.op("Div", [s, scale], f"{h}_scores_scale")
        s = b.op("Add", [s, mask_add], f"{h}_scores_mask")
        s = b.op("Softmax", [s], f"{h}_softmax", axis=-1)
        c = b.op("MatMul", [s, v], f"{h}_context")
        c = b.op("Transpose", [c], f"{h}_context_t", perm=[0, 2, 1, 3])
        c = b.op("Reshape", [c, merge_shape], f"{h}_context_merge")
        a = linear(c, f"{p}.attention.output.dense", f"{h}_attn_out")
        x = layer_norm(b.op("Add", [a, x], f"{h}_attn_residual"), f"{p}.attention.output.LayerNorm", f"{h}_attn_ln")
        f = linear(x, f"{p}.intermediate.dense", f"{h}_ffn_in")
        g = b.op("Erf", [b.op("Div", [f, sqrt2], f"{h}_gelu_div")], f"{h}_gelu_erf")
        g = b.op("Mul", [f, b.op("Add", [g, one], f"{h}_gelu_add")], f"{h}_gelu_mul")
        g = b.op("Mul", [g, half], f"{h}_gelu_half")
        f = linear(g, f"{p}.output.dense", f"{h}_ffn_out")
        x = layer_norm(b.op("Add", [f, x], f"{h}_ffn_residual"), f"{p}.output.LayerNorm", f"{h}_ffn_ln")

    b.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="last_hidden_state"))
    # Mean pooling over the attention mask, then L2 normalisation.
    mf = b.op("Cast", [b.op("Unsqueeze", ["attention_mask", b.const("axes_last", np.array([-1], np.int64))],
                            "pool_mask_unsqueeze")], "pool_mask_cast", to=TensorProto.FLOAT)
    axis1 = b.const("pool_axes", np.array([1], np.int64))
    total = b.op("ReduceSum", [b.op("Mul", [x, mf], "pool_mask_mul"), axis1], "pool_sum", keepdims=0)
    count = b.op("ReduceSum", [mf, axis1], "pool_count", keepdims=0)
    count = b.op("Max", [count, b.const("count_min", np.array(1e-9, np.float32))], "pool_count_clamp")
    mean = b.op("Div", [total, count], "pool_mean")
    norm = b.op("ReduceL2", [mean], "embedding_norm", axes=[1], keepdims=1)
    norm = b.op("Max", [norm, b.const("norm_min", np.array(1e-12, np.float32))], "embedding_norm_clamp")
    b.nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"], name="sentence_embedding"))

    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
            for n in ("input_ids", "attention_mask", "token_type_ids")]
    outs = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", d]),
            helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", d])]
    graph = helper.make_graph(b.nodes, f"bert_{style}", ints, outs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="quantize-rs/scripts/bert_onnx.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


# ==========================================================================
# The numpy reference (float64).
# ==========================================================================


def _erf(x: np.ndarray) -> np.ndarray:
    from math import erf

    return np.vectorize(erf, otypes=[np.float64])(x)


def numpy_forward(weights: Dict[str, np.ndarray], cfg: dict, input_ids, attention_mask, token_type_ids):
    """(sentence_embedding, last_hidden_state) in float64, computed from the module doc's formulas."""
    w = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in weights.items()}
    d = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    hd = d // heads
    eps = float(cfg["layer_norm_eps"])
    bsz, seq = input_ids.shape

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[f"{p}.weight"] + w[f"{p}.bias"]

    def lin(x, p):
        return x @ w[f"{p}.weight"].T + w[f"{p}.bias"]

    x = (w["embeddings.word_embeddings.weight"][input_ids] + w["embeddings.position_embeddings.weight"][:seq][None]
         + w["embeddings.token_type_embeddings.weight"][token_type_ids])
    x = ln(x, "embeddings.LayerNorm")
    mask = (1.0 - attention_mask[:, None, None, :].astype(np.float64)) * MASK_VALUE
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"

        def split(t):
            return t.reshape(bsz, seq, heads, hd).transpose(0, 2, 1, 3)

        q, k, v = (split(lin(x, f"{p}.attention.self.{n}")) for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        c = (s @ v).transpose(0, 2, 1, 3).reshape(bsz, seq, d)
        x = ln(lin(c, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        f = lin(x, f"{p}.intermediate.dense")
        f = f * 0.5 * (1.0 + _erf(f / math.sqrt(2.0)))
        x = ln(lin(f, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    mf = attention_mask[:, :, None].astype(np.float64)
    mean = (x * mf).sum(1) / np.maximum(mf.sum(1), 1e-9)
    emb = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return emb, x


def main() -> int:
    import onnx

    if len(sys.argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    weights = load_safetensors(src / "model.safetensors")
    cfg = load_config(src)
    for style in STYLES:
        path = out / f"minilm.{style}.onnx"
        onnx.save(build_model(weights, cfg, style), str(path))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
