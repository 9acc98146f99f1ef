"""Drawing primitives for the generated road scenes: a pinhole camera over a flat street, a canvas, painters.

Every object is modelled in metres (x to the right, y up from the road, z forward from the camera) and projected by
one `Camera`, so sizes shrink with distance, the road converges to a vanishing point and any output size gives the
same scene. Two kinds of painter exist:

- `paint_parts`: flat polygons in 3-D (car bodies, people, poles, signs, tree crowns). Straight lines stay straight
  under projection, so projecting the vertices and filling the polygon with PIL is exact.
- `paint_side_building`, `paint_side_band`, `paint_front_building` (and the ground, in synth_scene): planes whose
  shape and texture are functions of metric plane coordinates (window grids, canopy edges, fence bars, paving
  tiles, lane markings), evaluated per pixel with numpy after inverting the projection.

Colour never identifies a class: every texture multiplies a colour sampled per instance from palettes that several
classes share, by a shade computed from per-image noise fields.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from trainers.data.labels import LABEL_BY_NAME

Texture = Literal["flat", "leafy", "glass", "lamp"]
Keep = Callable[[np.ndarray, np.ndarray], np.ndarray]  # plane coordinates -> which pixels belong to a shape
ERASE = -1  # a Part with this label cuts a hole into the parts of its sprite drawn before it


def raw_id(name: str) -> int:
    return LABEL_BY_NAME[name].id


@dataclass(frozen=True)
class Camera:
    """A level pinhole camera `eye` metres above a flat road; image rows grow downwards."""

    height: int
    width: int
    horizon: float  # image row of the horizon
    centre: float  # image column of the vanishing point
    focal: float  # focal length in pixels
    eye: float  # camera height above the road in metres

    def project(self, pts: np.ndarray) -> np.ndarray:
        """(n, 3) world points (x, y up, z forward) -> (n, 2) image points (column, row)."""
        z = pts[:, 2]
        return np.stack(
            [self.centre + self.focal * pts[:, 0] / z, self.horizon + self.focal * (self.eye - pts[:, 1]) / z], 1
        )


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Unit-variance value noise with features about `cell` pixels wide (bilinear upsampling of white noise)."""
    small = rng.standard_normal((int(height / cell) + 2, int(width / cell) + 2)).astype(np.float32)
    big = np.asarray(Image.fromarray(small, mode="F").resize((width, height), Image.Resampling.BILINEAR))
    return (big - big.mean()) / (big.std() + 1e-6)


class Canvas:
    """The image being drawn, its raw label ids and instance ids, and the per-image noise fields textures use."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.label = np.zeros((height, width), np.uint8)  # 0 = unlabeled
        self.instance = np.zeros((height, width), np.int32)
        self.fine = rng.standard_normal((height, width), dtype=np.float32)
        self.mid = smooth_noise(rng, height, width, cell=max(2.0, width / 96))
        self.coarse = smooth_noise(rng, height, width, cell=max(4.0, width / 16))
        self._instances: Counter[int] = Counter()

    def new_instance(self, label: int) -> int:
        """Cityscapes convention: label id * 1000 + index for things (index counts per class from 0)."""
        index = self._instances[label]
        if index > 999:
            raise ValueError(f"at most 1000 instances per class fit the id scheme, but label {label} needs more")
        self._instances[label] += 1
        return label * 1000 + index

    def fill(self, sl: tuple[slice, slice], label: np.ndarray, rgb: np.ndarray) -> None:
        """Overwrite a whole region with stuff (no instances): sky, ground."""
        self.label[sl] = label
        self.instance[sl] = label
        self.rgb[sl] = rgb

    def shade(self, texture: Texture, sl: tuple[slice, slice], mask: np.ndarray) -> np.ndarray:
        return TEXTURES[texture](self.fine[sl][mask], self.mid[sl][mask], self.coarse[sl][mask])

    def relabel(self, sl: tuple[slice, slice], mask: np.ndarray, label: int) -> None:
        """Give the masked pixels a label without painting them: what shows through a fence is labelled fence, as
        Cityscapes' polygons draw a fence whole."""
        self.label[sl][mask] = label
        self.instance[sl][mask] = label

    def paint(
        self, sl: tuple[slice, slice], mask: np.ndarray, label: int, colour: np.ndarray, shade: np.ndarray,
        instance: int | None = None,
    ) -> None:
        """Overwrite the masked pixels of the region `sl`: painter's order, the last one drawn is in front."""
        self.label[sl][mask] = label
        self.instance[sl][mask] = label if instance is None else instance
        self.rgb[sl][mask] = colour[None, :] * shade[:, None]


