"""Thin DVC stage scripts: parse paths, read one params section, call the sharpkd library."""
