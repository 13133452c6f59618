"""The load-adaptive upscale service, in rooms that follow a request (docs/architecture.md):

``api`` (HTTP) -> ``jobs`` (background jobs) -> ``upscaling`` (one upscale, bytes to bytes) -> ``scheduling``
(policy, ladder, queue) and ``catalog`` (the served models, their cards, noise levels) -> ``inference``
(backends, tiles, image I/O). ``settings`` and ``errors`` are read by every room.
"""
