"""Reading images: any photo file as upright 8-bit RGB, and photos from people with one-line errors.

    load_rgb_image(path)            # for the dataset: PIL/OS errors are reported by the caller
    open_photo(upload, "cat.png")   # for the CLI and the app: every failure is one PhotoError line
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

MAX_PIXELS = 90_000_000  # larger images are refused: a small file can decode to gigabytes (a "decompression bomb")


def load_rgb_image(source: str | Path | BinaryIO, min_side: int | None = None) -> Image.Image:
    """Open an image as 8-bit RGB, upright: EXIF orientation applied, transparency flattened onto white.

    Handles grayscale, 16-bit, palette, RGBA/LA and CMYK files. Raises PIL/OS errors for unreadable data, and
    Image.DecompressionBombError for images over MAX_PIXELS (checked from the header, before decoding).
    min_side: for callers that resize the shorter side to min_side anyway, a JPEG may be decoded at 1/2, 1/4 or 1/8
    scale (libjpeg's DCT scaling) while its shorter side stays >= min_side: an 800x600 photo for a 256 px resize
    decodes at 400x300, several times faster.
    """
    with warnings.catch_warnings():  # Pillow warns from 89.5 megapixels; our own limit below is the one that counts
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(source)
    with img:
        if img.width * img.height > MAX_PIXELS:
            raise Image.DecompressionBombError(
                f"{img.width}x{img.height} is {img.width * img.height / 1e6:.0f} megapixels, "
                f"over the {MAX_PIXELS / 1e6:.0f}-megapixel limit"
            )
        if min_side is not None:  # draft() asks for at least this size; it is a no-op for formats other than JPEG
            scale = min_side / min(img.size)
            img.draft(img.mode, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
        img = ImageOps.exif_transpose(img)  # phone photos store "rotate me" in EXIF instead of rotating pixels
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 0..255, don't clip
            pixels = np.asarray(img, dtype=np.float64)
            scale = 255.0 / 65535.0 if img.mode.startswith("I;16") or pixels.max() > 255 else 1.0
            img = Image.fromarray(np.clip(pixels * scale, 0, 255).astype(np.uint8), mode="L")
        if img.mode == "P":
            img = img.convert("RGBA")  # palette images may carry transparency
        if img.mode in ("RGBA", "LA", "PA"):
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img.convert("RGBA"))
        return img.convert("RGB")  # also decodes the pixels, so a truncated file fails here, not later


class PhotoError(ValueError):
    """A photo that cannot be used; the message is one line that starts with the photo's name."""


def open_photo(source: str | Path | BinaryIO, name: str | None = None) -> Image.Image:
    """load_rgb_image for photos from people (the CLI, the app): every failure is a one-line PhotoError."""
    name = name or str(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError:  # also a symbolic link to nothing
            raise PhotoError(f"{name}: no such file") from None
        except PermissionError:  # a folder on the way that this user may not enter
            raise PhotoError(f"{name}: permission denied (this user may not read it)") from None
        except OSError as err:  # e.g. a symbolic link loop
            raise PhotoError(f"{name}: cannot read the file ({err.strerror or err})") from None
        if path.is_dir():
            raise PhotoError(f"{name}: is a folder, not a photo")
        if not path.is_file():  # opening a named pipe would wait forever for a writer
            raise PhotoError(f"{name}: not a regular file (a pipe, device or socket), not a photo")
        if size == 0:
            raise PhotoError(f"{name}: the file is empty")
    elif isinstance(source, io.BytesIO) and source.getbuffer().nbytes == 0:
        raise PhotoError(f"{name}: the file is empty")
    try:
        return load_rgb_image(source)
    except Image.DecompressionBombError as err:
        raise PhotoError(f"{name}: too large to open safely ({err})") from None
    except Image.UnidentifiedImageError:
        raise PhotoError(f"{name}: not an image file (or a format Pillow cannot read)") from None
    except FileNotFoundError:  # it was there a moment ago, when it was listed or checked above
        raise PhotoError(f"{name}: no such file (it was moved or deleted)") from None
    except PermissionError:
        raise PhotoError(f"{name}: permission denied (this user may not read it)") from None
    except OSError as err:
        if err.errno is not None:  # the system could not read the file (Pillow's decoding errors carry no errno)
            raise PhotoError(f"{name}: cannot read the file ({err.strerror or err})") from None
        raise PhotoError(f"{name}: damaged or truncated image ({err})") from None
    except Exception as err:  # noqa: BLE001 - Pillow raises many kinds for malformed files
        raise PhotoError(f"{name}: cannot read this image ({type(err).__name__}: {err})") from None
