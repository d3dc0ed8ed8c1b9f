"""Preprocessing: slicing volumes into 2D images, windowing, and coarse captions."""
