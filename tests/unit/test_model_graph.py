import json
from importlib import util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from tasks.embed import PACKAGED_TOKENIZER, PACKAGED_TOKENIZER_PATH, _packaged_model_file, resolve_model
from tasks.model_graph import FUSER_VERSION, fuse_bert_graph, fused_model_file
from tasks.settings import load_settings


def token_ids(*texts: str) -> np.ndarray:
    """The texts as the model reads them, padded to the longest with 0."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(util.find_spec(PACKAGED_TOKENIZER).origin).parent / PACKAGED_TOKENIZER_PATH))
    rows = [tokenizer.encode(text).ids for text in texts]
    return np.array([row + [0] * (max(map(len, rows)) - len(row)) for row in rows], dtype=np.int64)


def hidden_states(path):
    ids = token_ids("fn read_to_string(path: &Path) -> io::Result<String>", "retry a failed upload")
    mask = (ids != 0).astype(np.int64)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}
    return session.run(None, feed)[0], mask.astype(bool)


def test_the_packaged_graph_fuses_into_one_attention_per_layer_with_the_same_outputs(tmp_path):
    fused = fuse_bert_graph(onnx.load(str(_packaged_model_file())))
    ops = [node.op_type for node in fused.graph.node]
    assert (ops.count("Attention"), ops.count("BiasGelu"), ops.count("SkipLayerNormalization")) == (6, 6, 12)
    assert not {"IsNaN", "Where", "Softmax", "Erf", "Transpose"} & set(ops)
    # The word and position tables are looked up as int8 and scaled after: no float table to fold.
    constants = {init.name: init.data_type for init in fused.graph.initializer}
    tables = [constants.get(node.input[0]) for node in fused.graph.node if node.op_type == "Gather"]
    assert tables.count(TensorProto.INT8) == 2
    onnx.save(fused, str(tmp_path / "fused.onnx"))
    (before, real), (after, _) = hidden_states(_packaged_model_file()), hidden_states(tmp_path / "fused.onnx")
    assert np.abs(before[real] - after[real]).max() < 1e-4


def test_the_fused_file_is_made_once_and_the_package_is_never_written(tmp_path):
    source = _packaged_model_file()
    source_before = (source.stat().st_size, source.stat().st_mtime_ns)
    target = tmp_path / "model.onnx"
    target.symlink_to(source)  # what earlier versions left in the models folder
    assert fused_model_file(source, target)
    assert not target.is_symlink() and (source.stat().st_size, source.stat().st_mtime_ns) == source_before
    stamp = json.loads((tmp_path / "model.onnx.source.json").read_text())
    assert stamp == {"source": str(source), "size": source_before[0], "mtime_ns": source_before[1], "fuser": FUSER_VERSION}
    made = target.stat().st_mtime_ns
    assert fused_model_file(source, target) and target.stat().st_mtime_ns == made  # reused
    (tmp_path / "model.onnx.source.json").write_text(json.dumps({**stamp, "fuser": FUSER_VERSION - 1}))
    assert fused_model_file(source, target) and target.stat().st_mtime_ns != made  # an older rewrite is redone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.source.json"]  # no scratch left


def test_a_graph_it_does_not_know_is_left_as_it_is(tmp_path):
    x = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [None, None])
    y = helper.make_tensor_value_info("last_hidden_state", TensorProto.INT64, [None, None])
    source = tmp_path / "other.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["input_ids"], ["last_hidden_state"])], "g", [x], [y])), str(source))
    assert not fused_model_file(source, tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.onnx"]


def test_the_packaged_folder_stays_as_it_was_and_the_fused_one_sits_beside_it(tmp_path):
    spec = resolve_model(load_settings(data_dir=tmp_path))
    assert (spec.folder / "model.onnx").resolve() == _packaged_model_file().resolve()
    assert spec.file_size == _packaged_model_file().stat().st_size  # the index records the packaged model
    assert spec.fused_folder == spec.folder.with_name(spec.folder.name + "-fused")
    assert not (spec.fused_folder / "model.onnx").is_symlink()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (spec.fused_folder / name).read_bytes() == (spec.folder / name).read_bytes()


@pytest.mark.parametrize("lean", [True, False])
def test_embedders_load_the_fused_graph_and_give_the_packaged_model_s_vectors(tmp_path, lean):
    from tasks.embed import Embedder, ModelSpec

    texts = ["fn read_to_string(path: &Path) -> io::Result<String>", "retry a failed upload", "x"]
    spec = resolve_model(load_settings(data_dir=tmp_path))
    embedder = Embedder(spec, threads=1, lean=lean)
    assert embedder.folder == spec.fused_folder
    packaged = Embedder(ModelSpec(spec.name, "test", spec.folder, spec.file_size), threads=1, lean=lean)
    assert packaged.folder == spec.folder
    assert np.abs(embedder.embed(texts) - packaged.embed(texts)).max() < 1e-5
