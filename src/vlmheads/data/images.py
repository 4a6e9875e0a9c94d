"""Images of examples: in memory (PIL) or on disk (a path opened when a batch is encoded).

Real datasets hold thousands of photographs, so their loaders keep paths and check only that the
files exist; ``as_pil`` opens one when a model needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

from PIL import Image

from ..errors import InputError, MissingInput

ImageLike = Union[Image.Image, str, Path]


class MissingImagesError(MissingInput):
    """Some images a dataset's records point to are not on disk."""


class ImageReadError(InputError):
    """An image file exists but cannot be decoded (truncated, or not an image); names the file."""


def as_pil(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if image is None:
        raise InputError("this example has no image (the dataset was loaded with images=False)")
    try:
        with Image.open(image) as opened:
            return opened.convert("RGB")
    except FileNotFoundError:
        raise MissingImagesError(f"image file {image} does not exist") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL: truncated or not an image at all
        raise ImageReadError(f"cannot read image {image}: {err}; the file is damaged or not an image "
                             f"(re-download it or drop its record)") from None


def check_images(paths: Iterable[Path], dataset: str, layout: str, show: int = 5) -> None:
    """Raise one error naming the first few missing files and the layout the loader expects."""
    paths = list(paths)
    missing = [p for p in paths if not Path(p).is_file()]
    if not missing:
        return
    folders = sorted({str(Path(p).parent) for p in missing})
    folder_note = "" if all(Path(f).is_dir() for f in folders) else \
        f" (folder missing: {', '.join(f for f in folders if not Path(f).is_dir())[:300]})"
    listed = "\n  ".join(str(p) for p in missing[:show])
    more = f"\n  ... and {len(missing) - show} more" if len(missing) > show else ""
    raise MissingImagesError(
        f"{dataset}: {len(missing)} of {len(paths)} images are missing{folder_note}:\n  {listed}{more}\n"
        f"expected layout:\n{layout}\n"
        f"pass root=... (or --data-root) pointing at that folder, or images=False to load the annotations only")
