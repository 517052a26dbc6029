"""onnxruntime's transformer optimizer on tf2onnx's BERT graphs, and padding removal.

`onnxruntime.transformers.optimizer.optimize_model(model_type="bert")` fuses the subgraphs the
PyTorch exporter writes (LayerNorm, GELU, attention). tf2onnx writes the same maths in other
forms, so out of the box nothing fuses on our graphs (0 fused operators). `canonicalize`
rewrites those forms, exactly, into the exporter's:

- Keras' `Dense` on [B, T, H] is TensorFlow's `Tensordot`: Reshape to [B*T, H], MatMul, Reshape
  back through a Shape/Gather/Concat chain; ONNX's MatMul takes the [B, T, H] tensor itself;
- Keras' `LayerNormalization` comes out as `moments` with GlobalAveragePool (tf2onnx's form of
  a mean over the last axis) and a Neg/Mul/Add tail: one ONNX `LayerNormalization`;
- our erf GELU `(0.5 * x) * (1 + erf(x / sqrt 2))` is reordered to `x * ((1 + erf(x / sqrt 2)) * 0.5)`;
- the attention mask `(1 - mask[:, None, None, :]) * -10000` is a Cast, an Unsqueeze over two
  axes and a no-op Slice: two Unsqueezes and a Cast, so the attention node takes the int mask;
- the attention scores are scaled by a Mul with head_size**-0.5, the exporter divides by
  head_size**0.5 (with a Mul, the mask's Mul is not found beside it).

Then the optimizer fuses every LayerNorm, GELU (with its bias) and attention, and
`remove_padding` runs the token-wise layers on the real tokens only (`optimize_bert`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import helper, numpy_helper


@dataclasses.dataclass
class Optimized:
    """An optimizer run: the canonical rewrites made and the fused operators."""

    rewrites: dict[str, int]
    fused: dict[str, int]


def _constant(model, name: str) -> np.ndarray | None:
    return model.get_constant_value(name)


def _collapse_tensordot(model) -> int:
    """Reshape [-1, H] -> MatMul -> Reshape [B, T, O] becomes one MatMul on the [B, T, H] input."""
    count = 0
    consumers = model.input_name_to_nodes()
    for matmul in model.get_nodes_by_op_type("MatMul"):
        flatten = model.match_parent(matmul, "Reshape", 0)
        weight = _constant(model, matmul.input[1])
        users = consumers.get(matmul.output[0], [])
        if flatten is None or weight is None or weight.ndim != 2 or len(users) != 1 or users[0].op_type != "Reshape":
            continue
        restore = users[0]
        flat_shape = _constant(model, flatten.input[1])
        chain = model.match_parent_path(restore, ["Cast", "Concat", "Gather", "Cast", "Shape"], [1, 0, 0, 0, 0])
        if flat_shape is None or flat_shape.tolist() != [-1, weight.shape[0]] or chain is None:
            continue
        _, concat, gather, _, shape = chain
        kept = _constant(model, gather.input[1])
        width = _constant(model, concat.input[1]) if len(concat.input) == 2 else None
        if (shape.input[0] != flatten.input[0] or kept is None or kept.tolist() != [0, 1]
                or width is None or width.tolist() != [weight.shape[1]]):
            continue  # [0, 1] of the input's shape: a rank-3 input, so MatMul on it gives the same [B, T, O]
        matmul.input[0] = flatten.input[0]
        model.replace_input_of_all_nodes(restore.output[0], matmul.output[0])
        model.remove_node(restore)
        count += 1
    return count


def _layer_norms(model) -> int:
    """tf.nn.moments + batch_normalization over the last axis (GlobalAveragePool on rank 3) ->
    LayerNormalization(axis=-1)."""
    count = 0
    for out in model.get_nodes_by_op_type("Add"):
        shift = model.match_parent_path(out, ["Add", "Mul", "Neg", "GlobalAveragePool"], [1, 0, 0, 0])
        if shift is None:
            continue
        bias_add, shifted, _, mean = shift
        scale = model.match_parent_path(
            shifted, ["Mul", "Reciprocal", "Sqrt", "Add", "GlobalAveragePool", "Mul", "Sub"], [1, 0, 0, 0, 0, 0, 0])
        scaled = model.match_parent(out, "Mul", 0)
        if scale is None or scaled is None:
            continue
        factor, _, _, add_eps, _, square, centered = scale
        x = mean.input[0]
        gamma = _constant(model, factor.input[1])
        beta = _constant(model, bias_add.input[1])
        epsilon = _constant(model, add_eps.input[1])
        if (list(scaled.input) != [x, factor.output[0]] or list(centered.input) != [x, mean.output[0]]
                or square.input[0] != square.input[1] or square.input[0] != centered.output[0]
                or gamma is None or beta is None or epsilon is None or epsilon.size != 1
                or gamma.shape[:-1] != (1, 1) or beta.shape != gamma.shape):
            continue
        name = model.create_node_name("LayerNormalization")
        model.add_initializer(numpy_helper.from_array(gamma.reshape(-1).astype(np.float32), f"{name}_gamma"))
        model.add_initializer(numpy_helper.from_array(beta.reshape(-1).astype(np.float32), f"{name}_beta"))
        model.add_node(helper.make_node("LayerNormalization", [x, f"{name}_gamma", f"{name}_beta"], [out.output[0]],
                                        name=name, axis=-1, epsilon=float(epsilon)))
        model.remove_node(out)
        count += 1
    return count


def _gelus(model) -> int:
    """(0.5 * x) * (1 + erf(x * 0.7071)) -> x * ((1 + erf(x * 0.7071)) * 0.5): the TensorFlow
    pattern of onnxruntime's FusionGelu."""
    count = 0
    consumers = model.input_name_to_nodes()
    for erf in model.get_nodes_by_op_type("Erf"):
        inner = model.match_parent(erf, "Mul", 0)
        one_plus = consumers.get(erf.output[0], [])
        if inner is None or len(one_plus) != 1 or one_plus[0].op_type != "Add":
            continue
        product = consumers.get(one_plus[0].output[0], [])
        if len(product) != 1 or product[0].op_type != "Mul":
            continue
        outer = product[0]
        half = model.match_parent(outer, "Mul", 1 - list(outer.input).index(one_plus[0].output[0]))
        x = next((name for name in inner.input if _constant(model, name) is None), None)
        if half is None or x is None or x not in half.input or len(consumers.get(half.output[0], [])) != 1:
            continue
        half_value = next(name for name in half.input if name != x)
        if not np.allclose(_constant(model, half_value), 0.5):
            continue
        half.input[:] = [one_plus[0].output[0], half_value]
        outer.input[:] = [half.output[0], x]
        count += 1
    return count


