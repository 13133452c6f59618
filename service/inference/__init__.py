"""Pixels in, pixels out: backends (one tile at a rung), tiles over a whole image, image decoding and encoding,
PNG writing, and one image's decode-infer-encode (``process``). No HTTP, no policy."""
