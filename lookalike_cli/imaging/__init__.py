"""Photos as pixels: the one policy every command decodes under (formats, bounds, time), gallery folders, tones and
box geometry."""
