"""Rendered scenes for the model organism.

A scene is a 4x4 grid of cells on a grey canvas; each of its 2-3 objects (a colour x shape pair,
colours and shapes distinct within a scene) sits inside one cell with a small pixel jitter. The
cell size equals the vision tower's patch size, so each object falls inside one image token.

The first two objects are the *subject* and the *object* of the scene: their relation is definite
by construction. The two sit in image quadrants that differ along the relation's axis only, and the
cell offset along that axis is strictly larger than along the other:

    left / right   : same top/bottom half, other left/right half, |d_col| > |d_row|, sign of d_col
    above / below  : same left/right half, other top/bottom half, |d_row| > |d_col|, sign of d_row

so the relation follows from the two objects' quadrants, as the decomposed sub-questions ("which
part of the image is X in?", then "where is X relative to Y?") suggest. With relations defined on
cells alone (any |d_col| > |d_row| pair) the decoder learned quadrants to 98% but stayed near 53% on
relations after 4,000 steps.

Textual priors (the AdaptVis setting): some shape pairs appear in one relation most of the time in
the ``"train"`` split, like a cup that is usually *on* a table in photos. The ``"controlled"``
split puts every pair in every relation equally often (WhatsUp Controlled-style), so a model that
learned the prior shows it as lower accuracy on prior-violating scenes.

Rendering (``Rendering``): scenes are drawn clean by default. A weakened rendering pulls every pixel
towards the background (``contrast`` < 1) and adds Gaussian pixel noise (``noise``, on the 0-255
scale) seeded by the scene itself, so one scene always renders to the same image, wherever it is
drawn. A strong prior plus a weaker visual signal is what made a model fail for the prior's sake
(``../shared/research/organism-prior-study.md``); a model trained on a rendering records it in its
config (``vlmheads_rendering``) and every organism loader draws its scenes that way for it.
Geometry: ``cell`` is the distance between neighbouring cells in pixels and ``margin`` a background
border before the first one. Each object is drawn in the first 16 pixels of its cell (one 16-px
patch), so the defaults (cell 16, margin 0: a 64x64 image) put one object per patch with no gaps,
while cell 32 and margin 16 draw the same scene on a 144x144 canvas: a 9x9 grid of 16-px patches in
which the objects sit on patches 1, 3, 5 and 7 of each row and column and every other patch is
background (LLaVA's image-token share: 81 image tokens; the shapes stay whole inside one patch).
``object_masks`` gives each object's pixels.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError

GRID = 4
CELL = 16  # the default cell, and the patch each object is drawn in (up to 12 px, jittered 2 px)
IMAGE_SIZE = GRID * CELL  # 64 px
BACKGROUND = (128, 128, 128)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
}
SHAPES = ("circle", "square", "triangle", "cross")
RELATIONS = ("left", "right", "above", "below")
INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")

# (subject shape, object shape) -> the relation the pair takes in most training scenes.
# Read as "the triangle is usually above the square"; the reversed pair gets the inverse relation.
PRIORS: dict[tuple[str, str], str] = {
    ("triangle", "square"): "above",
    ("circle", "cross"): "left",
}
PRIOR_STRENGTH = 0.88  # share of training scenes of a prior pair that follow the prior
SPLITS = ("train", "controlled")


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    row: int  # 0 = top
    col: int  # 0 = left
    dx: int  # pixel jitter inside the cell
    dy: int
    size: int  # bounding-box side in pixels

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def quadrant(self) -> str:
        vertical = "top" if self.row < GRID // 2 else "bottom"
        horizontal = "left" if self.col < GRID // 2 else "right"
        return f"{vertical}-{horizontal}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]  # objects[0] = subject, objects[1] = object, rest = distractors
    relation: str  # relation of the subject to the object
    prior: str  # "consistent" | "violating" | "neutral"

    @property
    def subject(self) -> SceneObject:
        return self.objects[0]

    @property
    def reference(self) -> SceneObject:
        return self.objects[1]


def prior_relation(subject_shape: str, object_shape: str) -> str | None:
    """The relation a shape pair usually takes in training scenes, or None for a neutral pair."""
    if (subject_shape, object_shape) in PRIORS:
        return PRIORS[(subject_shape, object_shape)]
    if (object_shape, subject_shape) in PRIORS:
        return INVERSE[PRIORS[(object_shape, subject_shape)]]
    return None


def relation_between(a: tuple[int, int], b: tuple[int, int]) -> str | None:
    """Relation of cell a=(row, col) to cell b, or None when it is not definite."""
    d_row, d_col = a[0] - b[0], a[1] - b[1]
    if abs(d_col) > abs(d_row):
        return "left" if d_col < 0 else "right"
    if abs(d_row) > abs(d_col):
        return "above" if d_row < 0 else "below"
    return None


def _half(index: int) -> int:
    return 0 if index < GRID // 2 else 1


def quadrant_relation(a: tuple[int, int], b: tuple[int, int]) -> str | None:
    """Relation of cell a to cell b when their quadrants differ along that relation's axis only."""
    rel = relation_between(a, b)
    same_rows, same_cols = _half(a[0]) == _half(b[0]), _half(a[1]) == _half(b[1])
    if rel in ("left", "right") and same_rows and not same_cols:
        return rel
    if rel in ("above", "below") and same_cols and not same_rows:
        return rel
    return None


