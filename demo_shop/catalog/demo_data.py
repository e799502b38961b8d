"""
A generated demo catalog: product images drawn by code, names in five languages.

``generate_catalog()`` yields category and product dicts; images are PNG bytes
of a simple drawing of the item (shape per category, colour and pattern per
product), so the demo needs no downloads. Some products have a gallery of
more photos (other angles, other colours of the item) and some are
unpublished, as in a real shop.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from PIL import Image, ImageDraw

SIZE = 256

COLOURS = {
    "red": ((200, 30, 40), {"de": "rot", "fr": "rouge", "es": "rojo", "zh": "红色"}),
    "blue": ((40, 70, 200), {"de": "blau", "fr": "bleu", "es": "azul", "zh": "蓝色"}),
    "green": ((40, 150, 60), {"de": "grün", "fr": "vert", "es": "verde", "zh": "绿色"}),
    "black": (
        (25, 25, 25),
        {"de": "schwarz", "fr": "noir", "es": "negro", "zh": "黑色"},
    ),
    "yellow": (
        (240, 200, 30),
        {"de": "gelb", "fr": "jaune", "es": "amarillo", "zh": "黄色"},
    ),
    "pink": ((240, 130, 180), {"de": "rosa", "fr": "rose", "es": "rosa", "zh": "粉色"}),
    "brown": (
        (130, 80, 40),
        {"de": "braun", "fr": "marron", "es": "marrón", "zh": "棕色"},
    ),
    "grey": ((130, 130, 135), {"de": "grau", "fr": "gris", "es": "gris", "zh": "灰色"}),
    "orange": (
        (240, 130, 30),
        {"de": "orange", "fr": "orange", "es": "naranja", "zh": "橙色"},
    ),
    "purple": (
        (120, 50, 160),
        {"de": "lila", "fr": "violet", "es": "morado", "zh": "紫色"},
    ),
}

PATTERNS = {
    "plain": {"de": "uni", "fr": "uni", "es": "liso", "zh": "纯色"},
    "striped": {"de": "gestreift", "fr": "rayé", "es": "a rayas", "zh": "条纹"},
    "dotted": {"de": "gepunktet", "fr": "à pois", "es": "de lunares", "zh": "圆点"},
    "checked": {"de": "kariert", "fr": "à carreaux", "es": "a cuadros", "zh": "格子"},
}


def _tshirt(d: ImageDraw.ImageDraw, s: float) -> None:
    d.polygon(
        [
            (70, 50),
            (105, 40),
            (151, 40),
            (186, 50),
            (226, 95),
            (196, 120),
            (178, 100),
            (178, 215),
            (78, 215),
            (78, 100),
            (60, 120),
            (30, 95),
        ],
        fill=255,
    )


def _dress(d: ImageDraw.ImageDraw, s: float) -> None:
    d.polygon(
        [(100, 35), (156, 35), (150, 90), (200, 225), (56, 225), (106, 90)], fill=255
    )


def _trousers(d: ImageDraw.ImageDraw, s: float) -> None:
    d.polygon(
        [
            (80, 30),
            (176, 30),
            (190, 230),
            (140, 230),
            (128, 110),
            (116, 230),
            (66, 230),
        ],
        fill=255,
    )


def _shoe(d: ImageDraw.ImageDraw, s: float) -> None:
    d.polygon(
        [(40, 120), (95, 110), (130, 140), (215, 160), (225, 190), (40, 190)], fill=255
    )
    d.rectangle([35, 190, 228, 205], fill=255)


def _boot(d: ImageDraw.ImageDraw, s: float) -> None:
    d.polygon(
        [(80, 30), (140, 30), (140, 150), (210, 170), (215, 215), (75, 215)], fill=255
    )


def _handbag(d: ImageDraw.ImageDraw, s: float) -> None:
    d.rounded_rectangle([50, 100, 206, 215], radius=18, fill=255)
    d.arc([85, 40, 171, 140], 180, 360, fill=255, width=12)


def _backpack(d: ImageDraw.ImageDraw, s: float) -> None:
    d.rounded_rectangle([70, 45, 186, 225], radius=40, fill=255)
    d.rounded_rectangle([95, 140, 161, 205], radius=10, fill=255)


def _chair(d: ImageDraw.ImageDraw, s: float) -> None:
    d.rectangle([70, 30, 90, 230], fill=255)
    d.rectangle([70, 130, 190, 150], fill=255)
    d.rectangle([170, 130, 190, 230], fill=255)


def _table(d: ImageDraw.ImageDraw, s: float) -> None:
    d.rectangle([25, 90, 231, 115], fill=255)
    d.rectangle([40, 115, 58, 225], fill=255)
    d.rectangle([198, 115, 216, 225], fill=255)


def _sofa(d: ImageDraw.ImageDraw, s: float) -> None:
    d.rounded_rectangle([40, 80, 216, 150], radius=15, fill=255)
    d.rounded_rectangle([20, 120, 236, 190], radius=15, fill=255)
    d.rectangle([35, 190, 50, 210], fill=255)
    d.rectangle([206, 190, 221, 210], fill=255)


def _lamp(d: ImageDraw.ImageDraw, s: float) -> None:
    d.polygon([(95, 30), (161, 30), (190, 100), (66, 100)], fill=255)
    d.rectangle([122, 100, 134, 200], fill=255)
    d.ellipse([85, 195, 171, 225], fill=255)


def _mug(d: ImageDraw.ImageDraw, s: float) -> None:
    d.rounded_rectangle([60, 70, 170, 210], radius=10, fill=255)
    d.arc([145, 100, 215, 175], 270, 90, fill=255, width=14)


def _pot(d: ImageDraw.ImageDraw, s: float) -> None:
    d.rounded_rectangle([50, 100, 206, 200], radius=20, fill=255)
    d.rectangle([20, 110, 50, 125], fill=255)
    d.rectangle([206, 110, 236, 125], fill=255)
    d.ellipse([60, 80, 196, 110], fill=255)


def _hat(d: ImageDraw.ImageDraw, s: float) -> None:
    d.ellipse([25, 150, 231, 195], fill=255)
    d.rounded_rectangle([75, 70, 181, 175], radius=25, fill=255)


def _vase(d: ImageDraw.ImageDraw, s: float) -> None:
    d.ellipse([70, 100, 186, 225], fill=255)
    d.rectangle([105, 40, 151, 120], fill=255)


CATEGORIES: list[tuple[str, dict[str, str], str, Callable, tuple[int, int]]] = [
    # (English name, translations, item noun key, drawer, price range)
    (
        "T-shirts",
        {
            "de": "T-Shirts",
            "fr": "T-shirts",
            "es": "Camisetas",
            "zh": "T恤",
            "ar": "قمصان",
            "ru": "Футболки",
            "hi": "टी-शर्ट",
        },
        "t-shirt",
        _tshirt,
        (9, 40),
    ),
    (
        "Dresses",
        {
            "de": "Kleider",
            "fr": "Robes",
            "es": "Vestidos",
            "zh": "连衣裙",
            "ar": "فساتين",
            "ru": "Платья",
            "hi": "पोशाकें",
        },
        "dress",
        _dress,
        (25, 150),
    ),
    (
        "Trousers",
        {
            "de": "Hosen",
            "fr": "Pantalons",
            "es": "Pantalones",
            "zh": "裤子",
            "ar": "سراويل",
            "ru": "Брюки",
            "hi": "पतलून",
        },
        "trousers",
        _trousers,
        (30, 120),
    ),
    (
        "Sneakers",
        {
            "de": "Turnschuhe",
            "fr": "Baskets",
            "es": "Zapatillas",
            "zh": "运动鞋",
            "ar": "أحذية رياضية",
            "ru": "Кроссовки",
            "hi": "स्नीकर्स",
        },
        "sneaker",
        _shoe,
        (40, 160),
    ),
    (
        "Boots",
        {
            "de": "Stiefel",
            "fr": "Bottes",
            "es": "Botas",
            "zh": "靴子",
            "ar": "أحذية طويلة",
            "ru": "Ботинки",
            "hi": "जूते",
        },
        "boot",
        _boot,
        (60, 220),
    ),
    (
        "Handbags",
        {
            "de": "Handtaschen",
            "fr": "Sacs à main",
            "es": "Bolsos",
            "zh": "手提包",
            "ar": "حقائب يد",
            "ru": "Сумки",
            "hi": "हैंडबैग",
        },
        "handbag",
        _handbag,
        (35, 300),
    ),
    (
        "Backpacks",
        {
            "de": "Rucksäcke",
            "fr": "Sacs à dos",
            "es": "Mochilas",
            "zh": "背包",
            "ar": "حقائب ظهر",
            "ru": "Рюкзаки",
            "hi": "बैकपैक",
        },
        "backpack",
        _backpack,
        (30, 140),
    ),
    (
        "Chairs",
        {
            "de": "Stühle",
            "fr": "Chaises",
            "es": "Sillas",
            "zh": "椅子",
            "ar": "كراسي",
            "ru": "Стулья",
            "hi": "कुर्सियाँ",
        },
        "chair",
        _chair,
        (45, 400),
    ),
    (
        "Tables",
        {
            "de": "Tische",
            "fr": "Tables",
            "es": "Mesas",
            "zh": "桌子",
            "ar": "طاولات",
            "ru": "Столы",
            "hi": "मेज़ें",
        },
        "table",
        _table,
        (90, 900),
    ),
    (
        "Sofas",
        {
            "de": "Sofas",
            "fr": "Canapés",
            "es": "Sofás",
            "zh": "沙发",
            "ar": "أرائك",
            "ru": "Диваны",
            "hi": "सोफ़े",
        },
        "sofa",
        _sofa,
        (300, 2000),
    ),
    (
        "Lamps",
        {
            "de": "Lampen",
            "fr": "Lampes",
            "es": "Lámparas",
            "zh": "台灯",
            "ar": "مصابيح",
            "ru": "Лампы",
            "hi": "लैंप",
        },
        "lamp",
        _lamp,
        (20, 250),
    ),
    (
        "Mugs",
        {
            "de": "Tassen",
            "fr": "Tasses",
            "es": "Tazas",
            "zh": "马克杯",
            "ar": "أكواب",
            "ru": "Кружки",
            "hi": "मग",
        },
        "mug",
        _mug,
        (6, 30),
    ),
    (
        "Cooking pots",
        {
            "de": "Kochtöpfe",
            "fr": "Casseroles",
            "es": "Ollas",
            "zh": "锅",
            "ar": "قدور طبخ",
            "ru": "Кастрюли",
            "hi": "पतीले",
        },
        "pot",
        _pot,
        (25, 180),
    ),
    (
        "Hats",
        {
            "de": "Hüte",
            "fr": "Chapeaux",
            "es": "Sombreros",
            "zh": "帽子",
            "ar": "قبعات",
            "ru": "Шляпы",
            "hi": "टोपियाँ",
        },
        "hat",
        _hat,
        (15, 90),
    ),
    (
        "Vases",
        {
            "de": "Vasen",
            "fr": "Vases",
            "es": "Jarrones",
            "zh": "花瓶",
            "ar": "مزهريات",
            "ru": "Вазы",
            "hi": "फूलदान",
        },
        "vase",
        _vase,
        (15, 120),
    ),
]

ITEM_NAMES = {
    "t-shirt": {
        "en": "T-shirt",
        "de": "T-Shirt",
        "fr": "T-shirt",
        "es": "camiseta",
        "zh": "T恤",
    },
    "dress": {
        "en": "dress",
        "de": "Kleid",
        "fr": "robe",
        "es": "vestido",
        "zh": "连衣裙",
    },
    "trousers": {
        "en": "trousers",
        "de": "Hose",
        "fr": "pantalon",
        "es": "pantalón",
        "zh": "裤子",
    },
    "sneaker": {
        "en": "sneakers",
        "de": "Turnschuhe",
        "fr": "baskets",
        "es": "zapatillas",
        "zh": "运动鞋",
    },
    "boot": {
        "en": "boots",
        "de": "Stiefel",
        "fr": "bottes",
        "es": "botas",
        "zh": "靴子",
    },
    "handbag": {
        "en": "handbag",
        "de": "Handtasche",
        "fr": "sac à main",
        "es": "bolso",
        "zh": "手提包",
    },
    "backpack": {
        "en": "backpack",
        "de": "Rucksack",
        "fr": "sac à dos",
        "es": "mochila",
        "zh": "背包",
    },
    "chair": {
        "en": "chair",
        "de": "Stuhl",
        "fr": "chaise",
        "es": "silla",
        "zh": "椅子",
    },
    "table": {"en": "table", "de": "Tisch", "fr": "table", "es": "mesa", "zh": "桌子"},
    "sofa": {"en": "sofa", "de": "Sofa", "fr": "canapé", "es": "sofá", "zh": "沙发"},
    "lamp": {"en": "lamp", "de": "Lampe", "fr": "lampe", "es": "lámpara", "zh": "台灯"},
    "mug": {"en": "mug", "de": "Tasse", "fr": "tasse", "es": "taza", "zh": "马克杯"},
    "pot": {
        "en": "cooking pot",
        "de": "Kochtopf",
        "fr": "casserole",
        "es": "olla",
        "zh": "锅",
    },
    "hat": {"en": "hat", "de": "Hut", "fr": "chapeau", "es": "sombrero", "zh": "帽子"},
    "vase": {"en": "vase", "de": "Vase", "fr": "vase", "es": "jarrón", "zh": "花瓶"},
}

LANGUAGES = ("de", "fr", "es", "zh")


@dataclass(frozen=True)
class Shot:
    """How one photo is taken: the pattern's spacing, the backdrop, the camera."""

    step: int
    background: tuple[int, int, int]
    angle: float
    scale: float = 1.0
    shift: tuple[int, int] = (0, 0)
    mirrored: bool = False


