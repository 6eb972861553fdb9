"""Adapters that give each web framework websession in its own idiom.

One module per framework; each imports its framework only when it is imported.
"""
