"""The published gallery: generations, the search structures, distance to percent."""
