"""The load-adaptive upscale service: FastAPI app, width policy, tiled inference, Prometheus metrics."""
