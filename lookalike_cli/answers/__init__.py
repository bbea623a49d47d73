"""Answering a photo: the query engine, the recognizer's worker processes, the answer picture, the answer log,
monitoring and its stats."""
