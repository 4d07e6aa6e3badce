"""Synthetic MRI-like axial head slices: the embedded default dataset behind ``medclf demo``.

Each patient is a head phantom drawn once (head size and ellipticity, position, tilt, ventricle
size, scanner gain and noise level) and then cut into ``slices_per_patient`` axial slices at
neighbouring levels, so the slices of one patient are correlated the way real slices are and a
patient-level split is necessary for an honest estimate.

A slice is composed, outside in, of (intensities roughly T1-weighted post-contrast, in [0, 1]):

* scalp (bright fat), the skull (dark cortical bone) and a thin rim of dark CSF, all elliptical;
* brain: grey matter cortex with a textured, gyrated border to brighter white matter, dark sulci,
  an interhemispheric fissure, deep grey nuclei and two dark lateral ventricles whose size depends
  on the slice level;
* normal bright distractors every class has: the superior sagittal sinus at the back of the
  midline and choroid plexus in the ventricles;
* at most one lesion, set by the patient's class:
  glioma (irregular intra-axial mass, ring-enhancing with a necrotic core or heterogeneous and
  hypointense, with surrounding oedema), meningioma (round, homogeneous, bright, extra-axial: it
  sits on the inner skull surface) or pituitary (small bright oval on the midline, centre-bottom).

The lesion is a 3-D object: its in-plane radius and contrast shrink in slices far from its centre
(partial volume), so some slices show it only faintly. Difficulty comes from those slices, from
small/low-contrast lesions, from noise and from overlapping locations (gliomas near the cortex,
meningiomas and the sagittal sinus both on the skull, pituitary near the bright choroid plexus),
never from label noise. The acquisition adds a smooth bias field, a gain, a small rotation and
Rician noise. Everything is analytic on a coordinate grid (no per-pixel Python loops) and driven
by one ``np.random.default_rng(seed)``, so the same arguments always give the same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["CLASS_NAMES", "Phantoms", "make_phantoms"]

CLASS_NAMES: list[str] = ["normal", "glioma", "meningioma", "pituitary"]
_NORMAL, _GLIOMA, _MENINGIOMA, _PITUITARY = range(4)

# Tissue intensities before gain, bias field and noise (T1-weighted post-contrast look).
_SCALP, _BONE, _CSF, _GM, _WM = 0.62, 0.08, 0.13, 0.42, 0.58
# Layer thicknesses in grid units (the image spans [-1, 1]), so the skull looks the same on every
# head size; at 64 px one pixel is 0.031.
_SCALP_T, _BONE_T, _CSF_T = 0.06, 0.07, 0.03
# Lateral ventricles splay 0.25 rad apart towards the back. Python floats, not NumPy float64
# scalars, so that the float32 grids are not promoted to float64.
_COS_SPLAY, _SIN_SPLAY = math.cos(0.25), math.sin(0.25)
# Pixels rendered at once (256 slices of 64 x 64): bounds memory for large requests without
# slowing small ones. The chunking depends only on image_size, so output stays deterministic.
_CHUNK_PIXELS = 256 * 64 * 64


@dataclass(frozen=True)
class Phantoms:
    """A synthetic dataset, index-aligned.

    Attributes:
        images: (N, 1, H, W) uint8 slices.
        labels: (N,) int64 class indices into ``class_names``.
        patient_ids: (N,) str such as "P0007"; all slices of one patient share it.
        class_names: the class of each label index, in index order.
    """

    images: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray
    class_names: list[str]


def make_phantoms(
    *, n_patients: int = 120, slices_per_patient: int = 8, image_size: int = 64, seed: int = 0
) -> Phantoms:
    """Generate a deterministic synthetic brain-MRI classification dataset.

    Patients are assigned to classes by a shuffled round-robin, so class counts (in patients and
    in slices) differ by at most one patient. Slices are ordered patient by patient.

    Args:
        n_patients: number of patients (>= 1); each has one class.
        slices_per_patient: axial slices per patient (>= 1), at neighbouring levels.
        image_size: height and width of every slice, in pixels (>= 16).
        seed: seed of the only random generator used; same arguments give byte-identical arrays.

    Returns:
        Phantoms with images (N, 1, image_size, image_size) uint8, labels (N,) int64, patient_ids
        (N,) str and ``class_names`` == ``CLASS_NAMES``, where N = n_patients * slices_per_patient.

    Raises:
        ValueError: if an argument is out of range.
    """
    if n_patients < 1 or slices_per_patient < 1:
        raise ValueError(f"need n_patients >= 1 and slices_per_patient >= 1, got {n_patients}, {slices_per_patient}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16 pixels, got {image_size}")
    rng = np.random.default_rng(seed)
    patient_labels = rng.permutation(np.arange(n_patients) % len(CLASS_NAMES))
    labels = np.repeat(patient_labels, slices_per_patient).astype(np.int64)
    params = _sample_params(rng, labels, n_patients, slices_per_patient)
    n = len(labels)
    images = np.empty((n, 1, image_size, image_size), dtype=np.uint8)
    chunk = max(1, _CHUNK_PIXELS // image_size**2)
    for start in range(0, n, chunk):
        part = {k: v[start : start + chunk] for k, v in params.items()}
        images[start : start + chunk, 0] = _render(rng, part, image_size)
    patient_ids = np.repeat(np.array([f"P{i:04d}" for i in range(n_patients)]), slices_per_patient)
    return Phantoms(images=images, labels=labels, patient_ids=patient_ids, class_names=list(CLASS_NAMES))


def _sample_params(rng: np.random.Generator, labels: np.ndarray, n_patients: int, spp: int) -> dict:
    """Draw every scalar of every slice: per-patient values are repeated over its slices.

    All parameters are drawn for every slice whatever its class (unused ones are ignored), so the
    random stream, and hence every image, does not depend on how the classes fell.
    """
    n = n_patients * spp

    def patient(lo: float, hi: float) -> np.ndarray:
        return np.repeat(rng.uniform(lo, hi, n_patients), spp)

    p: dict[str, np.ndarray] = {"label": labels}
    # Anatomy: head half-width, aspect (heads are longer front-to-back), centre, tilt.
    p["a"] = patient(0.7, 0.82)
    p["b"] = p["a"] * patient(1.1, 1.22)
    # Centre: the patient's position plus a little motion between slices.
    p["cx"] = patient(-0.04, 0.04) + rng.normal(0.0, 0.015, n)
    p["cy"] = patient(-0.04, 0.04) + rng.normal(0.0, 0.015, n)
    p["angle"] = patient(-0.12, 0.12) + rng.normal(0.0, 0.05, n)  # radians; positioning jitter
    p["vent"] = patient(0.8, 1.25)  # ventricle size varies with age
    p["sinus"] = patient(0.0, 1.0)  # how bright the flow in the sagittal sinus is
    p["plexus"] = patient(0.0, 1.0)
    # Slice level z in [-1, 1] (0 = ventricles): a contiguous stack starting at a random level.
    step = 0.9 / max(spp - 1, 1)
    p["z"] = patient(-0.65, -0.2) + np.tile(np.arange(spp) * step, n_patients)
    # Acquisition. Gain and noise level are partly the scanner's (per patient) and partly the
    # per-slice windowing of exported images; keeping the per-patient share modest also stops a
    # classifier from identifying patients by brightness instead of by their lesions.
    p["gain"] = patient(0.92, 1.08) * rng.uniform(0.93, 1.07, n)
    p["noise"] = patient(0.03, 0.055) * rng.uniform(0.85, 1.15, n)
    p["bias"] = rng.uniform(-0.12, 0.12, (n, 3))  # per-slice bias field coefficients
    _sample_lesion(rng, p, n_patients, spp)
    return p


def _sample_lesion(rng: np.random.Generator, p: dict, n_patients: int, spp: int) -> None:
    """Add the lesion's per-patient size, position, contrast, shape and extent along z to ``p``."""

    def patient(lo: float, hi: float, size: tuple[int, ...] = ()) -> np.ndarray:
        return np.repeat(rng.uniform(lo, hi, (n_patients, *size)), spp, axis=0)

    label = p["label"]
    radius = patient(0.13, 0.28)
    radius = np.where(label == _PITUITARY, radius * 0.6, radius)  # pituitary adenomas are small
    p["l_radius"] = radius
    p["l_contrast"] = patient(0.75, 1.0)
    p["l_theta"] = patient(0.0, 2 * np.pi)  # direction from the brain centre
    p["l_depth"] = patient(0.1, 0.75)  # glioma: distance from the brain centre, in brain radii
    p["l_pit_y"] = patient(0.1, 0.45)  # pituitary: fraction of the brain half-height below centre
    p["l_pit_x"] = patient(-0.04, 0.04)
    p["l_ring"] = patient(0.0, 1.0) < 0.7  # high-grade gliomas enhance in a ring
    p["l_harm"] = patient(-0.16, 0.16, (3,))  # boundary harmonics 2..4: irregular outline
    p["l_phase"] = patient(0.0, 2 * np.pi, (3,))
    p["l_edema"] = patient(1.4, 2.2)  # oedema reach in lesion radii
    # The lesion's centre level lies inside the stack, so every slice shows some of it.
    z = p["z"].reshape(n_patients, spp)
    centre = rng.uniform(z[:, 0], z[:, -1])
    p["l_z"] = np.repeat(centre, spp)
    p["l_zext"] = patient(0.6, 1.1)  # half-extent along z


