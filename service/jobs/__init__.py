"""Asynchronous jobs: a durable queue (``store``) and the loop running it through ``service.upscaling``."""
