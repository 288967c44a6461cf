#!/usr/bin/python3
"""An independent reference of the published FFHQ face alignment.

Written from the description of ffhq-dataset's `recreate_aligned_images`
(NVlabs/ffhq-dataset, download_ffhq.py), step for step and with the same libraries
(numpy, PIL, scipy.ndimage), so that the C++ AlignFfhq (server/imaging/align.cc) can be
compared against what FFHQ itself would have produced. Nothing here is shared with the C++.

Coordinates are pixel-index coordinates (pixel centre = integer), as in the FFHQ script.
Uses Debian's python3-numpy, python3-pil and python3-scipy.
"""
import numpy as np
import PIL.Image
import scipy.ndimage

# Pillow renamed its constants (Image.Resampling / Image.Transform, 9.1) and dropped
# Image.ANTIALIAS (10.0); ANTIALIAS always was LANCZOS.
_RESAMPLING = getattr(PIL.Image, "Resampling", PIL.Image)
_TRANSFORM = getattr(PIL.Image, "Transform", PIL.Image)
ANTIALIAS = getattr(_RESAMPLING, "LANCZOS", None) or getattr(PIL.Image, "ANTIALIAS")
BILINEAR = _RESAMPLING.BILINEAR
QUAD = _TRANSFORM.QUAD


def _quarter_turn(v):
    """numpy's flipud(v) * [-1, 1]: (x, y) -> (-y, x)."""
    return np.array([-v[1], v[0]], dtype=np.float64)


def ffhq_quad(eye_left, eye_right, mouth_left, mouth_right):
    """The oriented FFHQ crop square: (quad [4, 2] = c-x-y, c-x+y, c+x+y, c+x-y; qsize)."""
    eye_left, eye_right = np.asarray(eye_left, np.float64), np.asarray(eye_right, np.float64)
    mouth_left, mouth_right = np.asarray(mouth_left, np.float64), np.asarray(mouth_right, np.float64)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - _quarter_turn(eye_to_mouth)
    x = x / np.hypot(x[0], x[1])
    x = x * max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth))
    y = _quarter_turn(x)
    c = eye_avg + 0.1 * eye_to_mouth
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, 2.0 * np.hypot(x[0], x[1])


def _bounds(quad):
    """(floor min x, floor min y, ceil max x, ceil max y) of the quad, as ints."""
    return (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
            int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))


def align(img_uint8_hwc, eye_left, eye_right, mouth_left, mouth_right, output_size,
          transform_size=4096, enable_padding=True, details=None):
    """FFHQ alignment of an RGB photo (uint8 [H, W, 3]).

    Returns (aligned uint8 [output_size, output_size, 3], quad [4, 2] in the photo's
    coordinates). `details`, when a dict, receives what each step decided (shrink, crop,
    pad, the working quad handed to PIL).
    """
    img = PIL.Image.fromarray(np.ascontiguousarray(img_uint8_hwc, dtype=np.uint8), "RGB")
    quad0, qsize = ffhq_quad(eye_left, eye_right, mouth_left, mouth_right)
    quad = quad0.copy()
    info = details if details is not None else {}

    # Shrink by an integer factor when the square is over twice the output size. The FFHQ
    # script divides the coordinates by the factor as they are (not about pixel centres).
    shrink = int(np.floor(qsize / output_size * 0.5))
    info["shrink"] = shrink
    if shrink > 1:
        new_size = (int(np.rint(img.size[0] / float(shrink))), int(np.rint(img.size[1] / float(shrink))))
        img = img.resize(new_size, ANTIALIAS)
        quad = quad / shrink
        qsize = qsize / shrink

    # Crop to the square plus a border, within the photo.
    border = max(int(np.rint(qsize * 0.1)), 3)
    x0, y0, x1, y1 = _bounds(quad)
    crop = (max(x0 - border, 0), max(y0 - border, 0),
            min(x1 + border, img.size[0]), min(y1 + border, img.size[1]))
    info["border"] = border
    info["crop"] = None
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad = quad - np.array(crop[:2], np.float64)
        info["crop"] = crop

    # Pad what the square (plus border) takes from outside the photo: a reflection,
    # blurred towards the edge and faded to the median colour.
    x0, y0, x1, y1 = _bounds(quad)
    pad = [max(border - x0, 0), max(border - y0, 0),
           max(x1 - img.size[0] + border, 0), max(y1 - img.size[1] + border, 0)]
    info["pad"] = None
    if enable_padding and max(pad) > border - 4:
        least = int(np.rint(qsize * 0.3))
        pad = [max(p, least) for p in pad]
        info["pad"] = tuple(pad)
        a = np.asarray(img, dtype=np.float32)
        a = np.pad(a, ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect")
        h, w = a.shape[:2]
        xs = np.arange(w, dtype=np.float32)[None, :, None]
        ys = np.arange(h, dtype=np.float32)[:, None, None]
        near_x = np.minimum(xs / np.float32(pad[0]), (np.float32(w - 1) - xs) / np.float32(pad[2]))
        near_y = np.minimum(ys / np.float32(pad[1]), (np.float32(h - 1) - ys) / np.float32(pad[3]))
        mask = np.maximum(1.0 - near_x, 1.0 - near_y)  # [h, w, 1]: >= 0 inside the pad
        sigma = qsize * 0.02
        blurred = scipy.ndimage.gaussian_filter(a, [sigma, sigma, 0])
        a = a + (blurred - a) * np.clip(3.0 * mask + 1.0, 0.0, 1.0)
        # The median of the image as blurred (this order is the script's).
        median = np.median(a, axis=(0, 1))
        a = a + (median - a) * np.clip(mask, 0.0, 1.0)
        img = PIL.Image.fromarray(np.uint8(np.clip(np.rint(a), 0, 255)), "RGB")
        quad = quad + np.array(pad[:2], np.float64)

    # Resample the square (PIL's QUAD takes continuous coordinates: index + 0.5), then
    # downsize to the output.
    info["working_quad"] = quad.copy()
    img = img.transform((transform_size, transform_size), QUAD, tuple((quad + 0.5).flatten()), BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), ANTIALIAS)
    return np.asarray(img, dtype=np.uint8), quad0


def aligned_position(quad, output_size, points):
    """Where FFHQ's quad geometry puts photo points (pixel-index, [N, 2]) in the aligned
    image of side output_size: S * B^-1 (p - quad[0]) - 0.5, B = [quad[3]-quad[0], quad[1]-quad[0]]."""
    quad = np.asarray(quad, np.float64)
    basis = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1)  # columns: x, y of the output
    rel = np.asarray(points, np.float64) - quad[0]
    return output_size * np.linalg.solve(basis, rel.T).T - 0.5
