"""Images: how they are stored, fetched, written and verified.

``stream`` writes single-stream images (raw or zstd), the simplest shape and that of most
third-party images.
"""
