"""``lookalike eval``: accuracy of a build on labelled photos, and the probe degradations."""
