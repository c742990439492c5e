"""Image options shared by every cxrprep command that writes images, recorded in the manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: decompression-bomb guard: the most pixels (frames x rows x columns x samples) one image may have; the same
#: limit as Pillow's Image.MAX_IMAGE_PIXELS x 2 (its DecompressionBombError threshold)
MAX_IMAGE_PIXELS = 178_956_970


@dataclass(frozen=True)
class ImageSettings:
    """Image options shared by every cxrprep command that writes images (recorded in the manifest)."""

    size: int = 512  # shorter side in pixels after resizing; images are never upscaled
    clahe: bool = True  # write an offline CLAHE copy (image_clahe); --no-clahe -> null
    clahe_clip: float = 2.0  # CLAHE clip limit
    clahe_tiles: int = 8  # CLAHE tile grid is tiles x tiles
    format: str = "jpeg"  # "jpeg" or "png" (lossless)
    quality: int = 95  # JPEG quality 1..100
    max_pixels: int = MAX_IMAGE_PIXELS  # decompression-bomb guard (same limit as Pillow's)

    def __post_init__(self) -> None:
        if self.size < 32:
            raise ValueError(f"--size must be >= 32 pixels, got {self.size}")
        if self.clahe_clip <= 0:
            raise ValueError(f"--clahe-clip must be > 0, got {self.clahe_clip}")
        if not 1 <= self.clahe_tiles <= 64:
            raise ValueError(f"--clahe-tiles must be in 1..64, got {self.clahe_tiles}")
        if self.format not in ("jpeg", "png"):
            raise ValueError(f"--format must be 'jpeg' or 'png', got {self.format!r}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"--quality must be in 1..100, got {self.quality}")
        if self.max_pixels < 1:
            raise ValueError(f"--max-image-pixels must be >= 1, got {self.max_pixels}")

    def manifest(self) -> dict:
        d = asdict(self)
        d.update(dtype="uint8", photometric="MONOCHROME2", interpolation="INTER_AREA", clahe_after_resize=True)
        return d


class ImageError(ValueError):
    """One file could not become an image; ``str(e)`` is the readable reason."""
