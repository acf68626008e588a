"""The data configuration of single-image super-resolution (the ``sr`` task): :class:`SRConfig`.

Kept apart from the task module so the space, the datasets and the exporters can import it
without the task's data code.

A frame of ``frame_w`` × ``frame_h`` LR pixels is upscaled by ``scale`` as tiles: the model runs on
one tile of ``tile`` LR pixels plus ``overlap`` pixels of context on every side (``tile_in`` =
``tile + 2·overlap`` square, the frame edge-padded where a tile reaches past it) and keeps the
central ``tile·scale`` output pixels. The tile changes no weight: it sets the model's input shape
on the board, so one tile's peak RAM, and the number of model calls per frame
(:attr:`SRConfig.tiles_per_frame`), so the frame's latency and Mult-Adds. ``colour`` is ``y``
(the model upscales the BT.601 luma; chroma is upscaled bicubic, as the SR literature scores Y
only) or ``rgb`` (the model upscales all three channels).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from edgenas.errors import ConfigError

COLOURS = ("y", "rgb")
SCALES = (2, 3, 4)


@dataclass(frozen=True)
class SRConfig:
    scale: int = 2
    colour: str = "y"
    tile: int = 64
    overlap: int = 8
    frame_w: int = 320
    frame_h: int = 240

    def __post_init__(self) -> None:
        for name in ("scale", "tile", "overlap", "frame_w", "frame_h"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "colour", str(self.colour))
        if self.scale not in SCALES:
            raise ConfigError(f"scale must be one of {', '.join(map(str, SCALES))}, got {self.scale}")
        if self.colour not in COLOURS:
            raise ConfigError(f"colour must be one of {', '.join(COLOURS)}, got {self.colour!r}")
        if self.tile < 8 or self.overlap < 0:
            raise ConfigError(f"need tile >= 8 and overlap >= 0 LR pixels, got tile {self.tile}, overlap {self.overlap}")
        if self.frame_w <= 0 or self.frame_h <= 0:
            raise ConfigError(f"invalid frame {self.frame_w}x{self.frame_h}")

    @property
    def channels(self) -> int:
        return 1 if self.colour == "y" else 3

    @property
    def tile_in(self) -> int:
        """The model's input side on the board: the tile and its context on both sides."""
        return self.tile + 2 * self.overlap

    @property
    def tiles_per_frame(self) -> int:
        return math.ceil(self.frame_w / self.tile) * math.ceil(self.frame_h / self.tile)

    @property
    def calls_per_input(self) -> int:
        """Model calls per raw input (a frame): its tiles (:func:`edgenas.tasks.calls_per_input`)."""
        return self.tiles_per_frame

    @property
    def feature_shape(self) -> tuple[int, int]:
        return (self.tile_in, self.tile_in)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One tile as the model takes it: [channels, tile_in, tile_in] (LR, values in [0, 1])."""
        return (self.channels, self.tile_in, self.tile_in)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.tile_in * self.scale, self.tile_in * self.scale)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SRConfig":
        return cls(**d)

    def key(self) -> str:
        return f"sr_x{self.scale}_{self.colour}_t{self.tile}o{self.overlap}_{self.frame_w}x{self.frame_h}"
