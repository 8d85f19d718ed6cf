"""Pictures in request bodies (object images, catalog photos): base64 PNG or JPEG, their size read from
the header and capped before anything decodes them."""
from __future__ import annotations

import base64
import binascii
import struct

import numpy as np

from edge_runtime.serve.api_errors import ApiError


def _image_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header; None if it is neither."""
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) >= 24 and raw[12:16] == b"IHDR":
        return struct.unpack(">II", raw[16:24])
    if raw[:2] == b"\xff\xd8":
        i = 2
        while i + 4 <= len(raw):
            if raw[i] != 0xFF:
                return None
            marker = raw[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            (seg,) = struct.unpack(">H", raw[i + 2 : i + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 9 <= len(raw):
                h, w = struct.unpack(">HH", raw[i + 5 : i + 9])
                return w, h
            i += 2 + seg
    return None


def decode_image(data: str, field: str, max_pixels: int) -> np.ndarray:
    import cv2

    text = data.strip()
    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{field} is not valid base64") from None
    size = _image_size(raw)
    if size is None:
        raise ApiError(415, f"{field} is not a PNG or JPEG image")
    w, h = size
    if w < 1 or h < 1:
        raise ApiError(400, f"{field} is {w}x{h}: an empty picture")
    if w * h > max_pixels:
        raise ApiError(413, f"{field} is {w}x{h}; at most {max_pixels} pixels")
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ApiError(400, f"{field} could not be decoded (damaged PNG/JPEG)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
