"""Fixed choices of config fields as ``str`` enums, so that Hydra rejects any other value at compose time."""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A fixed choice of a config field.

    Each member's name is its value: OmegaConf reads and writes enum members by name (overrides,
    saved YAML), and code that compares, hashes or formats a member (``==``, dict keys, JSON,
    f-strings) sees the plain string, so hashes and files keep the text they had before the enum.
    """

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)
