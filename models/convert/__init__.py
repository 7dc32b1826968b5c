"""Reproducible conversion of the shipped pretrained detectors (``python -m edgecv.models.convert``)."""
