"""The build stages (filter, embed, clean, calibrate, index) and ``build``, which chains them."""
