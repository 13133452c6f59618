"""Asynchronous jobs: a durable queue (``store``, ``redis_store``) and the loop running it through the
``Upscaler`` (``manager``)."""
