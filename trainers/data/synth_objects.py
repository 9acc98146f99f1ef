"""The things in a generated road scene, as sprites of flat 3-D polygons: vehicles, people, two-wheelers, poles,
signs, traffic lights, trees.

Shapes are drawn in a local 2-D frame in metres (u across, v up) and placed either `facing` the camera (a plane at
depth z) or `along` the street (a plane at lateral position x). Colours come from palettes shared across classes:
cars, trucks, buses, trams, walls, buildings and clothes all draw from `SURFACE`, so only shape and context tell
them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from trainers.data.synth_draw import ERASE, Canvas, Part, Sprite, Texture, raw_id

Shape = np.ndarray  # (n, 2) points (u, v) in metres

# Thin things drawn thicker than life, so that each instance covers a few cells of a stride-8 model at the tiny
# preset's resolution (a real pole, 0.1 m wide, is under two pixels at 96x192 even 10 m away): pole width in metres,
# traffic-sign size, the traffic-light scale and the bicycle's tube width. They stay rare through their count.
LEGIBLE_POLE = (0.2, 0.32)
LEGIBLE_SIGN = (0.8, 1.2)
LEGIBLE_LIGHT = 1.8
LEGIBLE_TUBE = 0.11
LEGIBLE_FIGURE = 1.35  # people's limbs and torso this much broader than life (coats, bags): two cells at 10 m
LEGIBLE_MOTORCYCLE = 1.3  # motorcycles (and their riders) this much larger than life


def _rgb(*values: tuple[float, float, float]) -> np.ndarray:
    return np.array(values, np.float32)


SURFACE = _rgb(
    (0.86, 0.86, 0.84), (0.66, 0.66, 0.66), (0.55, 0.57, 0.6), (0.32, 0.32, 0.34), (0.09, 0.09, 0.1),
    (0.78, 0.7, 0.55), (0.68, 0.6, 0.46), (0.45, 0.31, 0.21), (0.6, 0.3, 0.22), (0.7, 0.12, 0.1),
    (0.85, 0.47, 0.16), (0.85, 0.76, 0.25), (0.34, 0.42, 0.22), (0.16, 0.3, 0.19), (0.16, 0.26, 0.6),
    (0.1, 0.12, 0.3), (0.5, 0.65, 0.8), (0.8, 0.62, 0.6),
)
FOLIAGE = _rgb(
    (0.22, 0.36, 0.13), (0.3, 0.45, 0.18), (0.16, 0.25, 0.11), (0.4, 0.42, 0.2), (0.62, 0.46, 0.16),
    (0.5, 0.3, 0.13), (0.14, 0.18, 0.11), (0.22, 0.34, 0.3), (0.45, 0.5, 0.3),
)
GLASS = _rgb((0.1, 0.12, 0.15), (0.25, 0.32, 0.4), (0.55, 0.62, 0.7), (0.7, 0.6, 0.42), (0.18, 0.2, 0.2))
SKIN = _rgb((0.86, 0.66, 0.52), (0.62, 0.43, 0.31), (0.36, 0.26, 0.19), (0.15, 0.12, 0.1))
SIGNAL = _rgb((1.0, 0.16, 0.1), (1.0, 0.7, 0.12), (0.25, 1.0, 0.55))
SIGN = _rgb((0.75, 0.1, 0.1), (0.9, 0.9, 0.88), (0.12, 0.3, 0.7), (0.9, 0.78, 0.15), (0.1, 0.45, 0.25))
TYRE = np.array((0.06, 0.06, 0.07), np.float32)
DARK = SURFACE[[3, 4]]  # dark grey, black: bumpers, housings, frames
BARK = SURFACE[[3, 4, 5, 6, 7]]
POLE_PAINT = SURFACE[[1, 2, 3, 4, 13]]  # greys, black, dark green


def pick(rng: np.random.Generator, palette: np.ndarray, jitter: float = 0.05) -> np.ndarray:
    """A palette entry with its own brightness and a small per-channel shift: one colour per instance."""
    colour = palette[rng.integers(len(palette))] * rng.uniform(0.75, 1.2) + rng.normal(0, jitter, 3)
    return np.clip(colour, 0.02, 1.0).astype(np.float32)


# --- 2-D shapes -------------------------------------------------------------------------------------------------
def rect(u0: float, v0: float, u1: float, v1: float) -> Shape:
    return np.array([(u0, v0), (u1, v0), (u1, v1), (u0, v1)], np.float32)


def ellipse(cu: float, cv: float, ru: float, rv: float, n: int = 12, wobble: np.ndarray | None = None) -> Shape:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    scale = 1.0 if wobble is None else wobble
    return np.stack([cu + ru * scale * np.cos(t), cv + rv * scale * np.sin(t)], 1).astype(np.float32)


def bar(p: tuple[float, float], q: tuple[float, float], width: float) -> Shape:
    """A quad of the given width around the segment p-q: limbs, tubes, rails."""
    d = np.subtract(q, p, dtype=np.float32)
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-6) * width / 2
    return np.array([p + n, q + n, q - n, p - n], np.float32)


def trapezoid(u0: float, u1: float, v0: float, v1: float, inset: float) -> Shape:
    return np.array([(u0, v0), (u1, v0), (u1 - inset, v1), (u0 + inset, v1)], np.float32)


def facing(shape: Shape, x: float, z: float, mirror: bool = False) -> np.ndarray:
    u = -shape[:, 0] if mirror else shape[:, 0]
    return np.stack([x + u, shape[:, 1], np.full(len(shape), z, np.float32)], 1)


def along(shape: Shape, x: float, z: float) -> np.ndarray:
    return np.stack([np.full(len(shape), x, np.float32), shape[:, 1], z + shape[:, 0]], 1)


Piece = tuple[Shape, str]  # a shape and its role, which picks its colour: body, glass, tyre, dark, light, skin, ...


ROLE_TEXTURE: dict[str, Texture] = {"glass": "glass", "light": "lamp", "crown": "leafy", "spokes": "glass"}  # else flat


def parts(
    pieces: Sequence[Piece], place: Callable[[Shape], np.ndarray], label: int, instance: int | None,
    colours: dict[str, np.ndarray],
) -> list[Part]:
    """Place 2-D pieces into the world and colour them by role (tyre when unnamed); `erase` pieces cut holes."""
    return [
        Part(place(shape), ERASE if role == "erase" else label, colours.get(role, TYRE), instance,
             ROLE_TEXTURE.get(role, "flat"))
        for shape, role in pieces
    ]


# --- vehicles ---------------------------------------------------------------------------------------------------
def car_end(w: float, h: float) -> list[Piece]:
    return [
        (rect(-w / 2 + 0.05, 0, -w / 2 + 0.3, 0.34), "tyre"), (rect(w / 2 - 0.3, 0, w / 2 - 0.05, 0.34), "tyre"),
        (rect(-w / 2, 0.2, w / 2, 0.6 * h), "body"), (trapezoid(-0.44 * w, 0.44 * w, 0.6 * h, h, 0.1 * w), "body"),
        (trapezoid(-0.38 * w, 0.38 * w, 0.63 * h, 0.95 * h, 0.08 * w), "glass"),
        (rect(-w / 2, 0.2, w / 2, 0.33), "dark"),
        (rect(-w / 2 + 0.06, 0.45 * h, -w / 2 + 0.3, 0.55 * h), "light"),
        (rect(w / 2 - 0.3, 0.45 * h, w / 2 - 0.06, 0.55 * h), "light"),
    ]


def car_side(length: float, h: float) -> list[Piece]:
    cabin = trapezoid(0.16 * length, 0.84 * length, 0.6 * h, h, 0.14 * length)
    window = trapezoid(0.2 * length, 0.8 * length, 0.64 * h, 0.94 * h, 0.13 * length)
    wheels = [(ellipse(u, 0.32, 0.32, 0.32, 10), "tyre") for u in (0.19 * length, 0.8 * length)]
    return [(rect(0, 0.22, length, 0.6 * h), "body"), (cabin, "body"), (window, "glass"), *wheels]


def truck_end(w: float, h: float) -> list[Piece]:
    return [
        (rect(-w / 2 + 0.05, 0, -w / 2 + 0.5, 0.9), "tyre"), (rect(w / 2 - 0.5, 0, w / 2 - 0.05, 0.9), "tyre"),
        (rect(-w / 2 + 0.2, 0.3, w / 2 - 0.2, 1.0), "dark"), (rect(-w / 2, 1.0, w / 2, h), "body"),
        (rect(-0.03, 1.1, 0.03, h - 0.1), "dark"), (rect(-w / 2 + 0.1, 0.6, -w / 2 + 0.4, 0.8), "light"),
        (rect(w / 2 - 0.4, 0.6, w / 2 - 0.1, 0.8), "light"),
    ]


def truck_side(length: float, h: float) -> list[Piece]:
    axles = (0.9, 2.3, length - 1.3)
    return [
        (rect(0, 0.5, length, 1.0), "dark"), (rect(0, 1.0, length - 2.4, h), "body"),
        (rect(length - 2.3, 0.5, length, 3.0), "cab"), (rect(length - 1.3, 1.9, length - 0.15, 2.8), "glass"),
        *[(ellipse(u, 0.5, 0.5, 0.5, 10), "tyre") for u in axles],
    ]


def bus_end(w: float, h: float) -> list[Piece]:
    body = np.array([(-w / 2, 0.3), (w / 2, 0.3), (w / 2, h - 0.25), (w / 2 - 0.25, h), (-w / 2 + 0.25, h),
                     (-w / 2, h - 0.25)], np.float32)
    return [
        (rect(-w / 2 + 0.1, 0, -w / 2 + 0.45, 0.5), "tyre"), (rect(w / 2 - 0.45, 0, w / 2 - 0.1, 0.5), "tyre"),
        (body, "body"), (rect(-w / 2 + 0.15, 0.5 * h, w / 2 - 0.15, h - 0.25), "glass"),
        (rect(-w / 2, 0.3, w / 2, 0.55), "dark"), (rect(-w / 2 + 0.1, 0.7, -w / 2 + 0.35, 1.1), "light"),
        (rect(w / 2 - 0.35, 0.7, w / 2 - 0.1, 1.1), "light"),
    ]


def bus_side(length: float, h: float) -> list[Piece]:
    windows = [(rect(u, 1.35, u + 1.15, h - 0.35), "glass") for u in np.arange(0.4, length - 1.4, 1.4)]
    wheels = [(ellipse(u, 0.5, 0.5, 0.5, 10), "tyre") for u in (2.4, length - 2.9)]
    return [(rect(0, 0.3, length, h), "body"), (rect(0, 0.3, length, 0.6), "dark"), *windows, *wheels]


def tram_end(w: float, h: float) -> list[Piece]:
    pantograph = [(bar((-0.6, h), (0.0, h + 1.0), 0.06), "dark"), (bar((0.0, h + 1.0), (0.6, h + 1.6), 0.06), "dark")]
    return [
        (rect(-w / 2, 0.35, w / 2, h), "body"), (rect(-w / 2, 0.8, w / 2, 1.2), "cab"),
        (rect(-w / 2 + 0.2, 1.3, w / 2 - 0.2, h - 0.35), "glass"),
        (rect(-w / 2, 0.2, w / 2, 0.5), "dark"), (rect(-w / 2 + 0.15, 0.8, -w / 2 + 0.45, 1.0), "light"),
        (rect(w / 2 - 0.45, 0.8, w / 2 - 0.15, 1.0), "light"), *pantograph,
    ]


def tram_side(length: float, h: float) -> list[Piece]:
    """Sections joined by dark bellows, a livery band below the windows and a dark roof: what tells a tram's side from
    a facade or a bus."""
    windows = [(rect(u, 1.3, u + 1.2, h - 0.5), "glass") for u in np.arange(0.6, length - 1.5, 1.7)]
    joints = [(rect(u - 0.3, 0.35, u + 0.3, h), "dark") for u in (length / 3, 2 * length / 3)]
    bogies = [(rect(u, 0.0, u + 2.2, 0.45), "tyre") for u in (1.0, length / 2 - 1.1, length - 3.2)]
    return [(rect(0, 0.35, length, h), "body"), (rect(0, 0.8, length, 1.2), "cab"), (rect(0, h - 0.3, length, h),
            "dark"), *windows, *joints, *bogies]


VEHICLES = {  # label: (width, height, length ranges), end view, side view
    "car": ((1.7, 1.95), (1.4, 1.75), (3.9, 4.9), car_end, car_side),
    "truck": ((2.4, 2.55), (3.2, 4.0), (6.5, 9.5), truck_end, truck_side),
    "bus": ((2.5, 2.55), (3.0, 3.3), (11.0, 13.0), bus_end, bus_side),
    "train": ((2.3, 2.45), (3.3, 3.5), (24.0, 32.0), tram_end, tram_side),
}


def vehicle(rng: np.random.Generator, canvas: Canvas, kind: str, x: float, z: float) -> Sprite:
    """A box-shaped vehicle whose near end is at depth z, centred at x; its inner side shows when off-centre."""
    (w0, w1), (h0, h1), (l0, l1), end, side = VEHICLES[kind]
    w, h, length = rng.uniform(w0, w1), rng.uniform(h0, h1), rng.uniform(l0, l1)
    label = raw_id(kind)
    colours = {"body": pick(rng, SURFACE), "cab": pick(rng, SURFACE), "glass": pick(rng, GLASS, 0.03),
               "dark": np.float32(0.45) * pick(rng, DARK), "light": pick(rng, SIGNAL[:2], 0.02)}
    instance = canvas.new_instance(label)
    pieces: list[Part] = []
    if abs(x) > w / 2:  # the side facing the road centre is visible
        side_x = x - np.sign(x) * w / 2
        pieces += parts(side(length, h), lambda s: along(s, side_x, z), label, instance, colours)
    pieces += parts(end(w, h), lambda s: facing(s, x, z), label, instance, colours)
    return Sprite(z, tuple(pieces))


# --- people and two-wheelers ------------------------------------------------------------------------------------
Pose = Literal["walk", "ride_side", "ride_rear"]


def figure(rng: np.random.Generator, u: float, base: float, height: float, pose: Pose) -> list[Piece]:
    """A person: legs, torso, arm, head. Walkers stand on `base`; riders sit on a saddle at `base`, leaning forward
    (seen from the side) or with their legs apart down to the pedals (seen from behind)."""
    h, b = height, LEGIBLE_FIGURE
    if pose == "walk":
        hip, shoulder, lean = base + 0.5 * h, base + 0.81 * h, rng.normal(0, 0.01) * h
        stride = rng.uniform(0.0, 0.14) * h
        legs = [(bar((u, hip), (u + s, base), 0.085 * b * h), "legs") for s in (-stride / 2, stride / 2)]
        reach = (u + rng.normal(0, 0.06) * h, hip)
    elif pose == "ride_side":
        hip, lean = base + 0.05 * h, rng.uniform(0.08, 0.18) * h
        shoulder = hip + 0.3 * h
        knee = (u + 0.2 * h, hip - 0.1 * h)
        legs = [(bar((u, hip), knee, 0.09 * b * h), "legs"), (bar(knee, (u + 0.12 * h, 0.3), 0.08 * b * h), "legs")]
        reach = (u + lean + 0.3 * h, hip + 0.12 * h)
    else:
        hip, shoulder, lean = base + 0.05 * h, base + 0.33 * h, 0.0
        legs = [(bar((u + s * 0.05 * h, hip), (u + s * 0.12 * h, 0.3), 0.08 * b * h), "legs") for s in (-1, 1)]
        reach = (u + 0.2 * h, hip + 0.15 * h)
    top = u + lean
    torso = np.array([(u - 0.1 * b * h, hip), (u + 0.1 * b * h, hip), (top + 0.12 * b * h, shoulder),
                      (top - 0.12 * b * h, shoulder)], np.float32)
    arm = (bar((top, shoulder - 0.02 * h), reach, 0.06 * b * h), "torso")
    head = ellipse(top, shoulder + 0.1 * h, 0.065 * b * h, 0.085 * h, 10)
    return [*legs, (torso, "torso"), arm, (head, "skin")]


def two_wheeler(kind: str, rear_view: bool) -> list[Piece]:
    """A bicycle or motorcycle, side view (u = 0 at the rear axle) or seen from behind (u = 0 at its centre)."""
    if rear_view:
        tyre, body = (0.07, (0.09, 0.4, 0.9)) if kind == "bicycle" else (0.1, (0.26, 0.4, 1.0))
        return [(rect(-tyre, 0, tyre, 0.68), "tyre"), (rect(-body[0], body[1], body[0], body[2]), "body"),
                (bar((-0.34, 1.0), (0.34, 1.0), 0.08), "dark")]
    if kind == "bicycle":
        r, base = 0.34, 1.05
        seat, crank, head = (0.3, 0.85), (0.45, 0.3), (0.85, 0.88)
        frame = [(seat, (0.0, r)), (seat, crank), (crank, (0.0, r)), (crank, head), (seat, head), (head, (base, r))]
        # a tyre ring around a dark spoked disc: the bicycle's label covers its wheels whole, as Cityscapes' polygons
        rims = ((r, "tyre"), (r - 0.1, "spokes"))
        wheels = [(ellipse(u, r, q, q, 14), role) for u in (0.0, base) for q, role in rims]
        tubes = [(bar(p, q, LEGIBLE_TUBE), "body") for p, q in frame]
        return [*wheels, *tubes, (bar((0.74, 1.0), (0.98, 1.0), 0.09), "dark")]
    r, base = 0.32, 1.4
    body = np.array([(0.15, 0.45), (0.5, 0.78), (1.0, 0.92), (1.25, 0.78), (1.1, 0.45), (0.6, 0.35)], np.float32)
    return [(ellipse(0.0, r, r, r, 12), "tyre"), (ellipse(base, r, r, r, 12), "tyre"), (body, "body"),
            (rect(0.5, 0.3, 0.95, 0.6), "dark"), (bar((1.15, 0.95), (base, r), 0.07), "dark")]


def cyclist(
    rng: np.random.Generator, canvas: Canvas, kind: str, x: float, z: float, *, riding: bool, rear_view: bool
) -> Sprite:
    """A bicycle or motorcycle, with its rider on top when `riding` (a separate `rider` instance)."""
    label = raw_id(kind)
    colours = {"body": pick(rng, SURFACE), "dark": np.float32(0.5) * pick(rng, DARK),
               "spokes": np.float32(0.6) * pick(rng, SURFACE[[1, 2, 3]])}
    mirror = bool(rng.integers(2))
    centre = 0.0 if rear_view else (0.5 if kind == "bicycle" else 0.7)  # side views start at the rear axle
    scale = LEGIBLE_MOTORCYCLE if kind == "motorcycle" else 1.0

    def place(s: Shape) -> np.ndarray:
        return facing((s - (centre, 0.0)) * scale, x, z, mirror)

    out = parts(two_wheeler(kind, rear_view), place, label, canvas.new_instance(label), colours)
    if riding:
        rider, height = raw_id("rider"), rng.uniform(1.55, 1.85)
        dress = {"legs": pick(rng, SURFACE), "torso": pick(rng, SURFACE), "skin": pick(rng, SKIN)}
        saddle = (0.3 if kind == "bicycle" else 0.7, 0.85)
        u = 0.0 if rear_view else saddle[0]
        pose = figure(rng, u, saddle[1], height, "ride_rear" if rear_view else "ride_side")
        out += parts(pose, place, rider, canvas.new_instance(rider), dress)
    return Sprite(z, tuple(out))


def pedestrian(rng: np.random.Generator, canvas: Canvas, x: float, z: float) -> Sprite:
    label = raw_id("person")
    dress = {"legs": pick(rng, SURFACE), "torso": pick(rng, SURFACE), "skin": pick(rng, SKIN)}
    pose = figure(rng, 0.0, 0.0, rng.uniform(1.5, 1.92), "walk")
    return Sprite(z, tuple(parts(pose, lambda s: facing(s, x, z), label, canvas.new_instance(label), dress)))


# --- street furniture and trees ---------------------------------------------------------------------------------
def sign_shape(rng: np.random.Generator, v: float, size: float) -> list[Piece]:
    """A round, triangular, rectangular or octagonal sign centred `v` metres up: a rim and a face."""
    shape = int(rng.integers(4))
    r = size / 2
    if shape == 0:
        return [(ellipse(0, v, r, r, 14), "rim"), (ellipse(0, v, 0.75 * r, 0.75 * r, 14), "face")]
    if shape == 1:
        tri = np.array([(-r, v - 0.8 * r), (r, v - 0.8 * r), (0, v + r)], np.float32)
        return [(tri, "rim"), ((tri - (0, v)) * 0.65 + (0, v - 0.1 * r), "face")]
    if shape == 2:
        inner = rect(-0.85 * r, v - 0.55 * r, 0.85 * r, v + 0.55 * r)
        return [(rect(-r, v - 0.7 * r, r, v + 0.7 * r), "rim"), (inner, "face")]
    return [(ellipse(0, v, r, r, 8), "rim"), (ellipse(0, v, 0.85 * r, 0.85 * r, 8), "face")]


def pole(
    rng: np.random.Generator, canvas: Canvas, x: float, z: float, *, tall: bool, signs: int = 0, lights: int = 0
) -> Sprite:
    """A pole carrying signs and traffic lights, each labelled as its own class; tall ones are street lamps."""
    height = rng.uniform(5.5, 9.0) if tall else rng.uniform(4.4, 5.6) if lights else rng.uniform(2.8, 4.0)
    width, inward = rng.uniform(*LEGIBLE_POLE), -np.sign(x) or 1.0
    body = {"body": pick(rng, POLE_PAINT)}
    pieces = [(rect(-width / 2, 0, width / 2, height), "body")]
    if height > 6.5:  # a lamp arm reaching over the road
        arm_end = 1.6 * inward
        pieces += [(bar((0, height - 0.2), (arm_end, height + 0.1), 0.16), "body"),
                   (rect(arm_end - 0.35, height - 0.1, arm_end + 0.3, height + 0.2), "body")]
    out = parts(pieces, lambda s: facing(s, x, z), raw_id("pole"), None, body)
    for k in range(signs):
        colours = {"rim": pick(rng, SIGN, 0.03), "face": pick(rng, SIGN if rng.random() < 0.6 else SURFACE, 0.03)}
        shape = sign_shape(rng, rng.uniform(2.2, 2.8) + k * 1.5, rng.uniform(*LEGIBLE_SIGN))
        out += parts(shape, lambda s: facing(s, x, z - 0.05), raw_id("traffic sign"), None, colours)
    for k in range(lights):
        colours = {"body": pick(rng, DARK), "lens": np.float32(0.3) * pick(rng, DARK),
                   "light": pick(rng, SIGNAL, 0.02)}
        box = traffic_light(rng, min(height - 1.6, rng.uniform(2.4, 3.0) + 1.8 * k))
        out += parts(box, lambda s: facing(s, x, z - 0.1), raw_id("traffic light"), None, colours)
    return Sprite(z, tuple(out))


def traffic_light(rng: np.random.Generator, v: float) -> list[Piece]:
    """A housing with three lenses, one lit, its bottom `v` metres above the road (LEGIBLE_LIGHT times the size of a
    real one)."""
    lit, s = int(rng.integers(3)), LEGIBLE_LIGHT
    lamps = [(ellipse(0, v + s * (0.72 - 0.29 * k), s * 0.11, s * 0.11, 8), "light" if k == lit else "lens")
             for k in range(3)]
    return [(rect(-0.19 * s, v, 0.19 * s, v + 0.9 * s), "body"), *lamps]


def tree(rng: np.random.Generator, x: float, z: float) -> Sprite:
    """A trunk and a ragged crown, both `vegetation` as in Cityscapes."""
    radius, trunk = rng.uniform(1.3, 3.2), rng.uniform(1.8, 3.5)
    colours = {"trunk": pick(rng, BARK), "crown": pick(rng, FOLIAGE)}
    crown = ellipse(0, trunk + radius * 0.8, radius, radius * rng.uniform(0.8, 1.2), 18, rng.uniform(0.8, 1.1, 18))
    pieces = [(rect(-0.15, 0, 0.15, trunk + radius * 0.5), "trunk"), (crown, "crown")]
    return Sprite(z, tuple(parts(pieces, lambda s: facing(s, x, z), raw_id("vegetation"), None, colours)))


def bin_or_box(rng: np.random.Generator, x: float, z: float) -> Sprite:
    """Static clutter (bins, boxes): label `static`, ignored in training like in Cityscapes."""
    w, h = rng.uniform(0.5, 1.2), rng.uniform(0.6, 1.3)
    return Sprite(z, tuple(parts([(rect(-w / 2, 0, w / 2, h), "body")], lambda s: facing(s, x, z), raw_id("static"),
                                 None, {"body": pick(rng, SURFACE)})))