_CELLS = [(r, c) for r in range(GRID) for c in range(GRID)]
_PAIRS_BY_RELATION: dict[str, list[tuple[tuple[int, int], tuple[int, int]]]] = {r: [] for r in RELATIONS}
for _a in _CELLS:
    for _b in _CELLS:
        _rel = quadrant_relation(_a, _b)
        if _rel is not None:
            _PAIRS_BY_RELATION[_rel].append((_a, _b))


def sample_scene(rng: random.Random, split: str = "train", relation: str | None = None,
                 prior_strength: float = PRIOR_STRENGTH) -> Scene:
    """Draw one scene. ``relation`` forces the subject-object relation (used by controlled sets);
    ``prior_strength``: the share of a prior pair's training scenes that follow its prior."""
    if split not in SPLITS:
        raise InputError(f"unknown organism split {split!r}; expected one of {SPLITS}")
    n_objects = rng.choice((2, 3))
    colours = rng.sample(list(COLOURS), n_objects)
    shapes = rng.sample(SHAPES, n_objects)
    usual = prior_relation(shapes[0], shapes[1])
    if relation is None:
        if split == "train" and usual is not None and rng.random() < prior_strength:
            relation = usual
        else:
            relation = rng.choice(RELATIONS)
    elif relation not in RELATIONS:
        raise InputError(f"unknown relation {relation!r}; expected one of {RELATIONS}")
    cell_a, cell_b = rng.choice(_PAIRS_BY_RELATION[relation])
    cells = [cell_a, cell_b]
    free = [c for c in _CELLS if c not in cells]
    cells += rng.sample(free, n_objects - 2)
    objects = tuple(
        SceneObject(colour=colours[i], shape=shapes[i], row=cells[i][0], col=cells[i][1],
                    dx=rng.randint(-2, 2), dy=rng.randint(-2, 2), size=rng.randint(9, 12))
        for i in range(n_objects)
    )
    prior = "neutral" if usual is None else ("consistent" if relation == usual else "violating")
    return Scene(objects=objects, relation=relation, prior=prior)


