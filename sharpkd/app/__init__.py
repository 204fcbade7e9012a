"""The ``sharpkd`` command and the library behind ``sharpkd sharpen``."""
