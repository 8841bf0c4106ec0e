"""Uploaded files: sniffed, content-addressed on disk, extracted to text for the model."""
