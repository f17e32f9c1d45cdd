"""The packaged MiniLM's graph rewritten with ONNX Runtime's fused transformer operators.

The packaged model was exported by PyTorch's dynamo exporter: each layer's attention is about
30 small operators (scaled dot-product attention spelled out, with a NaN guard after its
softmax) that ONNX Runtime's optimizer does not recognise, so it runs them one by one and keeps
their intermediate tensors. Rewritten once into `com.microsoft` Attention, BiasGelu and
SkipLayerNormalization, the same weights give the same vectors (within 2e-7); all of tokio's
texts embedded 1.23x faster with 102 MB less memory with graph optimizations on, 1.25x faster
with them off (tests/benchmarks/README.md, "The model's graph fused"). The int8 word and
position tables are looked up before they are scaled, so no session holds a float copy of them.
A rewrite is used only after it matched the original on a probe batch; a graph it does not
recognise is not rewritten.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import numpy as np

from tasks.merkle import write_atomic
from tasks.resources import return_freed_memory

FUSER_VERSION = 3  # bump when the rewrite changes: fused files of an older version are rebuilt
_PROBE_TOLERANCE = 1e-4  # largest difference in any hidden state of the probe batch


class UnfusableGraph(Exception):
    """The graph is not the BERT export this rewrite knows."""


def fused_model_file(source: Path, target: Path) -> bool:
    """Make `target` the fused graph of `source`, unless a fused file of the same source is there.
    False when the graph cannot be fused or the result differs: the caller then uses `source`."""
    stamp_path = target.with_name(target.name + ".source.json")
    stat = source.stat()
    stamp = {"source": str(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "fuser": FUSER_VERSION}
    if target.is_file() and not target.is_symlink() and _read_json(stamp_path) == stamp:
        return True
    _remove_stale_scratch(target)
    try:
        return _rewrite(source, target, stamp_path, stamp)
    finally:
        # The rewrite's graphs and probe sessions (about 250 MB at its peak) are freed by now; unless
        # the C heap hands them back, they stay under the whole run's memory (+124 MB measured).
        return_freed_memory()


def _rewrite(source: Path, target: Path, stamp_path: Path, stamp: dict) -> bool:
    """Fuse, check against `source` on the probe batch, then replace `target` and its stamp."""
    try:
        import onnx

        fused = fuse_bert_graph(onnx.load(str(source)))
    except Exception:  # noqa: BLE001 - a graph this rewrite does not know, or no onnx: used as it is
        return False
    scratch = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    try:
        onnx.save(fused, str(scratch))
        if not _same_outputs(source, scratch):
            return False
        os.replace(scratch, target)  # replaces a symlink to the package, never writes through it
        write_atomic(stamp_path, json.dumps(stamp))
    except OSError:  # a full or read-only disk: the packaged graph still works
        return False
    finally:
        scratch.unlink(missing_ok=True)
    return True


def fuse_bert_graph(model):
    """A copy of `model` with each encoder layer's attention as one Attention node (Q, K and V
    weights packed into one float constant), GELU with its bias as BiasGelu, each bias, residual
    and layer norm as SkipLayerNormalization, and int8 embedding tables scaled after the lookup.
    Raises UnfusableGraph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    bias_add = {node.input[1]: node for node in graph.node if node.op_type == "Add" and len(node.input) == 2}

    def int8_weight(name: str) -> tuple[np.ndarray, np.ndarray]:
        """An int8 weight stored as Cast(int8) * scale: its values and per-column scales."""
        scale_mul = producer[name]
        cast = producer[scale_mul.input[0]]
        if scale_mul.op_type != "Mul" or cast.op_type != "Cast" or cast.input[0] not in constants:
            raise UnfusableGraph(f"{name} is not an int8 weight with a scale")
        values = numpy_helper.to_array(constants[cast.input[0]])
        scale = numpy_helper.to_array(constants[scale_mul.input[1]]).astype(np.float32).reshape(-1)
        return values, np.broadcast_to(scale, (values.shape[1],))

    mask = "rci_attention_mask_int32"
    added_nodes = [helper.make_node("Cast", ["attention_mask"], [mask], to=TensorProto.INT32)]
    added_constants = []
    replaced: dict[str, list] = {}  # output name -> the nodes that now compute it
    layers = sorted(
        {name.split(".attention.self.query.bias")[0] for name in bias_add if name.endswith(".attention.self.query.bias")}
    )
    if not layers:
        raise UnfusableGraph("no encoder layer with an attention.self.query.bias")
    for layer in layers:
        projections = [bias_add[f"{layer}.attention.self.{part}.bias"] for part in ("query", "key", "value")]
        matmuls = [producer[add.input[0]] for add in projections]
        hidden = matmuls[0].input[0]
        if any(mm.op_type != "MatMul" or mm.input[0] != hidden for mm in matmuls):
            raise UnfusableGraph(f"{layer}: Q, K and V are not products of one input")
        weights = [int8_weight(mm.input[1]) for mm in matmuls]
        head_size = _head_size(projections[0], consumers, producer, constants)
        # Q, K and V packed as one float constant: ONNX Runtime packs a constant weight for its
        # kernels once; computed from int8 at run time, it was packed again at every call.
        packed, bias = f"rci_{layer}_qkv_weight", f"rci_{layer}_qkv_bias"
        added_constants += [
            numpy_helper.from_array(np.concatenate([w * s for w, s in weights], axis=1).astype(np.float32), packed),
            numpy_helper.from_array(
                np.concatenate([numpy_helper.to_array(constants[add.input[1]]) for add in projections]).astype(np.float32), bias
            ),
        ]
        context = producer[bias_add[f"{layer}.attention.output.dense.bias"].input[0]].input[0]
        heads = weights[0][0].shape[1] // head_size
        replaced[context] = [
            helper.make_node("Attention", [hidden, packed, bias, mask], [context], domain="com.microsoft", num_heads=heads)
        ]
    for node in graph.node:
        if node.op_type == "Erf":  # x * 0.5 * (1 + erf(x / sqrt(2))) after a biased product
            with_bias = producer[producer[node.input[0]].input[0]]
            product = consumers[consumers[consumers[node.output[0]][0].output[0]][0].output[0]][0]
            if with_bias.op_type != "Add" or with_bias.output[0] not in product.input or with_bias.input[1] not in constants:
                raise UnfusableGraph("GELU is not the erf form after a bias")
            replaced[product.output[0]] = [
                helper.make_node("BiasGelu", list(with_bias.input), [product.output[0]], domain="com.microsoft")
            ]
        elif node.op_type == "LayerNormalization" and producer.get(node.input[0], node).op_type == "Add":
            residual_add = producer[node.input[0]]
            summed, residual = residual_add.input
            with_bias = producer.get(summed)
            if with_bias is None or with_bias.op_type != "Add" or with_bias.input[1] not in constants:
                continue  # the embeddings' layer norm: no bias before it
            epsilon = next(a.f for a in node.attribute if a.name == "epsilon")
            replaced[node.output[0]] = [
                helper.make_node(
                    "SkipLayerNormalization",
                    [with_bias.input[0], residual, node.input[1], node.input[2], with_bias.input[1]],
                    [node.output[0]],
                    domain="com.microsoft",
                    epsilon=epsilon,
                )
            ]
        elif node.op_type == "Gather" and producer.get(node.input[0], node).op_type == "Mul":
            replaced[node.output[0]] = _int8_lookup(node, producer, constants)
    nodes = added_nodes + [new for node in graph.node for new in replaced.get(node.output[0] if node.output else None, [node])]
    nodes = _needed(nodes, [out.name for out in graph.output])
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    del fused.graph.node[:]
    fused.graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [init for init in graph.initializer if init.name in used] + added_constants
    del fused.graph.initializer[:]
    fused.graph.initializer.extend(kept)
    fused.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.checker.check_model(fused)
    return fused


