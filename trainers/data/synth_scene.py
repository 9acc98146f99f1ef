"""One generated road scene: a street layout sampled from a numpy Generator, drawn far to near.

A camera in the right-hand lane looks down a straight street: road with lane markings, then on each side an
optional verge (terrain or parking), a sidewalk, an optional garden (terrain), and the facade line of buildings,
tree rows and walls, perhaps closed far away by a cross building. Vehicles drive in the lanes or park at the kerb,
people walk on the sidewalks and cross at a zebra crossing, poles carry lamps, signs and traffic lights. Sky, ground
and facades are painted first; everything else is a sprite painted in order of decreasing depth, so near objects
occlude far ones. Lighting, soft shadows and sensor noise are applied last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainers.data import synth_objects as obj
from trainers.data.synth_draw import (
    Camera,
    Canvas,
    Facade,
    Keep,
    Sprite,
    ground_coords,
    paint_front_building,
    paint_parts,
    paint_side_band,
    paint_side_building,
    pixel_grid,
    raw_id,
    smooth_noise,
)

LANE = 3.2  # lane width in metres; the camera drives in the middle of a lane at x = 0
# Rare by count, not by size: the small rare things stand near the camera, so that each covers a few cells of a
# stride-8 model at the tiny preset's 96x192 (a person 30 m away is 3 pixels wide there, and no model learns it).
NEAR = (6.0, 16.0)  # depths of cyclists and sign posts
WALKERS = (5.5, 10.0)  # people on foot: thin, so nearer still
FOCAL = (1.2, 1.45)  # focal length / image width: a little longer than Cityscapes' 1.1, so fewer, larger things
ROAD, SIDEWALK, PARKING, TERRAIN = raw_id("road"), raw_id("sidewalk"), raw_id("parking"), raw_id("terrain")


@dataclass(frozen=True, eq=False)
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    label: np.ndarray  # (H, W) uint8 raw Cityscapes label ids
    instance: np.ndarray  # (H, W) int32 Cityscapes instance ids


@dataclass(frozen=True)
class Side:
    """One side of the street, from the road edge outwards (widths in metres)."""

    sign: float  # -1 left, +1 right
    edge: float  # |x| of the road edge
    verge: float  # strip between road and sidewalk (0 = none)
    verge_label: int  # terrain or parking
    sidewalk: float
    garden: float  # terrain between sidewalk and facade (0 = none)

    @property
    def kerb(self) -> float:
        return self.edge + self.verge  # |x| where the sidewalk starts

    @property
    def facade(self) -> float:
        return self.kerb + self.sidewalk + self.garden


@dataclass(frozen=True)
class Street:
    sides: tuple[Side, Side]  # left, right
    lanes: tuple[float, ...]  # x of lane centres
    end: float | None  # depth of the cross building closing the street
    crossing: float | None  # depth of a zebra crossing


def sample_camera(rng: np.random.Generator, size: tuple[int, int]) -> Camera:
    h, w = size
    return Camera(h, w, horizon=h * rng.uniform(0.36, 0.47), centre=w * rng.uniform(0.42, 0.58),
                  focal=w * rng.uniform(*FOCAL), eye=rng.uniform(1.2, 1.45))


def sample_side(rng: np.random.Generator, sign: float, lanes: int) -> Side:
    verge = rng.uniform(1.0, 3.0) if rng.random() < 0.35 else 0.0
    verge_label = raw_id("parking") if rng.random() < 0.25 else raw_id("terrain")
    garden = rng.uniform(1.0, 4.0) if rng.random() < 0.3 else 0.0
    return Side(sign, LANE / 2 + LANE * lanes, verge, verge_label, rng.uniform(1.5, 3.5), garden)


def sample_street(rng: np.random.Generator) -> Street:
    left, right = int(rng.choice(3, p=[0.3, 0.5, 0.2])), int(rng.random() < 0.4)
    lanes = tuple(LANE * k for k in range(-left, right + 1))
    end = rng.uniform(50, 180) if rng.random() < 0.55 else None
    crossing = rng.uniform(10, 28) if rng.random() < 0.5 else None
    return Street((sample_side(rng, -1.0, left), sample_side(rng, 1.0, right)), lanes, end, crossing)


# --- sky, ground, facades ---------------------------------------------------------------------------------------
SKIES = np.array([  # zenith, horizon
    [(0.3, 0.5, 0.85), (0.68, 0.78, 0.9)], [(0.72, 0.74, 0.78), (0.86, 0.86, 0.88)],
    [(0.55, 0.52, 0.6), (0.92, 0.76, 0.6)], [(0.45, 0.5, 0.55), (0.6, 0.62, 0.62)],
], np.float32)


def paint_sky(rng: np.random.Generator, canvas: Canvas, cam: Camera) -> None:
    zenith, horizon = SKIES[rng.integers(len(SKIES))] * rng.uniform(0.85, 1.1)
    rows = int(np.ceil(cam.horizon))  # the ground covers everything below
    t = (np.arange(rows, dtype=np.float32) / max(cam.horizon, 1.0))[:, None, None]
    clouds = np.clip(canvas.coarse[:rows] * rng.uniform(0.2, 0.6) - rng.uniform(0.0, 0.5), 0, 1)[..., None]
    rgb = (zenith * (1 - t) + horizon * t) * (1 - clouds) + rng.uniform(0.7, 0.95) * clouds
    canvas.fill((slice(0, rows), slice(0, cam.width)), np.full(rgb.shape[:2], raw_id("sky"), np.uint8), rgb)


def grey(rng: np.random.Generator, low: float, high: float, warm: float = 0.0) -> np.ndarray:
    g = rng.uniform(low, high)
    return np.clip(g * (1 + rng.normal(0, 0.03, 3) + warm * np.array([0.12, 0.0, -0.08])), 0, 1).astype(np.float32)


def ground_labels(street: Street, x: np.ndarray) -> np.ndarray:
    """Raw label ids of the road plane: bands of distance from the centre line, per side."""
    label = np.full(x.shape, ROAD, np.uint8)
    for side in street.sides:
        d = x * side.sign
        label[d >= side.edge] = side.verge_label
        label[d >= side.kerb] = SIDEWALK
        label[d >= side.kerb + side.sidewalk] = TERRAIN
    return label


def paint_ground(rng: np.random.Generator, canvas: Canvas, cam: Camera, street: Street) -> None:
    """Road, verges, sidewalks and gardens; paving tiles, kerb stones and lane markings in road coordinates."""
    r0 = int(np.ceil(cam.horizon))
    rows, cols = pixel_grid(r0, cam.height, 0, cam.width)
    x, z = ground_coords(cam, rows, cols)
    sl = (slice(r0, cam.height), slice(0, cam.width))
    label = ground_labels(street, x)
    colours = np.zeros((256, 3), np.float32)
    colours[ROAD] = grey(rng, 0.22, 0.55)
    colours[PARKING] = colours[ROAD] * rng.uniform(0.85, 1.15)
    colours[SIDEWALK] = grey(rng, 0.3, 0.68, warm=float(rng.random() < 0.3))
    colours[TERRAIN] = obj.pick(rng, obj.FOLIAGE[[0, 1, 3, 5, 8]])
    fine, mid, coarse = canvas.fine[sl], canvas.mid[sl], canvas.coarse[sl]
    tile = rng.uniform(0.4, 0.9)
    seams = (np.mod(x / tile, 1.0) < 0.08) | (np.mod(z / tile, 1.0) < 0.08)
    kerb = np.where(x < 0, -x - street.sides[0].kerb, x - street.sides[1].kerb) < 0.25
    walk = (1 + 0.04 * fine + 0.05 * coarse) * np.where(seams, 0.85, 1.0) * np.where(kerb, 1.12, 1.0)
    soil = 0.8 + 0.2 * np.tanh(mid) + 0.06 * fine
    shade = np.where(label == SIDEWALK, walk, np.where(label == TERRAIN, soil, 1 + 0.07 * fine + 0.08 * coarse))
    rgb = colours[label] * shade[..., None]
    marks = np.zeros(label.shape, bool)
    for lane_line in np.array(street.lanes[:-1]) + LANE / 2:
        marks |= (np.abs(x - lane_line) < 0.08) & (np.mod(z, 9.0) < 3.0)
    if street.crossing is not None:
        marks |= (z > street.crossing) & (z < street.crossing + 3.5) & (np.mod(x, 1.0) < 0.5)
    marks &= label == ROAD
    rgb[marks] = grey(rng, 0.75, 0.95) * (1 + 0.04 * fine[marks, None])
    canvas.fill(sl, label, rgb)


def facade_style(rng: np.random.Generator) -> Facade:
    return Facade(colour=obj.pick(rng, obj.SURFACE), glass=obj.pick(rng, obj.GLASS, 0.03),
                  bay=rng.uniform(2.2, 4.0), storey=rng.uniform(2.8, 3.6),
                  window=(rng.uniform(0.3, 0.7) if rng.random() < 0.9 else 0.0, rng.uniform(0.4, 0.8)),
                  shopfront=rng.uniform(3.5, 4.8))


def canopy(rng: np.random.Generator, base: float, amplitude: float) -> Keep:
    """The wavy top edge of a row of tree crowns."""
    f1, f2, p1, p2 = rng.uniform(0.3, 0.9), rng.uniform(0.9, 2.5), rng.uniform(0, 6.3), rng.uniform(0, 6.3)

    def keep(z: np.ndarray, y: np.ndarray) -> np.ndarray:
        return y <= base + amplitude * (0.6 * np.sin(f1 * z + p1) + 0.4 * np.sin(f2 * z + p2))

    return keep


def paint_facades(rng: np.random.Generator, canvas: Canvas, cam: Camera, street: Street) -> None:
    """Each side: segments of building, tree mass or wall-with-trees, painted far to near; then the far end."""
    far = street.end if street.end is not None else 300.0
    if street.end is not None:
        paint_front_building(canvas, cam, far, -street.sides[0].facade - 40, street.sides[1].facade + 40,
                             rng.uniform(8, 30), facade_style(rng))
    for side in street.sides:
        x, cuts = side.sign * side.facade, [2.0]
        while cuts[-1] < far:
            cuts.append(min(far, cuts[-1] + rng.uniform(8, 35)))
        for z0, z1 in reversed(list(zip(cuts[:-1], cuts[1:], strict=True))):
            kind = rng.choice(3, p=[0.72, 0.21, 0.07])
            if kind == 0:
                paint_side_building(canvas, cam, x, z0, z1, rng.uniform(7, 28), facade_style(rng))
                continue
            top = rng.uniform(4, 12)
            paint_side_band(canvas, cam, x + side.sign * 1.5 * (kind == 2), z0, z1, top + 3, raw_id("vegetation"),
                            obj.pick(rng, obj.FOLIAGE), "leafy", canopy(rng, top, rng.uniform(1, 3)))
            if kind == 2:
                paint_side_band(canvas, cam, x, z0, z1, rng.uniform(1.2, 3.0), raw_id("wall"),
                                obj.pick(rng, obj.SURFACE), "flat")


def lattice(top: float, post: float, mesh: float) -> Keep:
    """A fence: two rails, posts and vertical bars; the gaps between bars show what is behind."""
    def keep(z: np.ndarray, y: np.ndarray) -> np.ndarray:
        rails = (np.abs(y - 0.15) < 0.05) | (y > top - 0.1)
        return rails | (np.mod(z, post) < 0.12) | (np.mod(z, mesh) < mesh * 0.5)

    return keep


def paint_boundaries(rng: np.random.Generator, canvas: Canvas, cam: Camera, street: Street) -> None:
    """Fences or low walls between a sidewalk and the garden or facade behind it."""
    for side in street.sides:
        if rng.random() > (0.45 if side.garden else 0.18):
            continue
        x, z0 = side.sign * (side.kerb + side.sidewalk), rng.uniform(3, 25)
        z1, top = z0 + rng.uniform(10, 60), rng.uniform(0.9, 2.0)
        if rng.random() < 0.8:
            paint_side_band(canvas, cam, x, z0, z1, top, raw_id("fence"), obj.pick(rng, obj.SURFACE), "flat",
                            lattice(top, rng.uniform(1.5, 3.0), rng.uniform(0.2, 0.4)), see_through=True)
        else:
            paint_side_band(canvas, cam, x, z0, z1, top, raw_id("wall"), obj.pick(rng, obj.SURFACE), "flat")


# --- sprites ----------------------------------------------------------------------------------------------------
def kerbside(rng: np.random.Generator, side: Side, depth: tuple[float, float], offset: float) -> tuple[float, float]:
    """A point on a sidewalk `offset` metres in from the kerb (kept on the sidewalk), at a depth in `depth`."""
    return side.sign * (side.kerb + min(offset, side.sidewalk - 0.3)), rng.uniform(*depth)


def furniture(rng: np.random.Generator, canvas: Canvas, street: Street) -> list[Sprite]:
    """Trees, lamp posts, sign posts, traffic lights and bins along the sidewalks."""
    out: list[Sprite] = []
    junctions = [street.crossing - 0.5] if street.crossing is not None else []
    if street.end is not None and rng.random() < 0.5:
        junctions.append(street.end - 6)  # where the street meets the cross street
    for side in street.sides:
        if rng.random() < 0.35:
            for z in np.arange(rng.uniform(5, 12), 90, rng.uniform(7, 15)):
                out.append(obj.tree(rng, side.sign * (side.kerb + min(0.9, side.sidewalk / 2)), z))
        kerb = side.sign * (side.kerb + 0.4)
        for z in np.arange(rng.uniform(8, 25), 70, rng.uniform(30, 50)):  # street lamps
            out.append(obj.pole(rng, canvas, kerb, z, tall=True, signs=int(rng.random() < 0.2)))
        for z in junctions:
            if rng.random() < 0.9:
                out.append(obj.pole(rng, canvas, kerb, z, tall=False, lights=1))
        for _ in range(rng.poisson(0.5)):
            x, z = kerbside(rng, side, NEAR, 0.5)
            signs, lights = 1 + int(rng.random() < 0.3), int(rng.random() < 0.2)
            out.append(obj.pole(rng, canvas, x, z, tall=False, signs=signs, lights=lights))
        for _ in range(rng.poisson(0.4)):
            out.append(obj.bin_or_box(rng, *kerbside(rng, side, (5, 50), rng.uniform(0.5, 2.5))))
    return out


def parked_cars(rng: np.random.Generator, canvas: Canvas, street: Street) -> tuple[list[Sprite], set[float]]:
    """Rows of cars along the kerb, on a parking verge or in the outer lane; returns the lane centres they block."""
    out: list[Sprite] = []
    blocked: set[float] = set()
    for side in street.sides:
        on_verge = side.verge_label == PARKING and side.verge > 0
        if not (on_verge or (side.edge > LANE and rng.random() < 0.6)):
            continue
        x = side.sign * (side.edge + side.verge / 2 if on_verge else side.edge - 1.1)
        if not on_verge:
            blocked.add(round(side.sign * (side.edge - LANE / 2), 3))
        z = rng.uniform(5, 15)
        while z < 70:
            kind = "motorcycle" if rng.random() < 0.06 else "car"
            if kind == "motorcycle":
                out.append(obj.cyclist(rng, canvas, kind, x, z, riding=False, rear_view=False))
            else:
                out.append(obj.vehicle(rng, canvas, kind, x, z))
            z += rng.uniform(5.0, 9.0) + (rng.uniform(5, 20) if rng.random() < 0.25 else 0.0)
    return out, blocked


def traffic(rng: np.random.Generator, canvas: Canvas, street: Street, tram: bool) -> list[Sprite]:
    """Parked cars, perhaps a tram, and vehicles driving in the lanes (the camera's own lane is clear for 14 m)."""
    out, blocked = parked_cars(rng, canvas, street)
    if tram:
        lane = street.lanes[0]  # the leftmost lane: oncoming traffic, or the camera's own
        out.append(obj.vehicle(rng, canvas, "train", lane, rng.uniform(18, 45)))
        blocked.add(round(lane, 3))
    kinds, weights = ["car", "truck", "bus", "motorcycle"], [0.87, 0.03, 0.04, 0.06]
    for lane in street.lanes:
        if round(lane, 3) in blocked:
            continue
        gaps = rng.uniform(12, 50, size=4)  # bumper to bumper and then some
        for z in (14 if lane == 0 else 6) + np.cumsum(gaps) - gaps[0] * rng.uniform(0.6, 1.0):
            if z > 90:
                break
            kind = str(rng.choice(kinds, p=weights))
            if kind == "motorcycle":
                out.append(obj.cyclist(rng, canvas, kind, lane + rng.normal(0, 0.4), z, riding=True, rear_view=True))
            else:  # big vehicles keep 10 m away, or one alone would fill the frame
                out.append(obj.vehicle(rng, canvas, kind, lane + rng.normal(0, 0.2), max(z, 10.0 * (kind != "car"))))
    return out


def people(rng: np.random.Generator, canvas: Canvas, street: Street) -> list[Sprite]:
    """Pedestrians on the sidewalks and the crossing; cyclists in the road; bicycles parked on the sidewalk."""
    out: list[Sprite] = []
    left, right = street.sides
    for _ in range(rng.poisson(1.3)):
        side = street.sides[int(rng.integers(2))]
        out.append(obj.pedestrian(rng, canvas, *kerbside(rng, side, WALKERS, rng.uniform(0.3, 4.0))))
    if street.crossing is not None and street.crossing < 18:
        for _ in range(rng.poisson(0.8)):
            x = rng.uniform(-left.edge, right.edge)
            out.append(obj.pedestrian(rng, canvas, x, street.crossing + rng.uniform(0.5, 3.0)))
    for _ in range(rng.poisson(0.5)):
        crossing = rng.random() < 0.5  # seen from the side, crossing the street
        x = rng.uniform(-left.edge, right.edge) if crossing else right.edge - 0.8
        kind = "motorcycle" if rng.random() < 0.3 else "bicycle"
        out.append(obj.cyclist(rng, canvas, kind, x, rng.uniform(*NEAR), riding=True, rear_view=not crossing))
    if rng.random() < 0.25:  # a bicycle stand
        x, z = kerbside(rng, street.sides[int(rng.integers(2))], (5, 18), 1.0)
        for k in range(int(rng.integers(1, 4))):
            out.append(obj.cyclist(rng, canvas, "bicycle", x, z + 0.7 * k, riding=False, rear_view=False))
    return out


# --- the whole picture ------------------------------------------------------------------------------------------
def paint_hood(rng: np.random.Generator, canvas: Canvas) -> None:
    """The ego vehicle's bonnet along the bottom edge, as in Cityscapes (label `ego vehicle`, ignored)."""
    h, w = canvas.label.shape
    cols = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1
    top = h * (1 - rng.uniform(0.05, 0.13) * (1 - 0.4 * cols**2))
    rows = np.arange(h, dtype=np.float32)[:, None] + 0.5
    mask = rows >= top[None, :]
    shade = np.broadcast_to(1.2 - 0.5 * (rows - top.min()) / max(h - top.min(), 1.0), mask.shape)[mask]
    canvas.paint((slice(0, h), slice(0, w)), mask, raw_id("ego vehicle"), obj.pick(rng, obj.SURFACE) * 0.7, shade)


def expose(rng: np.random.Generator, canvas: Canvas) -> np.ndarray:
    """Soft cast shadows, a global exposure and colour cast, sensor noise; float RGB -> uint8."""
    h, w = canvas.label.shape
    shadow = 1 - rng.uniform(0.0, 0.45) / (1 + np.exp(-4 * (smooth_noise(rng, h, w, w / 5) - 0.3)))
    shadow[canvas.label == raw_id("sky")] = 1.0
    gain = (rng.uniform(0.6, 1.25) * np.exp(rng.normal(0, 0.07, 3))).astype(np.float32) * 255
    rgb = canvas.rgb * (shadow[..., None] * gain)
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * (0.015 * 255) + 0.5
    return np.clip(rgb, 0, 255).astype(np.uint8)


def render_scene(rng: np.random.Generator, size: tuple[int, int], *, tram: bool = False) -> Scene:
    """Draw one street scene of the given (height, width); `tram` adds the rare `train` class."""
    cam, street = sample_camera(rng, size), sample_street(rng)
    canvas = Canvas(rng, *size)
    paint_sky(rng, canvas, cam)
    paint_ground(rng, canvas, cam, street)
    paint_facades(rng, canvas, cam, street)
    paint_boundaries(rng, canvas, cam, street)
    sprites = furniture(rng, canvas, street) + traffic(rng, canvas, street, tram) + people(rng, canvas, street)
    for sprite in sorted(sprites, key=lambda s: -s.depth):
        paint_parts(canvas, cam, sprite)
    if rng.random() < 0.7:
        paint_hood(rng, canvas)
    return Scene(expose(rng, canvas), canvas.label, canvas.instance)
