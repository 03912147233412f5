"""Synthetic images for the bundled smoke data (``data_mixes/smoke/*.jsonl``).

The smoke records are committed as text; the images they reference are drawn here from their file names, so the
repository carries no binary blobs and every machine draws the same pixels. A name reads
``{modality}-{view}-{level}.png`` -- e.g. ``mri-sagittal-L4.png`` is a sagittal sketch of five lumbar vertebrae
with L4 highlighted, ``xray-ap-none.png`` highlights nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 112  # a multiple of 28: exactly (112/28)^2 = 16 visual tokens at the tiny model's pixel limits
LEVELS = ("L1", "L2", "L3", "L4", "L5")
_BACKGROUND = {"xray": (20, 20, 20), "mri": (10, 10, 40), "ct": (30, 30, 30)}
_BONE = {"xray": (200, 200, 200), "mri": (150, 150, 190), "ct": (230, 220, 200)}
_NAME = re.compile(r"^(xray|mri|ct)-(sagittal|lateral|ap)-(L[1-5]|none)\.png$")


def is_synthetic(name: str) -> bool:
    return bool(_NAME.match(Path(name).name))


def render(name: str) -> Image.Image:
    match = _NAME.match(Path(name).name)
    if not match:
        raise ValueError(f"not a synthetic smoke image name: {name!r} (expected e.g. mri-sagittal-L4.png)")
    modality, view, level = match.groups()
    image = Image.new("RGB", (SIZE, SIZE), _BACKGROUND[modality])
    draw = ImageDraw.Draw(image)
    width = 44 if view == "ap" else 32
    left = (SIZE - width) // 2 + (6 if view == "lateral" else 0)
    for i, name_i in enumerate(LEVELS):
        top = 8 + i * 20
        colour = (230, 60, 60) if name_i == level else _BONE[modality]
        draw.rectangle([left, top, left + width, top + 14], fill=colour)
        if view != "ap":  # posterior elements of a sagittal/lateral view
            draw.rectangle([left + width + 4, top + 4, left + width + 14, top + 10], fill=_BONE[modality])
    return image


def write_image(name: str, folder: Path) -> Path:
    """Draw ``name`` into ``folder`` (idempotent: an existing file is kept) and return its path."""
    target = folder / Path(name).name
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp.png")
        render(name).save(tmp, format="PNG")
        tmp.replace(target)
    return target
