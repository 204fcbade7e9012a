"""Video: decode, sharpen and encode through FFmpeg (PyAV), raw frame streams, temporal stability."""