def _attention_masks(model) -> int:
    """Sub(1, Slice(Unsqueeze(Cast(mask), [1, 2]))) with a no-op Slice ->
    Sub(1, Cast(Unsqueeze(Unsqueeze(mask, [1]), [1])))."""
    count = 0
    for sub in model.get_nodes_by_op_type("Sub"):
        path = model.match_parent_path(sub, ["Slice", "Unsqueeze", "Cast"], [1, 0, 0])
        one = _constant(model, sub.input[0])
        if path is None or one is None or one.size != 1 or float(one) != 1.0:
            continue
        slice_, unsqueeze, cast = path
        axes = _constant(model, unsqueeze.input[1])
        starts, ends = (_constant(model, name) for name in slice_.input[1:3])
        steps = _constant(model, slice_.input[4]) if len(slice_.input) > 4 else None
        if (axes is None or axes.tolist() != [1, 2] or starts is None or ends is None or starts.any()
                or ends.min() < np.iinfo(np.int32).max // 4 or (steps is not None and (steps != 1).any())):
            continue
        name = model.create_node_name("MaskUnsqueeze")
        model.add_initializer(numpy_helper.from_array(np.array([1], np.int64), f"{name}_axes"))
        model.add_nodes([
            helper.make_node("Unsqueeze", [cast.input[0], f"{name}_axes"], [f"{name}_1"], name=f"{name}_1"),
            helper.make_node("Unsqueeze", [f"{name}_1", f"{name}_axes"], [f"{name}_2"], name=f"{name}_2"),
            helper.make_node("Cast", [f"{name}_2"], [f"{name}_float"], name=f"{name}_cast",
                             to=onnx.TensorProto.FLOAT)])
        sub.input[1] = f"{name}_float"
        count += 1
    return count


def _attention_scales(model, head_size: int) -> int:
    """Softmax(MatMul(q, k) * head_size**-0.5 + mask) -> Softmax(MatMul(q, k) / head_size**0.5 + mask): the
    exporter's form (the fused Attention scales by head_size**-0.5 itself)."""
    count = 0
    for softmax in model.get_nodes_by_op_type("Softmax"):
        path = model.match_parent_path(softmax, ["Add", "Mul", "MatMul"], [0, 0, 0])
        scale = _constant(model, path[1].input[1]) if path else None
        if scale is None or scale.size != 1 or not np.isclose(float(scale), head_size ** -0.5, rtol=1e-6):
            continue
        name = model.create_node_name("AttentionScale")
        model.add_initializer(numpy_helper.from_array(np.array(head_size ** 0.5, np.float32), f"{name}_divisor"))
        model.add_node(helper.make_node("Div", [path[2].output[0], f"{name}_divisor"], [path[1].output[0]], name=name))
        model.remove_node(path[1])
        count += 1
    return count


def canonicalize(model, head_size: int) -> dict[str, int]:
    """Rewrites tf2onnx's forms in `model` (an onnxruntime.transformers OnnxModel) in place;
    returns how many of each it rewrote."""
    rewrites = {"tensordot": _collapse_tensordot(model), "layer_norm": _layer_norms(model), "gelu": _gelus(model),
                "attention_mask": _attention_masks(model), "attention_scale": _attention_scales(model, head_size)}
    model.prune_graph()
    model.topological_sort()
    return rewrites


def optimize_bert(onnx_path: str, out_path: str, num_heads: int, hidden_size: int) -> Optimized:
    """Writes `onnx_path` optimized to `out_path`: `canonicalize`, onnxruntime's BERT optimizer
    (MultiHeadAttention with the raw 2-D mask, so any mask means what it means in Keras, not
    only right padding), then `remove_padding`."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.onnx_model import OnnxModel
    from onnxruntime.transformers.optimizer import optimize_model

    model = OnnxModel(onnx.load(onnx_path))
    rewrites = canonicalize(model, hidden_size // num_heads)
    options = FusionOptions("bert")
    options.use_raw_attention_mask(True)
    options.use_multi_head_attention = True  # Q, K, V projections stay MatMuls: they run packed
    options.enable_skip_layer_norm = False  # onnxruntime's CPU SkipLayerNormalization is slower than Add + LayerNorm
    optimizer = optimize_model(model.model, model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                               optimization_options=options, opt_level=0)
    fused = {name: count for name, count in optimizer.get_fused_operator_statistics().items() if count}
    rewrites["packed_nodes"] = remove_padding(optimizer)
    optimizer.save_model_to_file(out_path)
    return Optimized(rewrites, fused)


TOKENWISE = ("MatMul", "LayerNormalization", "BiasGelu", "Gelu", "FastGelu", "Add")


def _is_tokenwise(model, node, packed: dict[str, str]) -> bool:
    """Whether `node` computes each token's row from that row alone (so it may run on the real
    tokens only): the ops of the fused encoder between two attentions."""
    constants = [_constant(model, name) for name in node.input]
    if node.op_type not in TOKENWISE or not any(name in packed for name in node.input):
        return False
    if node.op_type == "MatMul":
        return constants[0] is None and constants[1] is not None and constants[1].ndim == 2
    if node.op_type == "Add":  # a residual sum of two token rows, or a bias
        return all(c is None or c.ndim == 1 for c in constants)
    if node.op_type == "LayerNormalization" and model.get_node_attribute(node, "axis") not in (None, -1):
        return False
    return len(node.output) == 1 or not any(node.output[1:])


def remove_padding(model) -> int:
    """Runs everything between the embeddings and the pooling on the real tokens only (the rows
    of the tokens whose attention mask is non-zero), as onnxruntime's "packing mode" does on
    CUDA: the Q/K/V and output projections, feed-forward blocks and LayerNorms skip the padding.
    Each MultiHeadAttention node gets its Q, K, V back as [B, T, H] with a copy of a real row at
    every padded position: it masks those keys, and its outputs there are dropped; the pooling
    after the last layer gets a copy too (mean pooling weighs it by 0, [CLS] pooling reads
    position 0, a real token), so no result depends on them. Returns the number of nodes that
    now run packed (0: no MultiHeadAttention node with a key padding mask, model unchanged)."""
    attentions = model.get_nodes_by_op_type("MultiHeadAttention")
    query = model.match_parent(attentions[0], "MatMul", 0) if attentions else None
    if query is None or len(attentions[0].input) < 5 or not attentions[0].input[4]:
        return 0
    model.topological_sort()
    mask, root = attentions[0].input[4], query.input[0]
    name = model.create_node_name("RemovePadding")
    for suffix, value in (("minus_one", [-1]), ("zero", 0), ("one", 1)):
        model.add_initializer(numpy_helper.from_array(np.array(value, np.int64), f"{name}_{suffix}"))
    new_nodes = [  # index: the real tokens' flat positions; row: each flat position's packed row
        helper.make_node("Reshape", [mask, f"{name}_minus_one"], [f"{name}_flat_mask"]),
        helper.make_node("NonZero", [f"{name}_flat_mask"], [f"{name}_nonzero"]),
        helper.make_node("Reshape", [f"{name}_nonzero", f"{name}_minus_one"], [f"{name}_index"]),
        helper.make_node("Cast", [f"{name}_flat_mask"], [f"{name}_is_real"], to=onnx.TensorProto.BOOL),
        helper.make_node("Cast", [f"{name}_is_real"], [f"{name}_ones"], to=onnx.TensorProto.INT64),
        helper.make_node("CumSum", [f"{name}_ones", f"{name}_zero"], [f"{name}_count"]),
        helper.make_node("Sub", [f"{name}_count", f"{name}_one"], [f"{name}_last"]),
        helper.make_node("Max", [f"{name}_last", f"{name}_zero"], [f"{name}_row"]),
        helper.make_node("Shape", [mask], [f"{name}_mask_shape"]),
        helper.make_node("Reshape", [f"{name}_row", f"{name}_mask_shape"], [f"{name}_rows"]),
    ]

    def pack(tensor: str) -> str:
        out = f"{tensor}_packed"
        new_nodes.extend([helper.make_node("Flatten", [tensor], [f"{out}_flat"], axis=2),
                          helper.make_node("Gather", [f"{out}_flat", f"{name}_index"], [out], axis=0)])
        return out

    def unpack(tensor: str) -> str:
        new_nodes.append(helper.make_node("Gather", [tensor, f"{name}_rows"], [f"{tensor}_padded"], axis=0))
        return f"{tensor}_padded"

    packed = {root: pack(root)}  # padded name -> packed name
    padded: dict[str, str] = {}  # packed name -> padded name
    count = 0
    for node in list(model.nodes()):
        if _is_tokenwise(model, node, packed):
            for i, tensor in enumerate(node.input):
                if _constant(model, tensor) is None:
                    if tensor not in packed:
                        packed[tensor] = pack(tensor)
                    node.input[i] = packed[tensor]
            for out in node.output:
                packed[out] = out
            count += 1
        else:
            for i, tensor in enumerate(node.input):
                if packed.get(tensor) == tensor:  # a packed output read by a padded op
                    if tensor not in padded:
                        padded[tensor] = unpack(tensor)
                    node.input[i] = padded[tensor]
            if node.op_type == "MultiHeadAttention":  # its output projection runs packed
                packed[node.output[0]] = pack(node.output[0])
    model.add_nodes(new_nodes)
    model.topological_sort()
    return count


def ffn_output_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the feed-forward output projections (MatMuls fed by a GELU node), in graph order:
    their inputs have GELU's outlier-heavy ranges, the layers INT8 hurts most."""
    producers = {out: node for node in model.graph.node for out in node.output}
    return [node.name for node in model.graph.node if node.op_type == "MatMul" and node.input[0] in producers
            and producers[node.input[0]].op_type in ("Gelu", "BiasGelu", "FastGelu")]
