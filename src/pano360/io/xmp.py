"""Google Photo Sphere ("GPano") XMP: build, embed in PNG/JPEG bytes, read back.

Conventions (see ``shared/reference/ecosystem.md`` §3.1):

* A W×H image with W = 2H is a full sphere: full pano = cropped area = W×H at (0, 0).
* A wider strip (W > 2H, e.g. 512×2048) is a cylindrical band: 360° across, less than 180° up/down.
  The full pano is W × W/2 (``FullPanoHeightPixels = FullPanoWidthPixels / 2``, which Facebook
  insists on) and the strip is centred on the horizon: ``CroppedAreaTopPixels = (W/2 − H) / 2``.
* A taller image (H > W/2) cannot be an equirectangular panorama (it would span more than 180°
  vertically); :func:`pano_geometry_for_size` raises for it, and callers write no GPano tags
  (complete tags or none: an incomplete set breaks viewers such as Pannellum).
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass

from ..errors import InvalidInputError

GPANO_NS = "http://ns.google.com/photos/1.0/panorama/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
JPEG_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"


@dataclass(frozen=True)
class PanoGeometry:
    """Where an image sits inside the full equirectangular sphere, in pixels."""

    full_width: int
    full_height: int
    cropped_width: int
    cropped_height: int
    cropped_left: int = 0
    cropped_top: int = 0

    @property
    def is_full_sphere(self) -> bool:
        return (self.cropped_width, self.cropped_height) == (self.full_width, self.full_height)

    @property
    def vertical_fov_deg(self) -> float:
        """Vertical field of view covered by the image, in degrees."""
        return 180.0 * self.cropped_height / self.full_height


def pano_geometry_for_size(width: int, height: int) -> PanoGeometry:
    """GPano geometry of a generated ``width``×``height`` (pixels) panorama spanning 360° across.

    Raises :class:`InvalidInputError` when the image is taller than 2:1 (not an equirectangular
    panorama) or has an odd width.
    """
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"image size must be positive, got {height}x{width} (HxW)")
    if width % 2:
        raise InvalidInputError(f"a 360° panorama needs an even width, got {width}; resize it to {width + 1}")
    full_height = width // 2
    if height > full_height:
        raise InvalidInputError(
            f"a {height}x{width} (HxW) image is taller than 2:1 (width:height) and cannot be an equirectangular panorama; "
            f"use height <= {full_height}"
        )
    return PanoGeometry(
        full_width=width,
        full_height=full_height,
        cropped_width=width,
        cropped_height=height,
        cropped_left=0,
        cropped_top=(full_height - height) // 2,
    )


def build_gpano_xmp(
    geometry: PanoGeometry,
    *,
    heading_deg: float = 0.0,
    initial_view_heading_deg: float = 0.0,
    initial_view_pitch_deg: float = 0.0,
    initial_hfov_deg: float = 90.0,
    software: str = "pano360",
) -> str:
    """Return a complete XMP packet (str) with every GPano field Google's Photo Sphere table lists."""
    fields = {
        "ProjectionType": "equirectangular",
        "UsePanoramaViewer": "True",
        "CaptureSoftware": software,
        "StitchingSoftware": software,
        "PoseHeadingDegrees": f"{heading_deg % 360.0:.1f}",
        "PosePitchDegrees": "0.0",
        "PoseRollDegrees": "0.0",
        "InitialViewHeadingDegrees": f"{initial_view_heading_deg % 360.0:.1f}",
        "InitialViewPitchDegrees": f"{initial_view_pitch_deg:.1f}",
        "InitialViewRollDegrees": "0.0",
        "InitialHorizontalFOVDegrees": f"{initial_hfov_deg:.1f}",
        "FullPanoWidthPixels": str(geometry.full_width),
        "FullPanoHeightPixels": str(geometry.full_height),
        "CroppedAreaImageWidthPixels": str(geometry.cropped_width),
        "CroppedAreaImageHeightPixels": str(geometry.cropped_height),
        "CroppedAreaLeftPixels": str(geometry.cropped_left),
        "CroppedAreaTopPixels": str(geometry.cropped_top),
    }
    attributes = "\n".join(f'    GPano:{key}="{_xml_escape(value)}"' for key, value in fields.items())
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="pano360">\n'
        f' <rdf:RDF xmlns:rdf="{RDF_NS}">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:GPano="{GPANO_NS}"\n'
        f"{attributes}/>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )


def _xml_escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