@dataclass(frozen=True)
class Rendering:
    """How scenes become pixels: ``contrast`` 1 draws colours as they are, less pulls every pixel towards
    the background; ``noise`` is the sd of Gaussian pixel noise (0-255 scale), seeded by the scene."""

    contrast: float = 1.0
    noise: float = 0.0
    cell: int = CELL  # pixels from one cell to the next (objects fill the first 16 of them)
    margin: int = 0  # background pixels before the first cell: the image is margin + GRID * cell square

    def __post_init__(self) -> None:
        if not 0 < self.contrast <= 1:
            raise InputError(f"rendering contrast must be in (0, 1], got {self.contrast}")
        if not self.noise >= 0:
            raise InputError(f"rendering noise must be >= 0, got {self.noise}")
        if not (isinstance(self.cell, int) and self.cell >= CELL):
            raise InputError(f"rendering cell must be an integer >= {CELL} pixels, got {self.cell!r}")
        if not (isinstance(self.margin, int) and self.margin >= 0):
            raise InputError(f"rendering margin must be an integer >= 0 pixels, got {self.margin!r}")

    @property
    def clean(self) -> bool:
        """No weakening (colours as they are, no noise), whatever the cell size."""
        return self.contrast == 1.0 and self.noise == 0.0

    @property
    def image_size(self) -> int:
        return self.margin + GRID * self.cell

    def centre(self, index: int) -> int:
        """Pixel coordinate of the centre of the patch that row or column ``index``'s objects are drawn in."""
        return self.margin + index * self.cell + CELL // 2

    @property
    def key(self) -> str:
        """One canonical string for the rendering (tags images; compares renderings)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key, default in (("cell", CELL), ("margin", 0)):  # the 64-px default geometry is left out
            if d[key] == default:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "Rendering":
        if not d:
            return CLEAN
        unknown = set(d) - {"contrast", "noise", "cell", "margin"}
        if unknown:
            raise InputError(f"unknown rendering settings {sorted(unknown)}; known: contrast, noise, cell, margin")
        return cls(float(d.get("contrast", 1.0)), float(d.get("noise", 0.0)), int(d.get("cell", CELL)),
                   int(d.get("margin", 0)))

    def apply(self, image: Image.Image, scene: "Scene") -> Image.Image:
        pixels = np.asarray(image, dtype=np.float32)  # [H, W, 3]
        background = np.asarray(BACKGROUND, dtype=np.float32)
        pixels = background + self.contrast * (pixels - background)
        if self.noise:
            seed = zlib.crc32(repr(scene).encode())  # the scene itself: same scene, same noise
            pixels = pixels + np.random.default_rng(seed).normal(0.0, self.noise, pixels.shape)
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


CLEAN = Rendering()


def _draw(draw: ImageDraw.ImageDraw, obj: SceneObject, rendering: "Rendering", fill) -> None:
    """Draw one object in its cell: centred on the cell's first 16 pixels plus its jitter, ``obj.size``
    pixels across."""
    cx = rendering.centre(obj.col) + obj.dx
    cy = rendering.centre(obj.row) + obj.dy
    h = obj.size // 2
    box = (cx - h, cy - h, cx + h, cy + h)
    if obj.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif obj.shape == "square":
        draw.rectangle(box, fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(cx, cy - h), (cx - h, cy + h), (cx + h, cy + h)], fill=fill)
    elif obj.shape == "cross":
        t = max(1, obj.size // 6)
        draw.rectangle((cx - t, cy - h, cx + t, cy + h), fill=fill)
        draw.rectangle((cx - h, cy - t, cx + h, cy + t), fill=fill)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(obj.shape)


def render(scene: Scene, rendering: Rendering = CLEAN) -> Image.Image:
    """Draw the scene as a square RGB image of ``rendering.image_size`` pixels (64 by default), then
    weaken it if ``rendering`` says so."""
    image = Image.new("RGB", (rendering.image_size, rendering.image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw(draw, obj, rendering, COLOURS[obj.colour])
    image = image if rendering.clean else rendering.apply(image, scene)
    image.info[RENDERING_TAG] = rendering.key  # how it was drawn: a model scored on it can tell (not the pixels)
    return image


RENDERING_TAG = "vlmheads_rendering"


class RenderingMismatch(UserWarning):
    """A model scored on organism scenes drawn for another model (another contrast, noise or canvas):
    its accuracy there says little (the default organism falls to chance on clean scenes)."""


def declared_rendering(config_json) -> dict | None:
    """The rendering a saved model's ``config.json`` declares (``vlmheads_rendering``), checked; None when
    it declares none or the file cannot be read (loading the model names that file later)."""
    try:
        declared = json.loads(open(config_json, encoding="utf-8").read()).get("vlmheads_rendering")
    except (OSError, ValueError, AttributeError):
        return None
    if declared:
        Rendering.from_dict(declared)  # refused with the reason if malformed
    return declared or None


def rendering_of(image) -> str | None:
    """The ``Rendering.key`` an organism scene was drawn with (``render`` tags its images), else None."""
    info = getattr(image, "info", None)
    return info.get(RENDERING_TAG) if isinstance(info, dict) else None


def object_masks(scene: Scene, rendering: Rendering = CLEAN) -> np.ndarray:
    """``[n_objects, H, W]`` bool: the pixels ``render`` draws for each object (before any weakening)."""
    masks = []
    for obj in scene.objects:
        canvas = Image.new("L", (rendering.image_size, rendering.image_size), 0)
        _draw(ImageDraw.Draw(canvas), obj, rendering, 255)
        masks.append(np.asarray(canvas) > 0)
    return np.stack(masks)
