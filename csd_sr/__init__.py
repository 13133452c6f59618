"""The ``csd-sr`` command line, above both halves of the project: ``model`` (train, evaluate, export) and
``service`` (serve, upscale). ``model`` imports nothing from ``service``; this package joins them."""