def studio(rng: random.Random) -> Shot:
    """The main photo's shot (the random draws of the catalog's first version,
    in the same order, so that ``seed`` still gives the same images)."""
    step = rng.choice((14, 18, 22))
    background = tuple(rng.randint(236, 252) for _ in range(3))
    return Shot(step=step, background=background, angle=rng.uniform(-8, 8))


def render(
    drawer: Callable, colour: tuple[int, int, int], pattern: str, shot: Shot
) -> bytes:
    """PNG bytes of the item drawn by ``drawer`` in colour and pattern, as
    ``shot`` takes it."""
    mask = Image.new("L", (SIZE, SIZE), 0)
    drawer(ImageDraw.Draw(mask), 1.0)
    fill = Image.new("RGB", (SIZE, SIZE), colour)
    paint = ImageDraw.Draw(fill)
    contrast = (255, 255, 255) if sum(colour) < 380 else (30, 30, 30)
    step = shot.step
    if pattern == "striped":
        for y in range(0, SIZE, step):
            paint.rectangle([0, y, SIZE, y + step // 3], fill=contrast)
    elif pattern == "dotted":
        for y in range(step // 2, SIZE, step):
            for x in range(step // 2, SIZE, step):
                paint.ellipse([x - 3, y - 3, x + 3, y + 3], fill=contrast)
    elif pattern == "checked":
        for y in range(0, SIZE, step):
            for x in range(0, SIZE, step):
                if (x // step + y // step) % 2:
                    paint.rectangle([x, y, x + step, y + step], fill=contrast)
    background = shot.background
    image = Image.new("RGB", (SIZE, SIZE), background)
    image.paste(fill, (0, 0), mask)
    if shot.mirrored:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = image.rotate(
        shot.angle, resample=Image.Resampling.BICUBIC, fillcolor=background
    )
    if shot.scale != 1.0:
        image = _zoom(image, shot.scale, shot.shift, background)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _zoom(
    image: Image.Image,
    scale: float,
    shift: tuple[int, int],
    background: tuple[int, int, int],
) -> Image.Image:
    """Closer (scale > 1: a crop) or further away (scale < 1), off centre by
    ``shift`` pixels."""
    side = round(SIZE * scale)
    resized = image.resize((side, side), Image.Resampling.BICUBIC)
    offset = (SIZE - side) // 2
    if scale > 1:
        left = max(0, min(side - SIZE, -offset + shift[0]))
        top = max(0, min(side - SIZE, -offset + shift[1]))
        return resized.crop((left, top, left + SIZE, top + SIZE))
    canvas = Image.new("RGB", (SIZE, SIZE), background)
    canvas.paste(resized, (offset + shift[0], offset + shift[1]))
    return canvas


#: Products with a gallery: two per category, at these positions (pattern * 4
#: + colour) shifted by the category, so that the galleries cover every
#: pattern and many colours.
GALLERY_AT = (3, 11)

#: Products that shoppers may not see: every 24th, from the 12th on (10 of 240,
#: over 10 categories; two of them have a gallery). Never an even position,
#: a multiple of 3 or one of the first eight, which tests take as examples
#: of products that shoppers find.
UNPUBLISHED_EVERY, UNPUBLISHED_FROM = 24, 11


def gallery_shots(
    main: Shot, colour: str, count: int, rng: random.Random
) -> list[tuple[str, Shot]]:
    """
    ``count`` more photos of one item: other angles (turned, mirrored, closer
    or further away) and the same item in other colours. Returns
    ``(colour name, shot)`` pairs; the first is always another angle.
    """
    others = [name for name in COLOURS if name != colour]
    shots = []
    for position in range(count):
        turned = rng.choice((-1, 1)) * rng.uniform(14, 32)
        shot = replace(
            main,
            angle=main.angle + turned,
            scale=rng.choice((rng.uniform(0.7, 0.85), rng.uniform(1.15, 1.35))),
            shift=(rng.randint(-18, 18), rng.randint(-18, 18)),
            mirrored=position == 2,
        )
        # Even positions: another angle; odd ones: another colour of the item.
        name = colour if position % 2 == 0 else rng.choice(others)
        shots.append((name, shot))
    return shots


def generate_catalog(seed: int = 42) -> Iterator[dict[str, Any]]:
    """
    Yield ``{"category": {...}, "product": {...}, "image": bytes, "gallery":
    [bytes, ...], "published": bool}`` for each of the demo products: every
    category in 4 patterns x 4 colours (240 products). Two products per
    category have a gallery of 2 to 4 more photos (other angles, other
    colours); 10 products are unpublished. The same ``seed`` gives the same
    catalog, byte for byte.
    """
    rng = random.Random(seed)
    colour_names = list(COLOURS)
    for cat_index, (cat_name, cat_i18n, item, drawer, (low, high)) in enumerate(
        CATEGORIES
    ):
        category = {
            "name": cat_name,
            "slug": item.replace(" ", "-") + "s",
            "translations": {"en": cat_name, **cat_i18n},
        }
        for pat_index, pattern in enumerate(PATTERNS):
            for k in range(4):
                colour = colour_names[
                    (cat_index * 3 + pat_index * 4 + k) % len(colour_names)
                ]
                rgb, colour_i18n = COLOURS[colour]
                pattern_i18n = PATTERNS[pattern]
                noun = ITEM_NAMES[item]
                names = {"en": f"{colour.capitalize()} {pattern} {noun['en']}"}
                names["de"] = f"{noun['de']} {colour_i18n['de']}, {pattern_i18n['de']}"
                names["fr"] = f"{noun['fr']} {colour_i18n['fr']} {pattern_i18n['fr']}"
                names["es"] = f"{noun['es']} {colour_i18n['es']} {pattern_i18n['es']}"
                names["zh"] = f"{colour_i18n['zh']}{pattern_i18n['zh']}{noun['zh']}"
                price = Decimal(rng.randint(low * 100, high * 100)) / 100
                sku = f"DEMO-{cat_index:02d}{pat_index}{k}"
                in_stock = rng.random() > 0.15
                shot = studio(rng)
                gallery = []
                at = pat_index * 4 + k
                if at in {(cat_index * 5 + g) % 16 for g in GALLERY_AT}:
                    # Its own generator: galleries never change the main photos.
                    own = random.Random(f"{seed}:{sku}")
                    count = 2 + (cat_index + at) % 3
                    gallery = [
                        render(drawer, COLOURS[name][0], pattern, other)
                        for name, other in gallery_shots(shot, colour, count, own)
                    ]
                index = cat_index * 16 + at
                yield {
                    "category": category,
                    "product": {
                        "sku": sku,
                        "name": names["en"],
                        "name_translations": names,
                        "description": (
                            f"A {pattern} {colour} {noun['en']} from the demo catalog."
                        ),
                        "price": price,
                        "colour": colour,
                        "in_stock": in_stock,
                    },
                    "image": render(drawer, rgb, pattern, shot),
                    "gallery": gallery,
                    "published": index % UNPUBLISHED_EVERY != UNPUBLISHED_FROM,
                }
