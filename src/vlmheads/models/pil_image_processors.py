"""PIL versions of image processors that transformers ships only for torchvision (Llama-4's), so that such
a family's processor can be built on a machine without torchvision (``load_processor``'s fallback).

Llama-4 tiles an image: of the canvases made of up to ``max_patches`` tiles of ``size`` (every rows x
columns grid with rows * columns <= max_patches), it takes the one needing the least upscaling (else the
least downscaling; ties go to the smallest area), resizes the image into it without distortion (never
upscaling past one tile unless ``resize_to_max_canvas``), pads the rest with zeros, normalises, and cuts
it into tiles in raster order, adding a tile of the whole image resized when there is more than one.
``pixel_values`` holds every image's tiles in one tensor ``[sum of tiles, 3, size, size]``;
``aspect_ratios`` ``[n_images, 2]`` holds each image's (rows, columns).

Saved, the processor names itself ``Llama4ImageProcessor`` (transformers' PIL backends drop their
suffix), so a machine with torchvision loads transformers' own class from the same files.
"""

from __future__ import annotations

import numpy as np
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs


class _Llama4Kwargs(ImagesKwargs, total=False):
    max_patches: int
    resize_to_max_canvas: bool


def canvases(max_patches: int, tile_h: int, tile_w: int) -> list[tuple[int, int]]:
    """``(height, width)`` of every grid of at most ``max_patches`` tiles, fewest tiles first."""
    return [(rows * tile_h, (n // rows) * tile_w) for n in range(1, max_patches + 1)
            for rows in range(1, n + 1) if n % rows == 0]


def best_canvas(image_hw: tuple[int, int], options: list[tuple[int, int]], to_max: bool) -> tuple[int, int]:
    """The canvas the image fits with the least upscaling (the most, if ``to_max``), else the least
    downscaling; among equals, the smallest area (the first listed on a tie)."""
    h, w = image_hw
    scales = [min(ch / h, cw / w) for ch, cw in options]
    up = [s for s in scales if s >= 1]
    chosen = (max(up) if to_max else min(up)) if up else max(scales)
    fitting = [c for c, s in zip(options, scales) if s == chosen]
    return min(fitting, key=lambda c: c[0] * c[1])


def fit_without_distortion(image_hw: tuple[int, int], target_hw: tuple[int, int]) -> tuple[int, int]:
    """The largest ``(height, width)`` inside ``target_hw`` with the image's aspect ratio (the limiting
    side fills the target, the other is floored)."""
    (h, w), (th, tw) = image_hw, target_hw
    if tw / w < th / h:
        return max(min(int(h * tw / w), th), 1), tw
    return th, max(min(int(w * th / h), tw), 1)


class Llama4ImageProcessorPil(PilBackend):
    """Llama-4's image processor on the PIL backend (see the module docstring)."""

    resample = PILImageResampling.BILINEAR
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"height": 336, "width": 336}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    max_patches = 16
    resize_to_max_canvas = False
    valid_kwargs = _Llama4Kwargs

    def _preprocess(self, images: list[np.ndarray], do_resize: bool, size: SizeDict, resample, do_rescale: bool,
                    rescale_factor: float, do_normalize: bool, image_mean, image_std, max_patches: int,
                    resize_to_max_canvas: bool, return_tensors=None, **kwargs) -> BatchFeature:
        if not do_resize:
            raise ValueError("Llama-4 always resizes images onto its tile canvases; do_resize=False is not supported")
        tile_h, tile_w = size.height, size.width
        options = canvases(max_patches, tile_h, tile_w)

        def finish(image: np.ndarray) -> np.ndarray:
            image = image.astype(np.float32)
            if do_rescale:
                image = self.rescale(image, rescale_factor)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            return image

        all_tiles, ratios = [], []
        for image in images:  # [C, H, W]
            c, h, w = image.shape
            canvas_h, canvas_w = best_canvas((h, w), options, resize_to_max_canvas)
            limit = (canvas_h, canvas_w) if resize_to_max_canvas else \
                (min(max(h, tile_h), canvas_h), min(max(w, tile_w), canvas_w))
            new_h, new_w = fit_without_distortion((h, w), limit)
            resized = self.resize(image, SizeDict(height=new_h, width=new_w), resample=resample)
            canvas = np.zeros((c, canvas_h, canvas_w), dtype=resized.dtype)  # zero padding, bottom and right
            canvas[:, :new_h, :new_w] = resized
            rows, cols = canvas_h // tile_h, canvas_w // tile_w
            # [C, rows*th, cols*tw] -> [C, rows, th, cols, tw] -> [rows, cols, C, th, tw] -> [rows*cols, C, th, tw]
            tiles = finish(canvas).reshape(c, rows, tile_h, cols, tile_w).transpose(1, 3, 0, 2, 4)
            tiles = tiles.reshape(rows * cols, c, tile_h, tile_w)
            if rows * cols > 1:  # plus the whole image as one tile
                whole = finish(self.resize(image, size, resample=resample))
                tiles = np.concatenate([tiles, whole[None]], axis=0)
            all_tiles.append(tiles)
            ratios.append([rows, cols])
        pixel_values = np.concatenate(all_tiles, axis=0) if return_tensors else all_tiles
        return BatchFeature(data={"pixel_values": pixel_values, "aspect_ratios": np.array(ratios)},
                            tensor_type=return_tensors)


# image processor type saved in a checkpoint -> its PIL version here
PIL_VERSIONS = {"Llama4ImageProcessor": Llama4ImageProcessorPil}