_INT_FIELDS = {
    "FullPanoWidthPixels", "FullPanoHeightPixels", "CroppedAreaImageWidthPixels",
    "CroppedAreaImageHeightPixels", "CroppedAreaLeftPixels", "CroppedAreaTopPixels", "SourcePhotosCount",
}


def parse_gpano_xmp(xmp: str | bytes) -> dict[str, object]:
    """Read the GPano fields of an XMP packet (attribute or element form) into typed values.

    ``*Pixels`` fields become int, ``*Degrees`` float, ``UsePanoramaViewer`` bool, others str.
    Returns an empty dict when the packet holds no GPano field.
    """
    if isinstance(xmp, bytes):
        xmp = xmp.decode("utf-8", errors="replace")
    start, end = xmp.find("<x:xmpmeta"), xmp.rfind("</x:xmpmeta>")
    body = xmp[start : end + len("</x:xmpmeta>")] if start >= 0 and end > start else xmp
    root = ET.fromstring(body)
    prefix = "{" + GPANO_NS + "}"
    raw: dict[str, str] = {}
    for element in root.iter():
        for key, value in element.attrib.items():
            if key.startswith(prefix):
                raw[key[len(prefix):]] = value
        if element.tag.startswith(prefix) and element.text is not None:
            raw[element.tag[len(prefix):]] = element.text.strip()
    return {key: _typed(key, value) for key, value in raw.items()}


def _typed(key: str, value: str) -> object:
    if key in _INT_FIELDS:
        return int(float(value))
    if key.endswith("Degrees"):
        return float(value)
    if key in ("UsePanoramaViewer", "ExposureLockUsed"):
        return value.strip().lower() == "true"
    return value


# --- embedding in and extracting from encoded files -------------------------------------------

def embed_xmp(data: bytes, xmp: str) -> bytes:
    """Return PNG or JPEG ``data`` with ``xmp`` embedded (PNG iTXt chunk / JPEG APP1 segment)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_insert_itxt(data, xmp)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_insert_app1(data, xmp)
    raise InvalidInputError("XMP can only be embedded in PNG or JPEG files; save as .png or .jpg")


def extract_xmp(data: bytes) -> str | None:
    """Return the XMP packet of PNG or JPEG ``data``, or None if it has none."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        for chunk_type, payload in _png_chunks(data):
            if chunk_type == b"iTXt" and payload.startswith(PNG_XMP_KEYWORD + b"\x00"):
                rest = payload[len(PNG_XMP_KEYWORD) + 1 :]
                compressed, _method = rest[0], rest[1]
                rest = rest[2:]
                _language, rest = rest.split(b"\x00", 1)
                _translated, text = rest.split(b"\x00", 1)
                return (zlib.decompress(text) if compressed else text).decode("utf-8")
        return None
    if data.startswith(b"\xff\xd8"):
        for marker, payload in _jpeg_segments(data):
            if marker == 0xE1 and payload.startswith(JPEG_XMP_HEADER):
                return payload[len(JPEG_XMP_HEADER) :].decode("utf-8")
        return None
    return None


def _png_chunks(data: bytes):
    offset = 8
    while offset + 8 <= len(data):
        length, chunk_type = struct.unpack(">I4s", data[offset : offset + 8])
        yield chunk_type, data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if chunk_type == b"IEND":
            break


def _png_insert_itxt(data: bytes, xmp: str) -> bytes:
    payload = PNG_XMP_KEYWORD + b"\x00\x00\x00" + b"\x00" + b"\x00" + xmp.encode("utf-8")
    chunk = struct.pack(">I", len(payload)) + b"iTXt" + payload
    chunk += struct.pack(">I", zlib.crc32(b"iTXt" + payload) & 0xFFFFFFFF)
    # After IHDR (the first chunk): 8 signature bytes + 25 bytes of IHDR.
    ihdr_end = 8 + 12 + struct.unpack(">I", data[8:12])[0]
    return data[:ihdr_end] + chunk + data[ihdr_end:]


def _jpeg_segments(data: bytes):
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xDA:  # start of scan: metadata segments are over
            break
        length = struct.unpack(">H", data[offset + 2 : offset + 4])[0]
        yield marker, data[offset + 4 : offset + 2 + length]
        offset += 2 + length


def _jpeg_insert_app1(data: bytes, xmp: str) -> bytes:
    payload = JPEG_XMP_HEADER + xmp.encode("utf-8")
    if len(payload) + 2 > 0xFFFF:
        raise InvalidInputError("XMP packet too large for one JPEG APP1 segment")
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    offset = 2
    # Keep a JFIF APP0 first, as readers expect.
    if data[2:4] == b"\xff\xe0":
        offset = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:offset] + segment + data[offset:]
