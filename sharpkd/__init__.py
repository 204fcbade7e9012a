"""sharpkd: restore the sharpness lost to bilinear downscale/upscale with a tiny distilled CNN."""

__version__ = "0.1.0"
