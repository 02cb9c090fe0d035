"""Great-circle distance, initial bearing and geohash on columnar float64 arrays (numba kernels).

- **Distance and bearing** on a sphere of radius :data:`EARTH_RADIUS_KM` (6371.0088 km, the IUGG
  mean Earth radius): haversine distance, initial bearing in degrees clockwise from north.
- **Geohash**: the standard base32 geohash; bit ``1`` when the value is ``>=`` the midpoint of
  its interval, so a cell holds its south and west edges ([min, max) intervals) and the last cell
  also its north/east edge (lat 90, lon 180).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG, ``(2a + b) / 3`` of WGS 84) used by :func:`haversine_km`."""

GEOHASH_ALPHABET = b"0123456789bcdefghjkmnpqrstuvwxyz"
MAX_GEOHASH_PRECISION = 12  # 60 bits: fits an int64 and is finer than 4 cm

# --------------------------------------------------------------------------- sphere


def haversine_km(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray,
    radius_km: float = EARTH_RADIUS_KM,
) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (arrays broadcast).

    ``2 r asin(sqrt(hav))`` with ``hav = sin²(Δφ/2) + cos φ1 cos φ2 sin²(Δλ/2)``, clipped to
    ``[0, 1]`` so rounding never makes antipodal points NaN.

    >>> round(float(haversine_km(51.5074, -0.1278, 48.8566, 2.3522)), 1)  # London - Paris
    343.6
    """
    args, shape = _flat_args(lat1, lon1, lat2, lon2)
    h = np.empty(args[0].size)
    _haversine_kernel(*args, h)
    return (2.0 * radius_km * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))).reshape(shape)


def initial_bearing_deg(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    """Initial great-circle bearing from point 1 to point 2, degrees clockwise from north in
    ``[0, 360)``; 0 when the points coincide.

    >>> float(initial_bearing_deg(0.0, 0.0, 0.0, 10.0))  # due east
    90.0
    """
    args, shape = _flat_args(lat1, lon1, lat2, lon2)
    y, x = np.empty(args[0].size), np.empty(args[0].size)
    _bearing_kernel(*args, y, x)
    deg = np.degrees(np.arctan2(y, x))
    deg += np.where(deg < 0.0, 360.0, 0.0)
    return np.where(deg >= 360.0, 0.0, deg).reshape(shape)  # -tiny + 360 rounds to 360.0


def _flat_args(*arrays: Any) -> tuple[list[np.ndarray], tuple[int, ...]]:
    full = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in arrays))
    return [np.ascontiguousarray(a).reshape(-1) for a in full], full[0].shape


# Cephes' sin/cos (Moshier): reduction by π/4 in three parts (exact for |x| < 2**29), then
# degree-13/14 polynomials in the reduced z, within ~1 ulp. Written here rather than calling
# libm so that the loops vectorize: numpy's float64 sin/cos are scalar (~25 ns each), and the
# haversine needs four per point.
_SINCOF = (1.58962301576546568060e-10, -2.50507477628578072866e-8, 2.75573136213857245213e-6,
           -1.98412698295895385996e-4, 8.33333333332211858878e-3, -1.66666666666666307295e-1)
_COSCOF = (-1.13585365213876817300e-11, 2.08757008419747316778e-9, -2.75573141792967388112e-7,
           2.48015872888517045348e-5, -1.38888888888730564116e-3, 4.16666666666665929218e-2)
_DP1, _DP2, _DP3 = 7.85398125648498535156e-1, 3.77489470793079817668e-8, 2.69515142907905952645e-15
_FOUR_OVER_PI = 1.27323954473516268615
_D2R = math.pi / 180.0  # the factor np.radians multiplies by


@numba.njit(cache=True, inline="always")
def _sincos(x):
    ax = abs(x)
    j = np.int64(ax * _FOUR_OVER_PI)
    j += j & 1  # round up to an even octant: z in [-π/4, π/4]
    y = np.float64(j)
    z = ((ax - y * _DP1) - y * _DP2) - y * _DP3
    zz = z * z
    s, c = _SINCOF, _COSCOF
    ps = z + z * zz * (((((s[0] * zz + s[1]) * zz + s[2]) * zz + s[3]) * zz + s[4]) * zz + s[5])
    pc = 1.0 - 0.5 * zz + zz * zz * (
        ((((c[0] * zz + c[1]) * zz + c[2]) * zz + c[3]) * zz + c[4]) * zz + c[5])
    q = j & 7
    swap = (q == 2) | (q == 6)
    sin_ = pc if swap else ps
    cos_ = ps if swap else pc
    sin_ = -sin_ if q >= 4 else sin_
    cos_ = -cos_ if (q == 2) | (q == 4) else cos_
    return (-sin_ if x < 0 else sin_), cos_


@numba.njit(cache=True, inline="always")
def _half_delta_lon(lon1, lon2):
    # Δλ reduced to [-180°, 180°] (exactly: Sterbenz), so every sine argument is within ±π/2
    d = lon2 - lon1
    d = d - 360.0 * math.floor(d / 360.0 + 0.5)
    return d * _D2R * 0.5


@numba.njit(cache=True, nogil=True)
def _haversine_kernel(lat1, lon1, lat2, lon2, out):
    for i in range(len(out)):
        p1, p2 = lat1[i] * _D2R, lat2[i] * _D2R
        s1 = _sincos((p2 - p1) * 0.5)[0]
        s2 = _sincos(_half_delta_lon(lon1[i], lon2[i]))[0]
        out[i] = s1 * s1 + _sincos(p1)[1] * _sincos(p2)[1] * s2 * s2


@numba.njit(cache=True, nogil=True)
def _bearing_kernel(lat1, lon1, lat2, lon2, y, x):
    for i in range(len(y)):
        s1, c1 = _sincos(lat1[i] * _D2R)
        s2, c2 = _sincos(lat2[i] * _D2R)
        sh, ch = _sincos(_half_delta_lon(lon1[i], lon2[i]))
        sin_dl, cos_dl = 2.0 * sh * ch, 1.0 - 2.0 * sh * sh
        y[i] = sin_dl * c2
        x[i] = c1 * s2 - s1 * c2 * cos_dl


# --------------------------------------------------------------------------- geohash


@numba.njit(cache=True, nogil=True)
def _geohash_kernel(lat, lon, precision, alphabet, out):
    n_bits = 5 * precision
    for i in range(len(lat)):
        la0, la1, lo0, lo1 = -90.0, 90.0, -180.0, 180.0
        code = 0
        for b in range(n_bits):
            code <<= 1
            if b % 2 == 0:  # even bits refine longitude
                mid = (lo0 + lo1) / 2
                if lon[i] >= mid:
                    code |= 1
                    lo0 = mid
                else:
                    lo1 = mid
            else:
                mid = (la0 + la1) / 2
                if lat[i] >= mid:
                    code |= 1
                    la0 = mid
                else:
                    la1 = mid
        for c in range(precision):
            out[i, c] = alphabet[(code >> (5 * (precision - 1 - c))) & 31]


def geohash_encode(lat: np.ndarray, lon: np.ndarray, precision: int) -> np.ndarray:
    """Standard base32 geohashes of valid points as a ``[n, precision]`` uint8 array of chars.

    >>> bytes(geohash_encode(np.array([57.64911]), np.array([10.40744]), 11)[0])
    b'u4pruydqqvj'
    """
    if not 1 <= precision <= MAX_GEOHASH_PRECISION:
        raise ValueError(f"geohash precision must be in [1, {MAX_GEOHASH_PRECISION}]")
    lat = np.ascontiguousarray(lat, dtype=np.float64)
    lon = np.ascontiguousarray(lon, dtype=np.float64)
    out = np.empty((len(lat), precision), dtype=np.uint8)
    _geohash_kernel(lat, lon, precision, np.frombuffer(GEOHASH_ALPHABET, np.uint8), out)
    return out
