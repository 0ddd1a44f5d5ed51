"""Procedural scene images, one painter per environment family (Pillow + numpy, no network).

Each painter draws a 224x224 RGB scene whose layout, palette, lighting and texture are
randomised from the seed, so scenes vary within a family yet keep the cues a small CNN can
learn (water colour and caustics, sky and rooftops, stair treads, rubble chunks, racking...).
Each scene also returns a caption built from what was drawn, for stage-1 image-text pairs.
Seeds: the generator draws scene seeds below DEV_SEED_BASE; the dev set uses seeds at or
above it, so dev images are never training images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 224
DEV_SEED_BASE = 10**12


@dataclass
class Scene:
    image: np.ndarray      # (224, 224, 3) uint8 RGB
    family: str
    caption: str


def _jit(rng, rgb, amount=25):
    d = rng.integers(-amount, amount + 1, size=3)
    return tuple(min(255, max(0, int(c) + int(x))) for c, x in zip(rgb, d))


def _gradient(top, bottom, h=SIZE):
    t = np.linspace(0.0, 1.0, h)[:, None]
    col = ((1 - t) * np.array(top, float) + t * np.array(bottom, float)).astype(np.uint8)
    return np.broadcast_to(col[:, None, :], (h, SIZE, 3))


def _canvas(rng, top, bottom, horizon=None, ground_top=None, ground_bottom=None):
    img = np.array(_gradient(_jit(rng, top), _jit(rng, bottom)))
    if horizon is not None:
        img[horizon:] = _gradient(_jit(rng, ground_top), _jit(rng, ground_bottom), SIZE - horizon)
    return Image.fromarray(img)


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


# --- painters: each returns (PIL image, caption words) ---------------------------------------
def _underwater(rng, d=None):
    im = _canvas(rng, (40, 140, 170), (5, 40, 60))
    d = ImageDraw.Draw(im, "RGBA")
    for _ in range(rng.integers(2, 5)):             # light shafts from the surface
        x = int(rng.integers(0, SIZE)); w = int(rng.integers(10, 40))
        d.polygon([(x, 0), (x + w, 0), (x + w * 3, SIZE), (x + w, SIZE)], fill=(180, 230, 240, 35))
    words = []
    if rng.random() < 0.7:
        for _ in range(rng.integers(1, 4)):
            x = int(rng.integers(10, 200)); d.rectangle([x, 0, x + int(rng.integers(12, 28)), SIZE], fill=_jit(rng, (40, 60, 55), 15) + (230,))
        words.append("submerged pilings")
    sand = int(rng.integers(170, 205))
    d.polygon([(0, sand), (SIZE, sand + int(rng.integers(-15, 15))), (SIZE, SIZE), (0, SIZE)], fill=_jit(rng, (120, 120, 80)) + (255,))
    for _ in range(rng.integers(3, 9)):              # fish
        x, y = int(rng.integers(0, 210)), int(rng.integers(30, 170)); c = _jit(rng, (230, 170, 60), 60)
        d.ellipse([x, y, x + 14, y + 6], fill=c + (255,)); d.polygon([(x, y + 3), (x - 5, y), (x - 5, y + 6)], fill=c + (255,))
    for _ in range(rng.integers(5, 20)):             # bubbles
        x, y, r = int(rng.integers(0, SIZE)), int(rng.integers(0, SIZE)), int(rng.integers(1, 4))
        d.ellipse([x - r, y - r, x + r, y + r], outline=(220, 240, 255, 180))
    return im, ["underwater view", "murky blue-green water", "fish", "sandy seabed"] + words


def _water_surface(rng):
    hz = int(rng.integers(50, 110))
    im = _canvas(rng, (150, 190, 230), (210, 225, 240), hz, (40, 90, 140), (20, 60, 110))
    d = ImageDraw.Draw(im, "RGBA")
    for _ in range(int(rng.integers(30, 60))):       # wave highlights
        y = int(rng.integers(hz + 2, SIZE)); x = int(rng.integers(0, SIZE)); w = int(rng.integers(8, 30))
        d.line([(x, y), (x + w, y)], fill=(200, 225, 250, 150), width=1)
    words = ["open water", "a horizon under the sky", "small waves"]
    if rng.random() < 0.6:
        d.polygon([(0, hz), (int(rng.integers(40, 120)), hz - int(rng.integers(5, 20))), (160, hz)], fill=_jit(rng, (70, 100, 70)) + (255,))
        words.append("a distant shore")
    for _ in range(rng.integers(0, 4)):
        x, y = int(rng.integers(10, 210)), int(rng.integers(hz + 10, 200))
        d.ellipse([x, y, x + 7, y + 9], fill=_pick(rng, [(230, 60, 40), (240, 200, 30)]) + (255,))
        words.append("a buoy") if "a buoy" not in words else None
    if rng.random() < 0.5:
        x, y = int(rng.integers(20, 160)), int(rng.integers(hz + 10, 190))
        d.polygon([(x, y), (x + 40, y), (x + 32, y + 10), (x + 6, y + 10)], fill=(235, 235, 235, 255)); words.append("a boat")
    return im, words


def _aerial(rng):
    im = _canvas(rng, (70, 130, 210), (170, 205, 240))
    d = ImageDraw.Draw(im, "RGBA")
    for _ in range(rng.integers(2, 6)):             # clouds
        x, y = int(rng.integers(-20, 200)), int(rng.integers(0, 110))
        d.ellipse([x, y, x + int(rng.integers(40, 90)), y + int(rng.integers(15, 30))], fill=(250, 250, 250, 200))
    words = ["a wide sky with clouds"]
    if rng.random() < 0.5:                          # lattice tower / mast
        x = int(rng.integers(60, 160)); top = int(rng.integers(10, 60))
        c = _jit(rng, (90, 90, 100))
        d.line([(x - 20, SIZE), (x, top)], fill=c, width=3); d.line([(x + 20, SIZE), (x, top)], fill=c, width=3)
        for y in range(top + 10, SIZE, 14):
            d.line([(x - 20 * (y - top) / (SIZE - top), y), (x + 20 * (y - top) / (SIZE - top), y)], fill=c, width=1)
        d.rectangle([x - 4, top - 12, x + 4, top], fill=(200, 60, 50)); words.append("a tall lattice tower with an antenna")
    else:                                           # rooftop seen from above the skyline
        roof = int(rng.integers(150, 190)); c = _jit(rng, (120, 120, 125))
        d.rectangle([0, roof, SIZE, SIZE], fill=c)
        for _ in range(rng.integers(1, 4)):
            x = int(rng.integers(0, 190)); d.rectangle([x, roof - int(rng.integers(8, 25)), x + int(rng.integers(15, 35)), roof], fill=_jit(rng, (150, 150, 150)))
        words.append("a flat rooftop with vents")
    return im, words


def _stairs(rng):
    wall = _jit(rng, (200, 190, 170), 30)
    im = Image.new("RGB", (SIZE, SIZE), wall)
    d = ImageDraw.Draw(im)
    n = int(rng.integers(6, 11)); step = SIZE // n; tread = _jit(rng, (150, 130, 110), 40); riser = tuple(max(0, c - 50) for c in tread)
    flip = rng.random() < 0.5
    for i in range(n):
        x0 = i * step; y0 = SIZE - (i + 1) * step
        pts = [(x0, y0), (SIZE, y0), (SIZE, y0 + step // 3), (x0, y0 + step // 3)]
        d.polygon(pts, fill=tread); d.rectangle([x0, y0 + step // 3, SIZE, y0 + step], fill=riser)
    d.line([(0, SIZE - step * 2), (SIZE, -step)], fill=_jit(rng, (60, 60, 60)), width=4)     # handrail
    if flip:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    return im, ["a staircase", "stair treads and a handrail", "a stairwell wall"]


def _rubble(rng):
    im = _canvas(rng, (175, 165, 150), (200, 190, 175), int(rng.integers(40, 90)), (130, 120, 105), (100, 90, 80))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(40, 80))):      # concrete chunks
        cx, cy = int(rng.integers(0, SIZE)), int(rng.integers(60, SIZE)); r = int(rng.integers(5, 22))
        pts = [(cx + r * np.cos(a) * rng.uniform(0.6, 1.2), cy + r * np.sin(a) * rng.uniform(0.6, 1.2))
               for a in np.sort(rng.uniform(0, 2 * np.pi, 5))]
        d.polygon(pts, fill=_jit(rng, (140, 135, 125), 35))
    for _ in range(int(rng.integers(3, 10))):       # rebar
        x, y = int(rng.integers(0, SIZE)), int(rng.integers(60, SIZE))
        d.line([(x, y), (x + int(rng.integers(-30, 30)), y - int(rng.integers(10, 40)))], fill=(110, 60, 40), width=2)
    return im, ["a collapsed building", "piles of broken concrete", "twisted rebar", "dust"]


def _rough(rng):
    hz = int(rng.integers(60, 110))
    im = _canvas(rng, (120, 170, 210), (190, 210, 225), hz, (70, 95, 45), (60, 50, 35))
    d = ImageDraw.Draw(im)
    for _ in range(2):                              # mountains behind
        x = int(rng.integers(-40, 180)); h = int(rng.integers(30, 70))
        d.polygon([(x, hz), (x + 70, hz - h), (x + 150, hz)], fill=_jit(rng, (90, 100, 110)))
    for _ in range(int(rng.integers(8, 25))):       # conifers
        x, y = int(rng.integers(0, SIZE)), int(rng.integers(hz - 10, SIZE)); s = int(rng.integers(10, 30)) * (y + 60) // 200
        d.polygon([(x, y - s * 2), (x - s // 2, y), (x + s // 2, y)], fill=_jit(rng, (30, 80, 35), 20))
        d.rectangle([x - 1, y, x + 1, y + s // 3], fill=(70, 45, 25))
    for _ in range(int(rng.integers(5, 15))):       # rocks
        x, y = int(rng.integers(0, SIZE)), int(rng.integers(hz, SIZE)); r = int(rng.integers(3, 10))
        d.ellipse([x, y, x + r * 2, y + r], fill=_jit(rng, (120, 115, 105)))
    return im, ["a forest on rough ground", "pine trees", "rocks", "mountains in the distance"]


def _road(rng):
    hz = int(rng.integers(70, 110))
    im = _canvas(rng, (130, 175, 220), (200, 215, 230), hz, (110, 110, 110), (70, 70, 72))
    d = ImageDraw.Draw(im)
    vx = int(rng.integers(80, 150))
    d.polygon([(0, hz + 10), (vx - 5, hz), (0, hz)], fill=_jit(rng, (90, 130, 70)))
    d.polygon([(SIZE, hz + 10), (vx + 5, hz), (SIZE, hz)], fill=_jit(rng, (90, 130, 70)))
    for side in (-1, 1):                            # lane edges in perspective
        d.line([(vx, hz), (SIZE // 2 + side * 150, SIZE)], fill=(235, 235, 235), width=3)
    for k in range(6):                              # dashed centre line
        t0, t1 = k / 6, (k + 0.5) / 6
        d.line([(vx + (SIZE // 2 - vx) * t0, hz + (SIZE - hz) * t0), (vx + (SIZE // 2 - vx) * t1, hz + (SIZE - hz) * t1)],
               fill=(240, 200, 40), width=2 + k)
    words = ["a paved road", "lane markings"]
    for _ in range(int(rng.integers(0, 4))):
        x, y = int(rng.integers(10, 190)), int(rng.integers(hz + 20, 200)); w = 20 + (y - hz) // 4
        d.rectangle([x, y, x + w, y + w // 2], fill=_jit(rng, (180, 40, 40), 80)); words.append("cars") if "cars" not in words else None
    return im, words


def _warehouse(rng):
    im = _canvas(rng, (170, 170, 165), (140, 140, 140), int(rng.integers(120, 160)), (160, 155, 145), (120, 118, 112))
    d = ImageDraw.Draw(im)
    beam = _pick(rng, [(230, 120, 30), (30, 90, 180), (220, 180, 30)])
    for x in range(int(rng.integers(0, 20)), SIZE, int(rng.integers(45, 70))):
        d.rectangle([x, 10, x + 5, 170], fill=_jit(rng, beam, 15))
        for y in range(30, 170, 40):
            d.rectangle([x, y, x + 50, y + 4], fill=_jit(rng, beam, 15))
            for bx in range(x + 7, x + 45, 12):
                if rng.random() < 0.7:
                    d.rectangle([bx, y - 14, bx + 10, y], fill=_jit(rng, (170, 130, 80), 20))
    d.line([(0, 200), (SIZE, 190)], fill=(240, 210, 0), width=3)
    return im, ["a warehouse interior", "tall racking with boxes", "a concrete floor", "yellow floor markings"]


def _indoor(rng):
    wall = _jit(rng, (225, 220, 205), 25)
    floor_y = int(rng.integers(140, 175))
    im = _canvas(rng, wall, wall, floor_y, (160, 110, 70), (130, 90, 60))
    d = ImageDraw.Draw(im)
    words = ["an office room"]
    if rng.random() < 0.8:
        x = int(rng.integers(10, 120)); d.rectangle([x, 30, x + 70, 100], fill=_jit(rng, (170, 210, 235)), outline=(250, 250, 250), width=4)
        words.append("a window")
    x = int(rng.integers(140, 190)); d.rectangle([x, floor_y - 90, x + 30, floor_y], fill=_jit(rng, (140, 100, 60)))
    words.append("a door")
    for _ in range(int(rng.integers(1, 3))):
        x = int(rng.integers(0, 150)); y = floor_y + int(rng.integers(-10, 20))
        d.rectangle([x, y - 25, x + 60, y - 20], fill=_jit(rng, (230, 230, 230))); d.rectangle([x + 5, y - 20, x + 8, y + 5], fill=(80, 80, 80)); d.rectangle([x + 52, y - 20, x + 55, y + 5], fill=(80, 80, 80))
        d.rectangle([x + 20, y - 45, x + 40, y - 27], fill=(30, 30, 35))
    words.append("desks with monitors")
    if rng.random() < 0.5:
        x = int(rng.integers(5, 200)); d.ellipse([x, floor_y - 40, x + 20, floor_y - 10], fill=_jit(rng, (50, 130, 50))); words.append("a plant")
    return im, words


def _pipes(rng):
    base = _jit(rng, (60, 70, 60), 20)
    im = Image.new("RGB", (SIZE, SIZE), base)
    d = ImageDraw.Draw(im)
    cx, cy = SIZE // 2 + int(rng.integers(-20, 20)), SIZE // 2 + int(rng.integers(-20, 20))
    rust = _jit(rng, (140, 80, 40), 30)
    for i, r in enumerate(range(160, 10, -15)):     # receding rings of the pipe
        shade = 1 - i / 12
        c = tuple(int(v * shade) for v in (rust if i % 2 else base))
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=c)
    d.polygon([(0, SIZE), (SIZE, SIZE), (cx + 30, cy + 10), (cx - 30, cy + 10)], fill=_jit(rng, (40, 90, 80)))
    for _ in range(int(rng.integers(5, 15))):
        x, y = int(rng.integers(0, SIZE)), int(rng.integers(0, SIZE)); d.ellipse([x, y, x + 3, y + 3], fill=(200, 220, 200))
    return im, ["the inside of a flooded pipe", "rusty rings", "green water", "suspended particles"]


def _desert(rng):
    hz = int(rng.integers(60, 100))
    im = _canvas(rng, (120, 170, 225), (230, 220, 200), hz, (230, 190, 120), (210, 160, 90))
    d = ImageDraw.Draw(im)
    for k in range(int(rng.integers(2, 5))):        # dune ridges
        y0 = hz + 20 + k * 35; amp = rng.uniform(5, 18); ph = rng.uniform(0, 6)
        pts = [(x, y0 + amp * np.sin(x / 30 + ph)) for x in range(0, SIZE + 8, 8)]
        d.polygon(pts + [(SIZE, SIZE), (0, SIZE)], fill=_jit(rng, (225, 175, 100), 20))
        d.line(pts, fill=(245, 215, 160), width=2)
    sx, sy = int(rng.integers(20, 200)), int(rng.integers(10, hz - 15))
    d.ellipse([sx, sy, sx + 20, sy + 20], fill=(255, 245, 200))
    return im, ["sand dunes", "a hot desert", "a bright sun", "a pale sky"]


def _snow(rng):
    hz = int(rng.integers(60, 110))
    im = _canvas(rng, (170, 190, 215), (220, 228, 238), hz, (240, 244, 250), (215, 222, 235))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 3))):
        x = int(rng.integers(-30, 160)); h = int(rng.integers(40, 80))
        d.polygon([(x, hz), (x + 60, hz - h), (x + 130, hz)], fill=_jit(rng, (110, 115, 130)))
        d.polygon([(x + 40, hz - h * 2 // 3), (x + 60, hz - h), (x + 82, hz - h * 2 // 3)], fill=(250, 250, 255))
    for _ in range(int(rng.integers(3, 10))):
        x, y = int(rng.integers(0, SIZE)), int(rng.integers(hz, SIZE)); d.ellipse([x, y, x + 12, y + 5], fill=(80, 80, 90))
    for _ in range(int(rng.integers(30, 120))):     # falling snow
        x, y = int(rng.integers(0, SIZE)), int(rng.integers(0, SIZE)); d.point((x, y), fill=(255, 255, 255))
    return im, ["a snowfield", "snowy mountains", "exposed dark rocks", "an overcast sky"]


def _cave(rng):
    im = Image.new("RGB", (SIZE, SIZE), _jit(rng, (25, 20, 18), 10))
    d = ImageDraw.Draw(im)
    cx = int(rng.integers(70, 150))
    d.ellipse([cx - 70, 40, cx + 70, 200], fill=_jit(rng, (55, 45, 38), 10))
    d.ellipse([cx - 35, 80, cx + 35, 170], fill=_jit(rng, (85, 70, 55), 15))
    for _ in range(int(rng.integers(10, 25))):      # rock blobs and stalactites
        x = int(rng.integers(0, SIZE)); h = int(rng.integers(10, 40))
        d.polygon([(x - 6, 0), (x + 6, 0), (x, h)], fill=_jit(rng, (70, 60, 50), 20))
    for _ in range(int(rng.integers(10, 20))):
        x, y = int(rng.integers(0, SIZE)), int(rng.integers(150, SIZE)); r = int(rng.integers(4, 14))
        d.ellipse([x, y, x + r * 2, y + r], fill=_jit(rng, (60, 50, 42), 15))
    return im, ["a dark cave", "rock walls", "stalactites", "a dim passage ahead"]


def _farm(rng):
    hz = int(rng.integers(60, 100))
    crop = _pick(rng, [(90, 160, 60), (210, 190, 80), (120, 170, 70)])
    im = _canvas(rng, (110, 170, 230), (190, 215, 235), hz, crop, tuple(int(c * 0.75) for c in crop))
    d = ImageDraw.Draw(im)
    vx = int(rng.integers(40, 180))
    for k in range(-12, 13):                        # crop rows converging to the horizon
        d.line([(vx, hz), (vx + k * 30, SIZE)], fill=_jit(rng, tuple(int(c * 0.6) for c in crop), 10), width=2)
    words = ["farm fields", "rows of crops"]
    if rng.random() < 0.6:
        x = int(rng.integers(0, 180)); d.rectangle([x, hz - 25, x + 35, hz], fill=(170, 40, 35)); d.polygon([(x - 3, hz - 25), (x + 17, hz - 40), (x + 38, hz - 25)], fill=(120, 30, 25)); words.append("a red barn")
    return im, words


def _industrial(rng):
    hz = int(rng.integers(110, 150))
    im = _canvas(rng, (150, 175, 200), (200, 205, 210), hz, (125, 120, 110), (95, 92, 88))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 4))):        # storage tanks
        x = int(rng.integers(0, 170)); w = int(rng.integers(35, 60)); h = int(rng.integers(40, 80))
        d.rectangle([x, hz - h, x + w, hz], fill=_jit(rng, (215, 215, 210), 15)); d.ellipse([x, hz - h - 6, x + w, hz - h + 6], fill=(190, 190, 185))
    x = int(rng.integers(20, 200)); d.rectangle([x, 15, x + 10, hz], fill=_jit(rng, (150, 80, 60)))    # stack
    for y in range(hz - 30, hz + 40, 12):           # pipe rack
        d.line([(0, y), (SIZE, y - 10)], fill=_pick(rng, [(200, 170, 40), (140, 140, 150), (60, 110, 160)]), width=3)
    return im, ["an industrial plant", "storage tanks", "a smoke stack", "pipe racks"]


PAINTERS = {"underwater": _underwater, "water_surface": _water_surface, "aerial": _aerial, "stairs": _stairs,
            "rubble": _rubble, "rough": _rough, "road": _road, "warehouse": _warehouse, "indoor": _indoor,
            "pipes": _pipes, "desert": _desert, "snow": _snow, "cave": _cave, "farm": _farm, "industrial": _industrial}
FAMILIES = tuple(PAINTERS)
_NOISE = (np.random.default_rng(12345).normal(0, 8, size=(2 * SIZE, 2 * SIZE))).astype(np.int32)
_LIGHT = {"": 1.0, "at dusk": 0.65, "in harsh light": 1.2, "in dim light": 0.8}


def render_scene(family: str, seed: int) -> Scene:
    """Render one scene of `family`; the same (family, seed) always gives the same pixels."""
    if family not in PAINTERS:
        raise ValueError(f"no painter for environment family {family!r}; have {', '.join(FAMILIES)}")
    rng = np.random.default_rng([seed, FAMILIES.index(family)])
    im, words = PAINTERS[family](rng)
    light = _pick(rng, list(_LIGHT))
    # Colour cast and brightness in 8.8 fixed point, then film grain cut from a fixed noise
    # bank at a random offset: the look of per-pixel noise at a fraction of the cost.
    tint = (rng.uniform(0.9, 1.1, size=3) * _LIGHT[light] * 256).astype(np.int32)
    oy, ox = rng.integers(0, SIZE, size=2)
    grain = _NOISE[oy:oy + SIZE, ox:ox + SIZE] >> int(rng.integers(0, 3))
    arr = (np.asarray(im.convert("RGB"), dtype=np.int32) * tint >> 8) + grain[:, :, None]
    img = np.clip(arr, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        img = img[:, ::-1].copy()
    kept = [w for w in words if w]
    caption = f"{kept[0]} with {', '.join(kept[1:-1])}{' and ' if len(kept) > 2 else ''}{kept[-1]}" if len(kept) > 1 else kept[0]
    return Scene(img, family, f"{caption} {light}".strip())


def save_png(img: np.ndarray, path) -> None:
    Image.fromarray(img).save(path, format="PNG", compress_level=1)