def _step(v: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased indicator of ``v > 0``: a linear ramp one ``width`` wide (partial volume)."""
    return np.clip(0.5 + v / width, 0.0, 1.0)


def _mix(a: np.ndarray, b: np.ndarray | float, w: np.ndarray) -> np.ndarray:
    """``a`` where ``w`` is 0, ``b`` where it is 1."""
    return a + (b - a) * w


def _col(v: np.ndarray) -> np.ndarray:
    """(n,) per-slice values as (n, 1, 1) so they broadcast against (n, H, W) grids."""
    return np.asarray(v, dtype=np.float32)[:, None, None]


def _smooth_noise(rng: np.random.Generator, shape: tuple, sigma_px: float) -> np.ndarray:
    """Gaussian random field with unit standard deviation and correlation length ``sigma_px``."""
    field = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=(0, sigma_px, sigma_px), mode="wrap")
    return field / (field.std(axis=(1, 2), keepdims=True) + 1e-12)


def _render(rng: np.random.Generator, p: dict, size: int) -> np.ndarray:
    """Render a chunk of slices described by ``p`` to (n, size, size) uint8."""
    n = len(p["label"])
    pix = 2.0 / size
    grid = ((np.arange(size) + 0.5) * pix - 1.0).astype(np.float32)  # float32: 2x faster, ample precision
    gx, gy = grid[None, None, :], grid[None, :, None]
    # Head-centred, tilted frame: anatomy is drawn in (x, y); y grows towards the back (image bottom).
    cos, sin = _col(np.cos(p["angle"])), _col(np.sin(p["angle"]))
    dx, dy = gx - _col(p["cx"]), gy - _col(p["cy"])
    x, y = cos * dx + sin * dy, -sin * dx + cos * dy
    # Cross-sections shrink towards the vertex and the skull base.
    level = _col(np.sqrt(1.0 - 0.3 * p["z"] ** 2))
    a, b = _col(p["a"]) * level, _col(p["b"]) * level
    depth = (1.0 - np.sqrt((x / a) ** 2 + (y / b) ** 2)) * (a + b) / 2  # ~distance inside the scalp
    tex = [_smooth_noise(rng, (n, size, size), s * size / 64) for s in (0.7, 1.3, 3.0)]
    inner = _SCALP_T + _BONE_T + _CSF_T  # scalp surface to brain surface
    geo = {
        "x": x,
        "y": y,
        "ab": a - inner,
        "bb": b - inner,
        "tex": tex[1],
        "brain": _step(depth - inner, pix),
        "intracranial": _step(depth - _SCALP_T - _BONE_T, pix),
    }
    sig = _head(depth, tex, pix)
    sig = _deep_structures(sig, p, geo, pix)
    sig = _lesions(sig, p, geo, pix)
    return _acquire(rng, sig, p, gx, gy)


def _head(depth: np.ndarray, tex: list[np.ndarray], pix: float) -> np.ndarray:
    """Scalp, skull, CSF rim and textured cortex/white matter with sulci, from outside in."""
    sig = _SCALP * _step(depth, pix)
    sig = _mix(sig, _BONE, _step(depth - _SCALP_T, pix))
    sig = _mix(sig, _CSF, _step(depth - _SCALP_T - _BONE_T, pix))
    cortex_depth = depth - (_SCALP_T + _BONE_T + _CSF_T)
    # Grey/white border wanders with a smooth field: a gyral pattern rather than a clean ellipse.
    white = _step(cortex_depth - 0.1 + 0.04 * tex[2], 2 * pix)
    tissue = _mix(np.full_like(depth, _GM), _WM, white) * (1.0 + 0.03 * tex[0])
    # Sulci: thin winding lines (zero crossings of a smooth field) that fade towards the white matter.
    sulci = np.clip(1.0 - np.abs(tex[1]) / 0.3, 0.0, 1.0) * np.clip(1.0 - cortex_depth / 0.12, 0.0, 1.0)
    tissue = _mix(tissue, _CSF, 0.7 * sulci)
    return _mix(sig, tissue, _step(cortex_depth, pix))


def _ellipse(x: np.ndarray, y: np.ndarray, cx, cy, rx, ry, pix: float) -> np.ndarray:
    """Anti-aliased filled ellipse (centre and semi-axes broadcast against the grid)."""
    # Clamp so a vanished structure (radius 0) renders as nothing rather than as NaN or 0.5; as
    # float32, because np.maximum of two Python floats is a float64 that would promote the grids.
    rx, ry = (np.maximum(np.asarray(r, dtype=np.float32), np.float32(1e-6)) for r in (rx, ry))
    rho = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return _step((1.0 - rho) * np.minimum(rx, ry), pix)


def _deep_structures(sig: np.ndarray, p: dict, geo: dict, pix: float) -> np.ndarray:
    """Midline fissure, deep grey nuclei, lateral ventricles, choroid plexus and sagittal sinus."""
    x, y, ab, bb, brain = geo["x"], geo["y"], geo["ab"], geo["bb"], geo["brain"]
    # Fissure between the hemispheres, visible front and back of the ventricles.
    fissure = np.exp(-((x / (0.6 * pix)) ** 2)) * _step(np.abs(y) / bb - 0.45, 0.2)
    sig = _mix(sig, _CSF, 0.6 * fissure * brain)
    # Ventricles and nuclei exist only around z = 0.1; ventricles grow with the patient's age.
    vis = _col(np.clip(1.0 - ((p["z"] - 0.1) / 0.6) ** 2, 0.0, 1.0))
    f = _col(p["vent"]) * np.sqrt(vis)
    for side in (-1.0, 1.0):
        nucleus = _ellipse(x, y, side * 0.2 * ab, 0.05 * bb, 0.1 * ab, 0.16 * bb, pix)
        sig = _mix(sig, 0.47, 0.8 * vis * nucleus)
        # Each lateral ventricle: an oval splayed outwards towards the back, frontal horns together.
        xr, yr = x - side * (0.1 * ab + 0.02), y + 0.12 * bb
        xt = xr * _COS_SPLAY - side * yr * _SIN_SPLAY
        yt = side * xr * _SIN_SPLAY + yr * _COS_SPLAY
        vent = _ellipse(xt, yt, 0.0, 0.0, 0.055 * f, 0.28 * bb * f, pix)
        sig = _mix(sig, _CSF, vent * brain)
        # Enhancing choroid plexus at the back of the ventricle: a normal bright spot.
        plexus = _ellipse(x, y, side * 0.13 * ab, 0.1 * bb, 0.03 * f, 0.03 * f, pix)
        sig = _mix(sig, 0.75, plexus * _col(p["plexus"]) * vis)
    # Flow in the superior sagittal sinus: bright dot on the midline at the back of the skull.
    sinus = _ellipse(x, y, 0.0, bb + 0.01, 0.035, 0.03, pix)
    return _mix(sig, 0.8, sinus * _col(p["sinus"]))


def _lesions(sig: np.ndarray, p: dict, geo: dict, pix: float) -> np.ndarray:
    """Paint each slice's lesion, rendering each class only on its own slices."""
    # Spherical-ish lesion: cross-section falls off away from its centre level, never to zero.
    # These floors, with the size and contrast ranges in _sample_lesion, set the difficulty: they
    # were calibrated so timm's test_resnet, trained as in the demo (8 epochs, patient-wise 5-fold
    # CV), scores about 0.88-0.92 mean accuracy across seeds (0.92 at seed 0), not 1.0.
    frac = np.clip(1.0 - ((p["z"] - p["l_z"]) / p["l_zext"]) ** 2, 0.35, 1.0)
    radius = p["l_radius"] * np.sqrt(frac)
    alpha = p["l_contrast"] * (0.55 + 0.45 * frac)
    out = sig.copy()
    for label, paint in ((_GLIOMA, _glioma), (_MENINGIOMA, _meningioma), (_PITUITARY, _pituitary)):
        idx = np.flatnonzero(p["label"] == label)
        if len(idx):
            q = {k: v[idx] for k, v in p.items()}
            g = {k: v[idx] for k, v in geo.items()}
            lesion, weight = paint(sig[idx], q, g, _col(radius[idx]), pix)
            out[idx] = _mix(sig[idx], lesion, weight * _col(alpha[idx]))
    return out


def _meningioma(sig: np.ndarray, p: dict, g: dict, r: np.ndarray, pix: float) -> tuple[np.ndarray, np.ndarray]:
    """Round, homogeneous, bright extra-axial mass: broad-based on the inner skull surface."""
    th = _col(p["l_theta"])
    bx, by = g["ab"] * np.cos(th), g["bb"] * np.sin(th)
    inward = 1.0 - 0.45 * r / np.sqrt(bx**2 + by**2)  # centre just inside the brain surface
    mass = _ellipse(g["x"], g["y"], bx * inward, by * inward, r, r, pix) * g["intracranial"]
    return 0.88 * (1.0 + 0.02 * g["tex"]), mass


def _pituitary(sig: np.ndarray, p: dict, g: dict, r: np.ndarray, pix: float) -> tuple[np.ndarray, np.ndarray]:
    """Small bright oval, wider than tall, on the midline below the centre."""
    cx, cy = _col(p["l_pit_x"]) * g["ab"], _col(p["l_pit_y"]) * g["bb"]
    mass = _ellipse(g["x"], g["y"], cx, cy, 1.3 * r, r, pix) * g["brain"]
    return np.full_like(sig, 0.86), mass


def _glioma(sig: np.ndarray, p: dict, g: dict, r: np.ndarray, pix: float) -> tuple[np.ndarray, np.ndarray]:
    """Irregular intra-axial mass with oedema; ring-enhancing with necrosis, or solid and mottled."""
    th, depth, tex = _col(p["l_theta"]), _col(p["l_depth"]), g["tex"]
    dx = g["x"] - depth * g["ab"] * np.cos(th)
    dy = g["y"] - depth * g["bb"] * np.sin(th)
    phi = np.arctan2(dy, dx)
    # Radius varies with direction (harmonics 2..4) and locally with texture: an infiltrating edge.
    wobble = 1.0 + 0.06 * tex
    for k in range(3):
        wobble = wobble + _col(p["l_harm"][:, k]) * np.cos((k + 2) * phi + _col(p["l_phase"][:, k]))
    edge = r * np.maximum(wobble, 0.4)
    u = np.sqrt(dx**2 + dy**2) / edge  # 1 on the tumour edge
    mass = _step((1.0 - u) * edge, pix) * g["brain"]
    reach = _col(p["l_edema"])
    edema = np.clip((reach - u) / (reach - 1.0), 0.0, 1.0) * g["brain"]
    ring = _col(p["l_ring"])
    rim = _step((u - 0.55) * edge, pix)
    enhancing = _mix(np.full_like(u, 0.3), 0.9, rim) * (1.0 + 0.08 * tex)
    solid = 0.3 * (1.0 + 0.15 * tex) + 0.5 * np.clip(tex - 0.6, 0.0, 1.0)  # hypointense, patchy enhancement
    core = ring * enhancing + (1.0 - ring) * solid
    # Oedema (hypointense on T1) is the lesion value outside the mass, blended in more weakly.
    return _mix(np.full_like(u, 0.38), core, mass), np.maximum(mass, 0.7 * edema)


def _acquire(rng: np.random.Generator, sig: np.ndarray, p: dict, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Scanner effects: smooth bias field, gain, Rician noise, then 8-bit quantisation."""
    c = p["bias"]
    # Receive-coil inhomogeneity: a smooth low-order field fixed to the scanner, not the head.
    field = 1.0 + _col(c[:, 0]) * gx + _col(c[:, 1]) * gy + _col(c[:, 2]) * (gx**2 + gy**2 - 0.5)
    sig = sig * field * _col(p["gain"])
    # Magnitude images: noise in both quadrature channels, so the background is Rayleigh, not 0.
    s = _col(p["noise"])
    real = sig + s * rng.standard_normal(sig.shape, dtype=np.float32)
    imag = s * rng.standard_normal(sig.shape, dtype=np.float32)
    mag = np.sqrt(real**2 + imag**2)
    return np.round(np.clip(mag, 0.0, 1.0) * 255.0).astype(np.uint8)
