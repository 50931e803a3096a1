"""One image file to RGB JPEG bytes, or the reason it cannot be: the gate of folder preparation.

Every file that ends up in a prepared dataset went through `read_as_jpeg`, so training reads only
valid 3-channel 8-bit images. What it handles:

- grayscale, palette, CMYK (Adobe's inverted kind too) and 1-bit images: converted to RGB by PIL;
- transparency (RGBA/LA PNGs, GIFs with a transparent colour): composited onto white, which is how
  viewers show them (dropping alpha would expose whatever colour the transparent pixels hold);
- 16-bit PNGs: 16-bit RGB is reduced to 8 bits by PIL; 16-bit grayscale is scaled here (PIL's own
  conversion clips it at 255 instead of scaling);
- animated GIFs: the first frame; EXIF orientation: applied, so photos are upright;
- zero-byte, truncated, corrupt and non-image files, floating-point images, and images of more than
  `max_pixels` pixels (checked from the header before decoding, so a decompression bomb never
  allocates): `UnreadableImage`, whose message says why.

Colour profiles (ICC) are not applied: pixels are taken as sRGB.
"""

import io
import os

import numpy as np
from PIL import Image, ImageOps

MAX_PIXELS = 50_000_000
JPEG_QUALITY = 95
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
)


class UnreadableImage(Exception):
    """A file that cannot be turned into an RGB image; the message says why."""


def read_as_jpeg(
    path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS, max_side: int | None = None
) -> bytes:
    """The image at `path` as RGB JPEG bytes (quality 95), its longer side at most `max_side`.

    Raises UnreadableImage for anything that is not a decodable image of at most `max_pixels`.
    """
    try:
        if os.path.getsize(path) == 0:
            raise UnreadableImage("empty file")
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise UnreadableImage(
                    f"{width}x{height} is more than max_pixels={max_pixels:,} pixels"
                )
            if max_side:
                image.draft("RGB", (max_side, max_side))  # JPEGs decode at a reduced scale
            rgb = _to_rgb(ImageOps.exif_transpose(image))
        if max_side:
            rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    except UnreadableImage:
        raise
    except Exception as e:  # PIL reports bad files with many exception types; OSError too.
        raise UnreadableImage(f"{type(e).__name__}: {e}") from None
    return buffer.getvalue()


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "F":
        raise UnreadableImage("floating-point pixels have no standard 0..255 range")
    if image.mode == "I" or image.mode.startswith("I;16"):
        pixels = np.clip(np.asarray(image, dtype=np.float64) / 257.0, 0, 255)
        image = Image.fromarray(np.round(pixels).astype(np.uint8))
    if image.has_transparency_data:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")
