"""The merged model's vocabulary: which rows of the embedding and ``lm_head`` the merge writes.

Row i of ``model.embed_tokens.weight`` and ``lm_head.weight`` must mean the same token in every
model for a row-by-row merge to make sense, so the regular vocabularies (token -> id) must equal the
base's on the base's rows: a token that differs there is an error. Added/special tokens may differ
(R1-Distill-Qwen renames Qwen's): a warning, recorded as ``vocabulary_check`` in the manifest.

A fine-tuned model may *extend* the base's vocabulary: rows past the base's last one, with tokens of
their own (CodeLlama-7b: Llama-2's 32,000 rows plus 16 infilling tokens, 32,016 rows).
``model_pair.vocabulary`` says what the merge writes then:

- ``base`` (default): the base's rows are merged and the base's vocabulary is written. The extra rows
  and their tokens are dropped, with a warning naming them.
- ``union``: every row is kept, as mergekit's ``tokenizer_source: union`` keeps every token. A row
  that some models lack is given to them as mergekit does (the row of the one model that has it,
  else the mean of the rows of those that have it), so the models lacking it add no task vector and
  the merged row comes from the models that have it (with one such model: its row, unchanged). The
  extensions must agree id by id: where two models have a row past the base's, their tokenizers
  name the same token there, or the merge is refused.

Which tokenizer the output gets: with ``base``, the one ``model_pair.tokenizer_from`` names, which
must then not hold tokens past the base's rows (a fine-tuned tokenizer that extends the vocabulary
is refused: choose ``union`` or ``tokenizer_from=base``). With ``union`` and an extension, the
tokenizer files of the model with the most rows (which name every token of the union); the
``config.json`` and generation config still come from ``tokenizer_from``, with ``vocab_size`` set to
the rows written. Either way the manifest's ``vocabulary`` entry records the mode, the rows and the
tokens each extension brought, and whether they were kept.
"""

from __future__ import annotations

import filecmp
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from acm_exp.errors import ConfigError
from acm_exp.merge.checkpoint import EMBEDDING_NAME, LM_HEAD_NAME, Checkpoint
from acm_exp.merge.publish import TOKENIZER_FILES
from acm_exp.models import load_vocabulary, vocabulary_differences

log = logging.getLogger(__name__)

VOCABULARY_MODES = ("base", "union")
VOCABULARY_TENSORS = (EMBEDDING_NAME, LM_HEAD_NAME)
# Where added/special-token differences are recorded (merge_manifest.json's vocabulary_check).
RECORDED_IN = "merge_manifest.json"
# Tokens a warning names before it says "...".
SHOWN_TOKENS = 8


@dataclass(frozen=True)
class Extension:
    """The rows a fine-tuned model has past the base's, and the tokens its tokenizer names there."""

    role: str
    path: Path
    rows: int
    # Token id -> the token its tokenizer names there, for every extra row.
    tokens: dict[int, str]

    def describe(self, base_rows: int) -> str:
        shown = ", ".join(repr(self.tokens[i]) for i in sorted(self.tokens)[:SHOWN_TOKENS])
        return f"ids {base_rows}..{self.rows - 1}: {shown}{', ...' if len(self.tokens) > SHOWN_TOKENS else ''}"


@dataclass(frozen=True)
class VocabularyPlan:
    """What the merge does with the vocabulary tensors; no weight has been read."""

    mode: str = "base"
    base_rows: int | None = None
    # The rows written of every vocabulary tensor (the base's, or the union's).
    output_rows: int | None = None
    extensions: tuple[Extension, ...] = ()
    # Under ``union`` with an extension: the model directory whose tokenizer names every token.
    tokenizer_dir: Path | None = None
    # Vocabulary tensor -> rows of every model (base first), for the tensors whose row counts differ.
    model_rows: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def extended(self) -> bool:
        return bool(self.extensions)

    def manifest_entry(self) -> dict:
        return {
            "mode": self.mode,
            "base_rows": self.base_rows,
            "rows": self.output_rows,
            "extensions": {
                extension.role: {
                    "path": str(extension.path),
                    "rows": extension.rows,
                    "tokens": [[token_id, token] for token_id, token in sorted(extension.tokens.items())],
                    "kept": self.mode == "union",
                }
                for extension in self.extensions
            },
            **({"tokenizer_from": str(self.tokenizer_dir)} if self.tokenizer_dir else {}),
        }


def vocabulary_rows(checkpoint: Checkpoint) -> int | None:
    """The rows of a model's vocabulary tensors (its embedding's), or None without an embedding."""
    return checkpoint.info(EMBEDDING_NAME).shape[0] if checkpoint.has(EMBEDDING_NAME) else None


