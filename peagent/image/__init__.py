"""Images: how they are stored, fetched, written and verified.

``stream`` writes single-stream images, the shape of most third-party images (docs/third-party-images.md):
raw or compressed (``compression``: gzip, xz, bzip2, zstd), with a bmap (``bmap``) or a checksum file
(``checksums``), onto a target that keeps what it already holds (``sink``); ``thirdparty`` resolves
what a task or the command line names into a stream job.
"""
