"""One upscale from the bytes a client sent to the bytes it gets back (``Upscaler``), its options and sizes,
the warm-up that measures the rungs, and the Prometheus metrics it keeps."""