def check_vocabulary_shapes(base: Checkpoint, checkpoint: Checkpoint, name: str) -> None:
    """Refuse a vocabulary tensor whose shape differs from the base's other than by extra rows."""
    base_shape, other_shape = base.info(name).shape, checkpoint.info(name).shape
    rows = vocabulary_rows(checkpoint)
    if (
        len(base_shape) != len(other_shape)
        or base_shape[1:] != other_shape[1:]
        or other_shape[0] < base_shape[0]
        or other_shape[0] != rows
    ):
        raise ConfigError(
            f"vocabulary size differs: tensor {name} has shape {base_shape} in the base {base.path} but "
            f"{other_shape} in {checkpoint.path}; merging needs one shared vocabulary"
        )


def plan_vocabulary(
    base: Checkpoint, finetuned: Sequence[Checkpoint], mode: str, names: Sequence[str]
) -> tuple[VocabularyPlan, dict]:
    """The vocabulary plan and the tokenizer comparison's record (``vocabulary_check``) of these models.

    Raises a one-line ConfigError when a regular token differs on the base's rows, or when, under
    ``union``, two extensions name different tokens at one id.
    """
    if mode not in VOCABULARY_MODES:
        raise ConfigError(f"model_pair.vocabulary={mode!r}; expected one of {VOCABULARY_MODES}")
    base_rows = vocabulary_rows(base)
    all_rows = [base_rows, *(vocabulary_rows(checkpoint) for checkpoint in finetuned)]
    extended = [
        (f"finetuned[{i}]", checkpoint, rows)
        for i, (checkpoint, rows) in enumerate(zip(finetuned, all_rows[1:], strict=True))
        if base_rows is not None and rows is not None and rows > base_rows
    ]
    record, tokens = compare_vocabularies(
        base.path, [checkpoint.path for checkpoint in finetuned], base_rows=base_rows, extended_rows=all_rows[1:]
    )
    extensions = tuple(
        Extension(role, checkpoint.path, rows, _extension_tokens(base, checkpoint, tokens.get(role)))
        for role, checkpoint, rows in extended
    )
    if not extensions:
        return VocabularyPlan(mode, base_rows, base_rows), record
    output_rows = max(rows for _, _, rows in extended) if mode == "union" else base_rows
    model_rows = {
        name: tuple(checkpoint.info(name).shape[0] for checkpoint in (base, *finetuned))
        for name in names
        if name in VOCABULARY_TENSORS
    }
    tokenizer_dir = None
    if mode == "union":
        _check_extensions_agree(extensions, base_rows)
        tokenizer_dir = next(e.path for e in extensions if e.rows == output_rows)
    else:
        for extension in extensions:
            log.warning(
                "%s %s extends the base's %d-row vocabulary (%s); model_pair.vocabulary=base merges the base's "
                "rows and drops these tokens (model_pair.vocabulary=union keeps them)",
                extension.role,
                extension.path,
                base_rows,
                extension.describe(base_rows),
            )
    return VocabularyPlan(mode, base_rows, output_rows, extensions, tokenizer_dir, model_rows), record


def _extension_tokens(base: Checkpoint, checkpoint: Checkpoint, tokens: dict[int, str | None] | None) -> dict[int, str]:
    """The tokens of a model's extra rows; refused unless its tokenizer names one for every extra row
    (rows that no token uses, or that cannot be checked, are not an extension of the vocabulary)."""
    unnamed = None if tokens is None else [token_id for token_id, token in sorted(tokens.items()) if token is None]
    if tokens is None or unnamed:
        reason = (
            "its tokenizer was not compared with the base's"
            if tokens is None
            else f"its tokenizer names no token for id(s) {unnamed[:5]}"
        )
        raise ConfigError(
            f"vocabulary size differs: tensor {EMBEDDING_NAME} has shape {base.info(EMBEDDING_NAME).shape} in the "
            f"base {base.path} but {checkpoint.info(EMBEDDING_NAME).shape} in {checkpoint.path}; merging needs one "
            f"shared vocabulary (rows past the base's are an extension only when each is a token: {reason})"
        )
    return {token_id: token for token_id, token in tokens.items() if token is not None}


def _check_extensions_agree(extensions: Sequence[Extension], base_rows: int) -> None:
    named: dict[int, tuple[str, Extension]] = {}
    for extension in extensions:
        for token_id, token in sorted(extension.tokens.items()):
            first = named.setdefault(token_id, (token, extension))
            if first[0] != token:
                raise ConfigError(
                    f"model_pair.vocabulary=union: the extensions of the base's vocabulary differ at id {token_id}: "
                    f"{first[0]!r} in {first[1].path} but {token!r} in {extension.path}; a union needs each id to "
                    "name one token (or use model_pair.vocabulary=base)"
                )


def check_vocabularies(base: Path, finetuned: Sequence[Path]) -> dict:
    """Refuse models whose regular vocabularies differ from the base's; the record of differing added
    tokens and of models not compared (``vocabulary_check`` in the manifest)."""
    return compare_vocabularies(base, finetuned)[0]


