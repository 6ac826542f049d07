"""Photos for pose tests, from the scikit-image package already installed (no image files in this
repository, nothing downloaded):

- ``astronaut()``: Eileen Collins, half body, facing the camera, 512×512 (NASA, public domain);
- ``cameraman()``: a man at a tripod, head to knees, turned to his side, 512×512 grey (CC0);
- ``grass()``: a grass texture, 512×512 grey, nobody in it (CC0).

As bytes: ``tests.face_photos.jpeg(astronaut())``.
"""

from __future__ import annotations

from PIL import Image


def _skimage(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


def astronaut() -> Image.Image:
    return _skimage("astronaut")


def cameraman() -> Image.Image:
    return _skimage("camera")


def grass() -> Image.Image:
    return _skimage("grass")


