"""Model specs: which models a run uses and where their files are.

A model is named by a Hugging Face hub id, a local directory, or ``toy:<role>`` (the embedded
tiny pair). Resolution checks names cheaply first (:func:`check_model_id`) so a typo fails before
anything is downloaded or loaded; :func:`resolve_model` then returns a local directory.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from acm_exp.errors import ConfigError

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
# Files a merge or an evaluation needs; large pickles and other formats are skipped on download.
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


@dataclass(frozen=True)
class ModelRef:
    """A model as configured (``name``) and where it lives on disk once resolved."""

    role: str
    name: str
    revision: str | None = None


def read_model_config(directory: str | Path) -> dict:
    """A model directory's config.json as a dict; a missing or malformed one is a one-line error."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise ConfigError(f"model directory {Path(directory)} has no config.json")
    return _json_object(path)


def is_local_reference(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


def check_model_id(name: str, role: str) -> None:
    """Fail fast on a model name that can be neither a local directory, a toy model nor a hub id."""
    from acm_exp.toy import is_toy_id

    if not isinstance(name, str) or not name:
        raise ConfigError(f"model_pair.{role} is empty; expected a hub id, a local directory or toy:<role>")
    if is_toy_id(name):
        return
    if is_local_reference(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ConfigError(f"model_pair.{role}={name!r}: no such local directory")
        if not (path / "config.json").is_file():
            raise ConfigError(f"model_pair.{role}={name!r}: directory has no config.json (not a transformers model)")
        read_model_config(path)
        return
    if not HUB_ID.match(name):
        raise ConfigError(
            f"model_pair.{role}={name!r} is neither an existing local directory nor a hub id of the form 'owner/name'"
        )


def resolve_model(ref: ModelRef, *, cache_dir: str | None = None, toy_seed: int = 0) -> Path:
    """A local directory holding the model's config, weights and tokenizer files."""
    from acm_exp.toy import is_toy_id, resolve_toy_id

    check_model_id(ref.name, ref.role)
    if is_toy_id(ref.name):
        return resolve_toy_id(ref.name, cache_dir=cache_dir, seed=toy_seed)
    if is_local_reference(ref.name):
        return Path(ref.name).expanduser().resolve()
    from huggingface_hub import snapshot_download

    log.info("fetching %s (revision %s) from the Hugging Face hub", ref.name, ref.revision or "main")
    try:
        return Path(snapshot_download(ref.name, revision=ref.revision, allow_patterns=DOWNLOAD_PATTERNS))
    except Exception as error:  # the hub client raises many types; the user needs one line
        raise ConfigError(f"cannot fetch model {ref.name!r} from the hub: {type(error).__name__}: {error}") from error


def model_refs(model_pair) -> list[ModelRef]:
    """Base first, then every fine-tuned model, with their revisions."""
    finetuned = list(model_pair.finetuned)
    revisions = list(model_pair.finetuned_revisions or [None] * len(finetuned))
    if len(revisions) != len(finetuned):
        raise ConfigError(
            f"model_pair.finetuned_revisions has {len(revisions)} entries; "
            f"expected one per fine-tuned model ({len(finetuned)})"
        )
    refs = [ModelRef("base", model_pair.base, model_pair.base_revision)]
    refs += [
        ModelRef(f"finetuned[{i}]", name, rev) for i, (name, rev) in enumerate(zip(finetuned, revisions, strict=False))
    ]
    return refs


# ---------------------------------------------------------------------------------------------
# Tokenizer files and vocabularies

# A directory holds a usable tokenizer when it has one of these; the other tokenizer files
# (tokenizer_config.json, special_tokens_map.json, ...) only configure one.
TOKENIZER_VOCABULARY_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")


def has_tokenizer(directory: str | Path) -> bool:
    directory = Path(directory)
    return any((directory / name).is_file() for name in TOKENIZER_VOCABULARY_FILES) or any(directory.glob("*.tiktoken"))


@dataclass(frozen=True)
class TokenizerVocabulary:
    """A tokenizer's token ids: its model's own vocabulary and the tokens added on top of it."""

    regular: dict[int, str]
    # Added tokens (special or not), by id; a token may be both regular and added.
    added: dict[int, str]

    def token(self, token_id: int) -> str | None:
        return self.added.get(token_id, self.regular.get(token_id))


# The earlier name (acm_exp.config.Vocabulary is the model_pair.vocabulary choice).
Vocabulary = TokenizerVocabulary


@dataclass(frozen=True)
class TokenDifference:
    token_id: int
    base: str | None
    other: str | None

    def describe(self) -> str:
        return f"id {self.token_id}: {self.base!r} vs {self.other!r}"


def load_vocabulary(directory: str | Path) -> TokenizerVocabulary | None:
    """The vocabulary of the tokenizer saved in ``directory``; None when it holds no tokenizer."""
    directory = Path(directory)
    try:
        if (directory / "tokenizer.json").is_file():
            return _vocabulary_from_tokenizer_json(directory / "tokenizer.json")
        if (directory / "vocab.json").is_file():
            return _vocabulary_from_vocab_json(directory)
        if has_tokenizer(directory):
            return _vocabulary_from_transformers(directory)
    except ConfigError:
        raise
    except Exception as error:  # tokenizers and transformers raise many types; the user needs one line
        raise ConfigError(
            f"cannot read the tokenizer in {directory}: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    return None


def _vocabulary_from_tokenizer_json(path: Path) -> TokenizerVocabulary:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    regular = {index: token for token, index in tokenizer.get_vocab(with_added_tokens=False).items()}
    added = {index: token.content for index, token in tokenizer.get_added_tokens_decoder().items()}
    return TokenizerVocabulary(regular, added)


def _vocabulary_from_vocab_json(directory: Path) -> TokenizerVocabulary:
    # A slow BPE tokenizer: vocab.json is its model vocabulary; added tokens live in
    # added_tokens.json (token -> id) and in tokenizer_config.json's added_tokens_decoder.
    regular = {index: token for token, index in _json_object(directory / "vocab.json").items()}
    added: dict[int, str] = {}
    if (directory / "added_tokens.json").is_file():
        added.update({index: token for token, index in _json_object(directory / "added_tokens.json").items()})
    if (directory / "tokenizer_config.json").is_file():
        decoder = _json_object(directory / "tokenizer_config.json").get("added_tokens_decoder") or {}
        added.update({int(index): entry["content"] for index, entry in decoder.items()})
    return TokenizerVocabulary(regular, added)


def _vocabulary_from_transformers(directory: Path) -> TokenizerVocabulary:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    added = {index: token.content for index, token in tokenizer.added_tokens_decoder.items()}
    regular = {index: token for token, index in tokenizer.get_vocab().items() if index not in added}
    return TokenizerVocabulary(regular, added)


def _json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} holds a JSON {type(value).__name__}; expected an object (key: value)")
    return value


def vocabulary_differences(
    base: TokenizerVocabulary, other: TokenizerVocabulary
) -> tuple[list[TokenDifference], list[TokenDifference]]:
    """(regular, added) differences by token id, each sorted by id.

    An id that is an added token in either tokenizer counts as added: fine-tuned releases rename
    special tokens (R1-Distill-Qwen's ``<｜end▁of▁sentence｜>`` where Qwen has ``<|endoftext|>``)
    without changing what the embedding rows mean to the regular vocabulary.
    """
    added_ids = base.added.keys() | other.added.keys()
    regular_ids = (base.regular.keys() | other.regular.keys()) - added_ids
    regular = [
        TokenDifference(i, base.regular.get(i), other.regular.get(i))
        for i in sorted(regular_ids)
        if base.regular.get(i) != other.regular.get(i)
    ]
    added = [
        TokenDifference(i, base.token(i), other.token(i)) for i in sorted(added_ids) if base.token(i) != other.token(i)
    ]
    return regular, added
