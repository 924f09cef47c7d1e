"""Helpers with no domain: files written atomically."""
