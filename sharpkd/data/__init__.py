"""Data: collect source images, resize, slice and split them, degrade them as a link does, store them as shards."""
