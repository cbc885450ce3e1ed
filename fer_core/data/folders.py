"""Folders of face images (``train/<emotion>/*.png``, ``test/<emotion>/...``) -> a :class:`Part`.

Why this module exists: FER2013 is also passed around as image folders (Kaggle's "FER-2013 images",
users' own crops). The folder names carry the split and the label, so this reader maps them with
the same words the CSV ``Usage`` and label columns accept, and decodes every file with the one
image decoder (:func:`fer_core.data.decode.image_to_face`) that live uploads use too.

Layouts: ``<split>/<emotion>/*`` (images directly in ``<split>/`` are unlabeled) or a flat
``<emotion>/*`` (all train; the split rule then carves out val). Files are taken in sorted
relative-path order, and the ``row`` key is that position, so it is stable across runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_core.data.decode import ImageError, image_to_face
from fer_core.data.faceset import UNLABELED
from fer_core.data.spec import (EMOTION_ALIASES, SIZE, DataError, Part, finish_faults, name_key,
                                warn_user)
from fer_core.labels import EMOTIONS, NUM_CLASSES

__all__ = ["IMAGE_EXTENSIONS", "is_image_layout", "load_image_dir"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Folder names of image layouts -> split (same words the Usage column accepts).
_SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test", "testing": "test",
               "publictest": "PublicTest", "privatetest": "PrivateTest"}


def is_image_layout(root: Path) -> bool:
    """Does ``root`` hold split or emotion folders?"""
    for d in root.iterdir():
        if d.is_dir() and (name_key(d.name) in _SPLIT_DIRS or name_key(d.name) in EMOTION_ALIASES):
            return True
    return False


def _folder_label(folder: Path) -> int:
    key = name_key(folder.name)
    if key.isdigit() and int(key) < NUM_CLASSES:
        return int(key)
    if key in EMOTION_ALIASES:
        return EMOTION_ALIASES[key]
    raise DataError(folder, f"unknown emotion folder {folder.name!r} (expected one of "
                            f"{', '.join(EMOTIONS)} or 0..{NUM_CLASSES - 1})")


def _visible(p: Path) -> bool:
    return not p.name.startswith((".", "_")) and p.name.lower() not in ("thumbs.db", "desktop.ini")


def _collect(root: Path) -> list[tuple[str, Path, str, int]]:
    """``(sort key, file, split, label)`` of every image under ``root``, sorted; warns about
    folders and files that are ignored."""
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and _visible(d))
    split_dirs = [d for d in subdirs if name_key(d.name) in _SPLIT_DIRS]
    entries: list[tuple[str, Path, str, int]] = []
    others: list[Path] = []

    def collect(folder: Path, split: str, label: int) -> None:
        for f in folder.iterdir():
            if f.is_file() and _visible(f):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    entries.append((f.relative_to(root).as_posix(), f, split, label))
                else:
                    others.append(f)

    if split_dirs:
        for d in split_dirs:
            split = _SPLIT_DIRS[name_key(d.name)]
            collect(d, split, UNLABELED)           # images directly inside: unlabeled
            for emo in sorted(e for e in d.iterdir() if e.is_dir() and _visible(e)):
                collect(emo, split, _folder_label(emo))
        ignored = [d.name for d in subdirs if d not in split_dirs]
        if ignored:
            warn_user(f"{root}: ignored folder(s) {', '.join(ignored)} (not train/val/test)")
    else:   # flat layout: root/<emotion>/*.png -> train (+ val slice)
        for emo in subdirs:
            collect(emo, "train", _folder_label(emo))
    if others:
        warn_user(f"{root}: ignored {len(others)} non-image file(s), e.g. {others[0]}")
    entries.sort(key=lambda e: e[0])
    return entries


def load_image_dir(root: Path, *, skip: bool = False) -> Part:
    """Every image under ``root`` as a 48x48 gray face; an unreadable file raises
    :class:`DataError` (or, with ``skip``, is dropped and counted)."""
    entries = _collect(root)
    if not entries:
        raise DataError(root, "no image files found (expected train/<emotion>/*.png|jpg|jpeg|"
                              "bmp|webp and test/<emotion>/...)")
    n = len(entries)
    x = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    faults: dict[int, str] = {}
    for i, (_, f, _, _) in enumerate(entries):
        try:
            x[i] = image_to_face(f, SIZE)
        except ImageError as exc:
            if not skip:
                raise DataError(f, f"cannot read image ({exc})",
                                where=f"image {i + 1} of {n}") from None
            faults[i] = f"cannot read image ({exc})"
    finish_faults(root, faults, n, skip, lambda i: {"where": str(entries[i][1])})
    keep = np.ones(n, dtype=bool)
    keep[list(faults)] = False
    if not keep.any():
        raise DataError(root, "no readable images")
    y = np.array([e[3] for e in entries], dtype=np.int64)
    usage = np.array([e[2] for e in entries]).astype(str)
    return Part(x[keep], y[keep], usage[keep], np.arange(n, dtype=np.int64)[keep])
