"""The data model: matrix and rows, field patterns and the pin table, tags and image names, labels, the lock
format, GPU run records, errors, YAML with positions, paths and the cache root. Imports nothing above it."""