# Shades: per-pixel brightness factors from the noise fields (fine: per pixel, mid: ~1% of width, coarse: ~6%).
TEXTURES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "flat": lambda f, m, c: 1 + 0.035 * f + 0.05 * m + 0.04 * c,
    "leafy": lambda f, m, c: 0.35 + 0.75 / (1 + np.exp(-(2.2 * m + 1.1 * f))) + 0.05 * c,
    "glass": lambda f, m, c: 1 + 0.02 * f + 0.15 * c,
    "lamp": lambda f, m, c: 1 + 0.02 * f,
}


@dataclass(frozen=True, eq=False)
class Part:
    """A flat polygon in the world with its label, colour and texture; parts of a sprite draw in order."""

    verts: np.ndarray  # (n, 3) world points
    label: int  # raw Cityscapes id, or ERASE
    colour: np.ndarray  # (3,) RGB in [0, 1]
    instance: int | None = None
    texture: Texture = "flat"


@dataclass(frozen=True, eq=False)
class Sprite:
    """One object: its parts and the depth that sorts it into painter's order (far ones first)."""

    depth: float
    parts: tuple[Part, ...]


def _bbox(points: np.ndarray, cam: Camera) -> tuple[int, int, int, int] | None:
    c0, r0 = np.floor(points.min(0)).astype(int)
    c1, r1 = np.ceil(points.max(0)).astype(int) + 1
    c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, cam.width), min(r1, cam.height)
    return (r0, r1, c0, c1) if r1 > r0 and c1 > c0 else None


def paint_parts(canvas: Canvas, cam: Camera, sprite: Sprite) -> None:
    """Rasterise a sprite's polygons into one index mask with PIL, then paint each part's pixels."""
    projected = [cam.project(part.verts) for part in sprite.parts]
    box = _bbox(np.concatenate(projected), cam)
    if box is None:
        return
    r0, r1, c0, c1 = box
    index = Image.new("L", (c1 - c0, r1 - r0), 0)
    draw = ImageDraw.Draw(index)
    for k, (part, pts) in enumerate(zip(sprite.parts, projected, strict=True)):
        draw.polygon((pts - (c0, r0)).ravel().tolist(), fill=0 if part.label == ERASE else k + 1)
    parts = np.asarray(index)
    sl = (slice(r0, r1), slice(c0, c1))
    for k, part in enumerate(sprite.parts):
        mask = parts == k + 1
        if part.label != ERASE and mask.any():
            canvas.paint(sl, mask, part.label, part.colour, canvas.shade(part.texture, sl, mask), part.instance)


