"""Faces: dlib's models, the detection chain, descriptor backends (dlib's or numpy's ResNet) and identity checks."""