def _int8_lookup(gather, producer, constants) -> list:
    """An embedding table stored as Cast(int8) * per-row scale, looked up before it is scaled: the
    same values, without a float copy of the whole table (47 MB for the words) in every session,
    or its expansion at every call when graph optimizations are off."""
    from onnx import TensorProto, helper

    scale_mul = producer[gather.input[0]]
    cast = producer.get(scale_mul.input[0])
    if cast is None or cast.op_type != "Cast" or cast.input[0] not in constants or scale_mul.input[1] not in constants:
        return [gather]  # not a table with a scale per row: left as it is
    if any(a.name == "axis" and a.i != 0 for a in gather.attribute) or constants[scale_mul.input[1]].dims[-1] != 1:
        return [gather]
    ids, out = gather.input[1], gather.output[0]
    return [
        helper.make_node("Gather", [cast.input[0], ids], [f"{out}_int8"], axis=0),
        helper.make_node("Cast", [f"{out}_int8"], [f"{out}_unscaled"], to=TensorProto.FLOAT),
        helper.make_node("Gather", [scale_mul.input[1], ids], [f"{out}_scale"], axis=0),
        helper.make_node("Mul", [f"{out}_unscaled", f"{out}_scale"], [out]),
    ]


def _head_size(query_bias_add, consumers, producer, constants) -> int:
    """The last dimension of the Reshape that splits the query into heads: [batch, tokens, -1, head_size]."""
    from onnx import numpy_helper

    reshape = consumers[query_bias_add.output[0]][0]
    shape = producer.get(reshape.input[1])
    last = shape.input[-1] if shape is not None and shape.op_type == "Concat" else None
    if reshape.op_type != "Reshape" or last not in constants:
        raise UnfusableGraph("the query is not reshaped into heads")
    return int(numpy_helper.to_array(constants[last]).reshape(-1)[0])


def _needed(nodes: list, outputs: list[str]) -> list:
    """The nodes the graph's outputs depend on, in their order."""
    made = {out: node for node in nodes for out in node.output}
    needed, pending = set(), list(outputs)
    while pending:
        node = made.get(pending.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            pending.extend(node.input)
    return [node for node in nodes if id(node) in needed]


def _same_outputs(original: Path, fused: Path) -> bool:
    """Both graphs on a padded probe batch: every hidden state of a real token within the tolerance."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    ids = np.array([[101, 7592, 2088, 1010, 2023, 2003, 1037, 3231, 102], [101, 3231, 102, 0, 0, 0, 0, 0, 0]], np.int64)
    mask = (ids != 0).astype(np.int64)
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    try:
        hidden = [
            onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feed)[0]
            for path in (original, fused)
        ]
    except Exception:  # noqa: BLE001 - any failure to load or run the rewrite means: use the original
        return False
    real = mask.astype(bool)
    return hidden[0].shape == hidden[1].shape and float(np.abs(hidden[0][real] - hidden[1][real]).max()) < _PROBE_TOLERANCE


def _remove_stale_scratch(target: Path, older_than_s: float = 600.0) -> None:
    """Scratch files a killed run left (a fresh one may be another process's, still writing)."""
    now = time.time()
    for scratch in target.parent.glob(f".{target.name}.*"):
        try:
            if now - scratch.stat().st_mtime > older_than_s:
                scratch.unlink()
        except OSError:
            pass


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