# Plane coordinates: invert the projection for every pixel of a region.
def pixel_grid(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
    cols = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5
    return rows, cols


def side_plane_coords(cam: Camera, x: float, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels -> (z, y) on the vertical plane at lateral position x (parallel to the street); z<=0 off the plane."""
    dx = cols - cam.centre
    z = np.where(dx * x > 0, cam.focal * x / np.where(dx == 0, 1e-3, dx), -1.0)
    y = cam.eye - (rows - cam.horizon) * z / cam.focal
    return np.broadcast_to(z, y.shape), y


def front_plane_coords(cam: Camera, z: float, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels -> (x, y) on the vertical plane facing the camera at depth z."""
    shape = (rows.shape[0], cols.shape[1])
    x = (cols - cam.centre) * z / cam.focal
    y = cam.eye - (rows - cam.horizon) * z / cam.focal
    return np.broadcast_to(x, shape), np.broadcast_to(y, shape)


def ground_coords(cam: Camera, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels below the horizon -> (x, z) on the road plane."""
    z = cam.focal * cam.eye / np.maximum(rows - cam.horizon, 1e-3)
    return (cols - cam.centre) * z / cam.focal, np.broadcast_to(z, (rows.shape[0], cols.shape[1]))


@dataclass(frozen=True, eq=False)
class Facade:
    """A building front: wall colour with a grid of windows, in metric plane coordinates (u along, v up)."""

    colour: np.ndarray
    glass: np.ndarray
    bay: float  # window spacing along the facade, metres
    storey: float  # floor height, metres
    window: tuple[float, float]  # window width and height as fractions of bay and storey
    shopfront: float  # height of the ground floor, whose windows are wide

    def windows(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        fu = np.mod(u / self.bay, 1.0)
        fv = np.mod((v - self.shopfront) / self.storey, 1.0)
        upper = (v > self.shopfront + 0.4) & (np.abs(fu - 0.5) < self.window[0] / 2) & (fv > 0.3)
        upper &= fv < 0.3 + self.window[1] * 0.7
        shop = (v > 0.4) & (v < self.shopfront - 0.6) & (np.mod(u / (2 * self.bay), 1.0) > 0.2)
        return upper | shop


def paint_facade_region(
    canvas: Canvas, sl: tuple[slice, slice], inside: np.ndarray, u: np.ndarray, v: np.ndarray, facade: Facade
) -> None:
    label = raw_id("building")
    canvas.paint(sl, inside, label, facade.colour, canvas.shade("flat", sl, inside))
    glass = inside & facade.windows(u, v)
    canvas.paint(sl, glass, label, facade.glass, canvas.shade("glass", sl, glass))


def side_region(
    cam: Camera, x: float, z0: float, z1: float, top: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, np.ndarray] | None:
    """The pixels of the street-parallel rectangle x = const, z0 <= z <= z1, 0 <= y <= top, with plane coords."""
    corners = np.array([[x, 0, z0], [x, top, z0], [x, 0, z1], [x, top, z1]], np.float32)
    box = _bbox(cam.project(corners), cam)
    if box is None:
        return None
    rows, cols = pixel_grid(*box)
    z, y = side_plane_coords(cam, x, rows, cols)
    inside = (z >= z0) & (z <= z1) & (y >= 0) & (y <= top)
    return (slice(box[0], box[1]), slice(box[2], box[3])), inside, z, y


def paint_side_building(canvas: Canvas, cam: Camera, x: float, z0: float, z1: float, top: float, f: Facade) -> None:
    region = side_region(cam, x, z0, z1, top)
    if region is not None:
        sl, inside, z, y = region
        paint_facade_region(canvas, sl, inside, z, y, f)


def paint_side_band(
    canvas: Canvas, cam: Camera, x: float, z0: float, z1: float, top: float, label: int, colour: np.ndarray,
    texture: Texture, keep: Keep | None = None, see_through: bool = False,
) -> None:
    """A street-parallel band (hedge, wall, fence); `keep(z, y)` carves its shape (canopy edge, fence lattice).
    With `see_through`, the carved-out gaps keep their pixels but take the band's label (a fence's mesh)."""
    region = side_region(cam, x, z0, z1, top)
    if region is None:
        return
    sl, inside, z, y = region
    if keep is not None:
        if see_through:
            canvas.relabel(sl, inside, label)
        inside &= keep(z, y)
    canvas.paint(sl, inside, label, colour, canvas.shade(texture, sl, inside))


def paint_front_building(canvas: Canvas, cam: Camera, z: float, x0: float, x1: float, top: float, f: Facade) -> None:
    corners = np.array([[x0, 0, z], [x1, top, z]], np.float32)
    box = _bbox(cam.project(corners), cam)
    if box is None:
        return
    rows, cols = pixel_grid(*box)
    x, y = front_plane_coords(cam, z, rows, cols)
    inside = (x >= x0) & (x <= x1) & (y >= 0) & (y <= top)
    paint_facade_region(canvas, (slice(box[0], box[1]), slice(box[2], box[3])), inside, x, y, f)
