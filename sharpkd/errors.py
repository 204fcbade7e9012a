"""User-facing errors.

Library code raises :class:`SharpkdError` (or a subclass) for every problem a user can fix:
bad input files, wrong hashes, missing weights, impossible params.  Stage scripts and the
``sharpkd`` command catch it, print the message (no traceback) and exit with status 1.
"""


class SharpkdError(Exception):
    """An error whose message is meant for the user; printed without a traceback."""


class ImageDecodeError(SharpkdError):
    """A file that is not a decodable image."""


class DownloadError(SharpkdError):
    """A download or checksum failure."""


class ArchiveError(SharpkdError):
    """An archive with unsafe or unusable members."""
