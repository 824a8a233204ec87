"""Clip records and their containers, shared by the dataset layouts (bow.data.datasets,
bow.data.audioset), and the one CSV reader they use."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path


class DatasetError(ValueError):
    """A dataset folder or labels file that cannot be used; the message names the path."""


@dataclass(frozen=True)
class Clip:
    fname: str          # identifier, unique in the dataset (FSD50K: the number; else the file name)
    path: Path
    split: str
    labels: tuple[str, ...]


@dataclass
class Dataset:
    root: Path
    layout: str                      # "fsd50k", "labels_csv", "speech_commands" or "audioset"
    vocabulary: list[str]
    clips: list[Clip]
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (fname, reason)

    @property
    def splits(self) -> list[str]:
        return sorted({c.split for c in self.clips})

    def select(self, splits) -> list[Clip]:
        """Clips whose split is in ``splits`` (strings), in dataset order."""
        wanted = {str(s) for s in splits}
        return [c for c in self.clips if c.split in wanted]


def read_rows(path: Path, required: tuple[str, ...]) -> list[dict]:
    """CSV with a header -> rows as dicts; DatasetError naming the file if it cannot be read or
    lacks a ``required`` column."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(f"{path}: missing column(s) {missing}; has {reader.fieldnames}")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from e
