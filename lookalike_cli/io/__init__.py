"""The data directory's files: the artifacts registry, the catalog of people, syncing writes to disk."""