def compare_vocabularies(
    base: Path,
    finetuned: Sequence[Path],
    *,
    base_rows: int | None = None,
    extended_rows: Sequence[int | None] | None = None,
) -> tuple[dict, dict[str, dict[int, str | None]]]:
    """Refuse models whose regular vocabularies differ from the base's; report differing added tokens.

    Equal embedding shapes do not make equal vocabularies: row i must mean the same token in every
    model for a row-by-row merge to make sense. Added/special tokens may differ (R1-Distill-Qwen
    renames Qwen's), and which of them the merged model keeps follows ``tokenizer_from``. Ids at and
    past ``base_rows`` of a model with more rows (``extended_rows``) are its extension, not a
    difference: their tokens are returned by role.
    """
    record: dict = {"added_token_differences": {}, "not_compared": []}
    extension_tokens: dict[str, dict[int, str | None]] = {}
    rows_of = list(extended_rows or [None] * len(finetuned))
    # Byte-identical tokenizer files name the same tokens: parsing a 150k-token tokenizer costs ~0.3 s.
    to_compare = [
        (index, path)
        for index, path in enumerate(finetuned)
        if (base_rows is not None and (rows_of[index] or 0) > base_rows) or not _same_tokenizer_files(base, path)
    ]
    if not to_compare:
        return record, extension_tokens
    base_vocabulary = _readable_vocabulary(base)
    if base_vocabulary is None:
        log.warning("the vocabularies are not compared: the base %s has no readable tokenizer", base)
        record["not_compared"] = [str(path) for path in finetuned]
        return record, extension_tokens
    for index, path in to_compare:
        role = f"finetuned[{index}]"
        vocabulary = _readable_vocabulary(path)
        if vocabulary is None:
            log.warning("the vocabulary of %s is not compared with the base's: it has no readable tokenizer", path)
            record["not_compared"].append(str(path))
            continue
        regular, added = vocabulary_differences(base_vocabulary, vocabulary)
        rows = rows_of[index]
        if base_rows is not None and rows is not None and rows > base_rows:
            extension = range(base_rows, rows)
            regular = [d for d in regular if not (d.token_id in extension and d.base is None)]
            added = [d for d in added if not (d.token_id in extension and d.base is None)]
            extension_tokens[role] = {token_id: vocabulary.token(token_id) for token_id in extension}
        if regular:
            shown = "; ".join(difference.describe() for difference in regular[:3])
            raise ConfigError(
                f"the tokenizer vocabularies differ: {len(regular)} regular token id(s) map to different tokens in "
                f"the base {base} and in {path} (base vs {role}: {shown}); merging needs one shared vocabulary"
            )
        if added:
            shown = "; ".join(difference.describe() for difference in added[:5])
            log.warning(
                "%d added/special token(s) differ between the base %s and %s (base vs %s: %s%s); expected for "
                "pairs such as Qwen2.5-Math and R1-Distill-Qwen, recorded in %s",
                len(added),
                base,
                path,
                role,
                shown,
                "; ..." if len(added) > 5 else "",
                RECORDED_IN,
            )
            record["added_token_differences"][role] = [
                {"id": d.token_id, "base": d.base, "finetuned": d.other} for d in added
            ]
    return record, extension_tokens


def _same_tokenizer_files(first: Path, second: Path) -> bool:
    names = [name for name in TOKENIZER_FILES if (first / name).is_file()]
    return (
        bool(names)
        and names == [name for name in TOKENIZER_FILES if (second / name).is_file()]
        and all(filecmp.cmp(first / name, second / name, shallow=False) for name in names)
    )


def _readable_vocabulary(directory: Path):
    # A tokenizer that cannot be read cannot be compared; whether the merged model needs it is
    # decided by check_tokenizer_source.
    try:
        return load_vocabulary(directory)
    except ConfigError as error:
        log.warning("%s", error)
        return None


def stored_rows(model_rows: int, start: int, stop: int, output_rows: int) -> tuple[int, int]:
    """The stored rows of one model to read for output rows [start, stop) of a vocabulary tensor.

    Rows past the output's (a dropped extension) are read with the tensor's last block, so every
    stored byte still enters the model's content hash; rows the model lacks are not read.
    """
    stop = model_rows if stop >= output_rows else min(stop, model_rows)
    return min(start, stop), stop


def align_rows(pieces: list[torch.Tensor], length: int) -> list[torch.Tensor]:
    """Every model's rows of a block of ``length`` output rows, as mergekit's union aligns them.

    ``pieces[m]`` holds model m's stored rows from the block's first row on: longer than ``length``
    when its extension is dropped (cut), shorter when it lacks rows (completed: a row that only one
    model has is that model's, a row that several have is their mean, in each model's own dtype).
    """
    bounds = sorted({min(piece.shape[0], length) for piece in pieces} | {0, length})
    aligned = []
    for piece in pieces:
        parts = [piece[:length]]
        for low, high in zip(bounds, bounds[1:], strict=False):
            if high <= piece.shape[0]:
                continue
            having = [other[low:high] for other in pieces if other.shape[0] >= high]
            donor = having[0] if len(having) == 1 else torch.stack([p.float() for p in having]).mean(dim=0)
            parts.append(donor.to(piece.dtype))
        aligned.append(parts[0] if len(parts) == 1 else torch.cat(parts))
    return aligned
