"""Compiled loops (numba, ``cache=True``): CRC-32C, TFRecord framing scans and a tf.Example
wire-format walker.

Everything here works on one ``uint8`` buffer plus int64 offset/length arrays, so a batch of
records costs no Python object per record. Integer arithmetic stays in int64 (or uint64 where a
varint needs all 64 bits) so that numba never promotes mixed signed/unsigned values to float.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# --- CRC-32C (Castagnoli), slicing-by-8 -------------------------------------------------------


def _crc_tables() -> np.ndarray:
    poly = 0x82F63B78
    table = np.zeros((8, 256), dtype=np.int64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table[0, i] = c
    for i in range(256):
        c = int(table[0, i])
        for k in range(1, 8):
            c = int(table[0, c & 0xFF]) ^ (c >> 8)
            table[k, i] = c
    return table


CRC_TABLES = _crc_tables()


def _native_crc32c() -> int:
    """Address of ``crc32c_extend(uint32 crc, const uint8 *data, size_t n)`` in the library that
    google-crc32c ships (hardware CRC instructions), or 0 to use the tables below."""
    try:
        import google_crc32c

        root = Path(google_crc32c.__file__).parent
        for lib in sorted(root.parent.glob("google_crc32c.libs/libcrc32c*")) + sorted(
            root.glob("*crc32c*.so*")
        ):
            try:
                fn = ctypes.CDLL(str(lib)).crc32c_extend
            except (OSError, AttributeError):
                continue
            return ctypes.cast(fn, ctypes.c_void_p).value or 0
    except ImportError:
        pass
    return 0


# Passed to the kernels as a plain integer so that their cached machine code holds no address.
CRC_FN = _native_crc32c()


@intrinsic
def _call_crc32c_extend(typingctx, fn, crc, buf, start, count):
    """``((uint32 (*)(uint32, const uint8 *, size_t)) fn)(crc, &buf[start], count)``."""
    sig = types.uint32(types.int64, types.uint32, buf, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        fn_addr, crc_v, arr_v, start_v, count_v = args
        data = context.make_array(signature.args[2])(context, builder, value=arr_v).data
        ptr = builder.gep(data, [start_v])
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32), i8p, ir.IntType(64)])
        callee = builder.inttoptr(fn_addr, fnty.as_pointer())
        return builder.call(callee, [crc_v, builder.bitcast(ptr, i8p), count_v])

    return sig, codegen


@intrinsic
def _at(typingctx, arr, index):
    """``arr[index]`` for an ``index`` known to be in bounds and non-negative: numba's indexing
    adds a negative-index (wraparound) select to every load, which costs the byte loops of the
    wire-format walk a good part of their time and keeps LLVM from vectorizing them."""
    sig = arr.dtype(arr, types.int64)

    def codegen(context, builder, signature, args):
        arr_v, index_v = args
        data = context.make_array(signature.args[0])(context, builder, value=arr_v).data
        return builder.load(builder.gep(data, [index_v]))

    return sig, codegen


@intrinsic
def _load8(typingctx, arr, index):
    """The 8 bytes ``arr[index:index + 8]`` as a little-endian uint64 (the caller checked that
    they lie in ``arr``)."""
    sig = types.uint64(arr, types.int64)

    def codegen(context, builder, signature, args):
        arr_v, index_v = args
        data = context.make_array(signature.args[0])(context, builder, value=arr_v).data
        ptr = builder.bitcast(builder.gep(data, [index_v]), ir.IntType(64).as_pointer())
        return builder.load(ptr, align=1)

    return sig, codegen


MASK32 = 0xFFFFFFFF
MASK_DELTA = 0xA282EAD8
HEADER = 12  # uint64 length + masked crc32c of the length
FOOTER = 4  # masked crc32c of the data
HUGE = 1 << 62  # a length field with its top bit set: nothing that large can follow


@njit(cache=True, nogil=True)
def crc32c(buf, start, end, t):
    crc = np.int64(MASK32)
    i = start
    while i + 8 <= end:
        lo = crc ^ (
            np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8)
            | (np.int64(buf[i + 2]) << 16) | (np.int64(buf[i + 3]) << 24)
        )
        hi = (
            np.int64(buf[i + 4]) | (np.int64(buf[i + 5]) << 8)
            | (np.int64(buf[i + 6]) << 16) | (np.int64(buf[i + 7]) << 24)
        )
        crc = (
            t[7, lo & 0xFF] ^ t[6, (lo >> 8) & 0xFF] ^ t[5, (lo >> 16) & 0xFF] ^ t[4, lo >> 24]
            ^ t[3, hi & 0xFF] ^ t[2, (hi >> 8) & 0xFF] ^ t[1, (hi >> 16) & 0xFF] ^ t[0, hi >> 24]
        )
        i += 8
    while i < end:
        crc = t[0, (crc ^ np.int64(buf[i])) & 0xFF] ^ (crc >> 8)
        i += 1
    return crc ^ MASK32


@njit(cache=True, nogil=True, inline="always")
def data_crc32c(buf, start, end, t, fn):
    """CRC-32C of ``buf[start:end]``: the native library when ``fn`` is its address, else the
    tables."""
    if fn != 0:
        return np.int64(_call_crc32c_extend(fn, np.uint32(0), buf, start, end - start))
    return crc32c(buf, start, end, t)


@njit(cache=True, nogil=True)
def _masked(crc):
    return ((((crc >> 15) | (crc << 17)) & MASK32) + MASK_DELTA) & MASK32


@njit(cache=True, nogil=True)
def _u32(buf, p):
    return (
        np.int64(_at(buf, p)) | (np.int64(_at(buf, p + 1)) << 8)
        | (np.int64(_at(buf, p + 2)) << 16) | (np.int64(_at(buf, p + 3)) << 24)
    )


@njit(cache=True, nogil=True)
def _length(buf, p):
    if buf[p + 7] >= 0x80:
        return np.int64(HUGE)
    n = np.int64(0)
    for k in range(7, -1, -1):
        n = (n << 8) | np.int64(buf[p + k])
    return n


@njit(cache=True, nogil=True)
def _header_ok(buf, p, t, fn):
    return _masked(data_crc32c(buf, p, p + 8, t, fn)) == _u32(buf, p + 8)


# --- framing --------------------------------------------------------------------------------------

SCAN_MORE = 0  # stopped at an incomplete record (or the end): give me more bytes
SCAN_FULL = 1  # output arrays full
SCAN_BAD_LENGTH = 2  # the length's checksum does not match
SCAN_BAD_DATA = 3  # the data's checksum does not match (the length is trustworthy)


@njit(cache=True, nogil=True)
def scan(buf, pos, verify, t, fn, out_off, out_len):
    """Frame records from ``pos``: fills ``out_off``/``out_len`` with data spans.

    Returns ``(n, pos, status)``; ``pos`` is the first byte not consumed (the start of the record
    that stopped the scan).
    """
    end = len(buf)
    n = 0
    while n < len(out_off):
        if pos + HEADER > end:
            return n, pos, SCAN_MORE
        if verify and not _header_ok(buf, pos, t, fn):
            return n, pos, SCAN_BAD_LENGTH
        length = _length(buf, pos)
        if length > end - pos - HEADER - FOOTER:
            return n, pos, SCAN_MORE
        data = pos + HEADER
        if verify and _masked(data_crc32c(buf, data, data + length, t, fn)) != _u32(
            buf, data + length
        ):
            return n, pos, SCAN_BAD_DATA
        out_off[n] = data
        out_len[n] = length
        n += 1
        pos = data + length + FOOTER
    return n, pos, SCAN_FULL


@njit(cache=True, nogil=True)
def resync(buf, pos, t, fn):
    """First position >= ``pos`` holding a record header whose checksum matches, or -1."""
    while pos + HEADER <= len(buf):
        if _header_ok(buf, pos, t, fn):
            return pos
        pos += 1
    return -1


TAG_BYTES = 28  # uint64 ordinal, int64 stream offset, int64 length, uint32 masked data CRC


@njit(cache=True, nogil=True)
def _record_tag(ordinal, offset, length, data_crc, scratch, t, fn):
    """CRC-32C of ``(ordinal, offset, length, data_crc)`` little-endian: what an index stores to
    bind its entry ``ordinal`` to the one record it names."""
    for k in range(8):
        scratch[k] = np.uint8((ordinal >> (8 * k)) & 0xFF)
        scratch[8 + k] = np.uint8((offset >> (8 * k)) & 0xFF)
        scratch[16 + k] = np.uint8((length >> (8 * k)) & 0xFF)
    for k in range(4):
        scratch[24 + k] = np.uint8((data_crc >> (8 * k)) & 0xFF)
    return data_crc32c(scratch, 0, TAG_BYTES, t, fn)


@njit(cache=True, nogil=True)
def record_tags(first, offsets, lengths, data_crcs, t, fn, out):
    """``out[i]``: the tag of record ``first + i`` (see ``_record_tag``)."""
    scratch = np.empty(TAG_BYTES, dtype=np.uint8)
    for i in range(len(offsets)):
        out[i] = _record_tag(first + i, offsets[i], lengths[i], np.int64(data_crcs[i]), scratch,
                             t, fn)


@njit(cache=True, nogil=True)
def verify_framed(buf, rec_off, rec_len, data_crc, first, base, tags, t, fn):
    """Check records framed at known offsets (from an index): returns ``(i, problem)`` of the
    first bad one (problem 1: stored length differs from the index, 2: length checksum,
    3: data checksum, checked only with ``data_crc``, 4: the record is not the one the index's
    tag names: record ``first + i`` at stream offset ``base + rec_off[i]``) or ``(-1, 0)``. The
    caller guarantees that ``buf`` holds every ``rec_off[i] + HEADER + rec_len[i] + FOOTER``
    bytes."""
    scratch = np.empty(TAG_BYTES, dtype=np.uint8)
    for i in range(len(rec_off)):
        p = rec_off[i]
        if not _header_ok(buf, p, t, fn):
            return i, 2
        if _length(buf, p) != rec_len[i]:
            return i, 1
        data = p + HEADER
        stored = _u32(buf, data + rec_len[i])
        if data_crc and _masked(data_crc32c(buf, data, data + rec_len[i], t, fn)) != stored:
            return i, 3
        if _record_tag(first + i, base + p, rec_len[i], stored, scratch, t, fn) != tags[i]:
            return i, 4
    return -1, 0


@njit(cache=True, nogil=True)
def frame_block(buf, rec_off, rec_len, t, fn, out):
    """Frame records ``buf[rec_off[i]:rec_off[i] + rec_len[i]]`` back to back into ``out`` (of
    ``sum(rec_len) + 16 * n`` bytes; the caller checked every span lies in ``buf``)."""
    p = 0
    for i in range(len(rec_off)):
        s = rec_off[i]
        n = rec_len[i]
        for k in range(8):
            out[p + k] = np.uint8((n >> (8 * k)) & 0xFF)
        crc = _masked(data_crc32c(out, p, p + 8, t, fn))
        for k in range(4):
            out[p + 8 + k] = np.uint8((crc >> (8 * k)) & 0xFF)
        p += HEADER
        out[p : p + n] = buf[s : s + n]
        crc = _masked(data_crc32c(buf, s, s + n, t, fn))
        p += n
        for k in range(4):
            out[p + k] = np.uint8((crc >> (8 * k)) & 0xFF)
        p += FOOTER
    return p


# --- tf.Example wire format -----------------------------------------------------------------------
# Example { Features features = 1 }  Features { map<string, Feature> feature = 1 }
# map entry { string key = 1; Feature value = 2 }
# Feature { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
#                        Int64List int64_list = 3 } }
# *List { repeated <type> value = 1 }  (int64/float packed by default; unpacked also accepted)

KIND_NONE, KIND_BYTES, KIND_FLOAT, KIND_INT64 = 0, 1, 2, 3

OK = 0
BAD_VARINT = 1  # varint runs past its message or is longer than 10 bytes
BAD_LENGTH = 2  # a length-delimited field runs past its message
BAD_WIRETYPE = 3  # wire type 6 or 7, or field number 0
BAD_PACKED = 4  # packed floats not a multiple of 4 bytes
# an encoding whose meaning needs protobuf's own rules (merged oneofs or map values, groups, a
# map entry with unknown fields, which protobuf drops): the caller decodes the batch with the
# reference parser instead
UNUSUAL = 5
BAD_UTF8 = 6  # a map key (a proto3 string) that is not valid UTF-8
MAX_HINTS = 256  # entry positions whose feature is remembered from record to record


@njit(cache=True, nogil=True, inline="always")
def _varint(buf, p, end):
    """Returns (value as uint64, new position) or (0, -1) when malformed."""
    if p < end and _at(buf, p) < 0x80:  # tags and short lengths: one byte
        return np.uint64(_at(buf, p)), p + 1
    result = np.uint64(0)
    shift = np.uint64(0)
    for _ in range(10):
        if p >= end:
            return np.uint64(0), -1
        b = _at(buf, p)
        p += 1
        result |= np.uint64(b & 0x7F) << shift
        if b < 0x80:
            return result, p
        shift += np.uint64(7)
    return np.uint64(0), -1


@njit(cache=True, nogil=True)
def _skip(buf, p, end, wire):
    """Skip one field's payload; returns the new position or a negative error code."""
    if wire == 0:
        _, q = _varint(buf, p, end)
        return q if q >= 0 else -BAD_VARINT
    if wire == 1:
        return p + 8 if p + 8 <= end else -BAD_LENGTH
    if wire == 5:
        return p + 4 if p + 4 <= end else -BAD_LENGTH
    if wire == 2:
        n, q = _varint(buf, p, end)
        if q < 0:
            return -BAD_VARINT
        if n > np.uint64(end - q):
            return -BAD_LENGTH
        return q + np.int64(n)
    return -BAD_WIRETYPE


@njit(cache=True, nogil=True, inline="always")
def _field(buf, p, end):
    """Read a tag and, for length-delimited fields, the length.

    Returns (field, wire, payload_start, payload_end, error)."""
    first = _at(buf, p) if p + 1 < end else 0
    if first < 0x80 and first & 7 == 2 and first >= 8 and _at(buf, p + 1) < 0x80:
        # the common case: a one-byte tag of a length-delimited field with a one-byte length
        e = p + 2 + np.int64(_at(buf, p + 1))
        if e > end:
            return 0, 0, 0, 0, BAD_LENGTH
        return np.int64(first >> 3), np.int64(2), p + 2, e, OK
    tag, q = _varint(buf, p, end)
    if q < 0 or q - p > 5 or tag > np.uint64(0xFFFFFFFF):  # protobuf's tags are 32-bit varints
        return 0, 0, 0, 0, BAD_VARINT
    field = np.int64(tag >> np.uint64(3))
    wire = np.int64(tag & np.uint64(7))
    if field == 0 or wire == 6 or wire == 7:
        return 0, 0, 0, 0, BAD_WIRETYPE
    if wire == 3 or wire == 4:  # a group: protobuf skips a well-formed one; let it decide
        return 0, 0, 0, 0, UNUSUAL
    if wire == 2:
        n, r = _varint(buf, q, end)
        if r < 0:
            return 0, 0, 0, 0, BAD_VARINT
        if n > np.uint64(end - r):
            return 0, 0, 0, 0, BAD_LENGTH
        return field, wire, r, r + np.int64(n), OK
    nxt = _skip(buf, q, end, wire)
    if nxt < 0:
        return 0, 0, 0, 0, -nxt
    return field, wire, q, nxt, OK


@njit(cache=True, nogil=True)
def _count_terminal_bytes(buf, s, e):
    """Varints in a packed run = bytes without the continuation bit (a loop LLVM vectorizes:
    iterating over a slice, unlike ``_at(buf, k)`` with a signed ``k``, has no negative-index
    wraparound select per byte)."""
    c = 0
    for b in buf[s:e]:
        c += np.int64(b < 0x80)
    return c


@njit(cache=True, nogil=True)
def _count_values(buf, kind, p, end):
    """Number of values in a *List message; returns (count, error)."""
    count = 0
    while p < end:
        field, wire, s, e, err = _field(buf, p, end)
        if err != OK:
            return 0, err
        p = e
        if field != 1:
            continue
        if kind == KIND_BYTES:
            if wire == 2:
                count += 1
        elif kind == KIND_FLOAT:
            if wire == 2:
                if (e - s) % 4 != 0:
                    return 0, BAD_PACKED
                count += (e - s) // 4
            elif wire == 5:
                count += 1
        else:
            if wire == 2:
                count += _count_terminal_bytes(buf, s, e)
                if (e > s and _at(buf, e - 1) >= 0x80) or _has_long_varint(buf, s, e):
                    return 0, BAD_VARINT
            elif wire == 0:
                count += 1
    return count, OK


@njit(cache=True, nogil=True)
def _has_long_varint(buf, s, e):
    """Whether packed varints ``buf[s:e]`` hold one longer than 10 bytes (which protobuf
    rejects): 10 continuation bytes in a row. No branch on the data (see ``_packed_varints``):
    ``run`` counts the continuation bytes so far and a final byte clears it."""
    run = 0
    longest = 0
    for b in buf[s:e]:
        run = (run + 1) & (0 - np.int64(b >> 7))
        longest = max(longest, run)
    return longest >= 10


@njit(cache=True, nogil=True)
def _check_feature(buf, p, end):
    """Check a Feature that no spec feature asks for as protobuf would parse it (its lists'
    tags, lengths, packed floats and varints); returns an error code or OK."""
    while p < end:
        field, wire, s, e, err = _field(buf, p, end)
        if err != OK:
            return err
        p = e
        if wire == 2 and 1 <= field <= 3:
            _, err = _count_values(buf, field, s, e)
            if err != OK:
                return err
    return OK


@njit(cache=True, nogil=True)
def _utf8_ok(buf, s, e):
    """Whether ``buf[s:e]`` is valid UTF-8 (no overlong forms, surrogates or code points past
    U+10FFFF): protobuf rejects a message whose string field, a map key here, is not."""
    p = s
    while p < e:
        b = _at(buf, p)
        if b < 0x80:
            p += 1
            continue
        if 0xC2 <= b <= 0xDF:
            n, lo, hi = 1, 0x80, 0xBF
        elif 0xE0 <= b <= 0xEF:
            n = 2
            lo = 0xA0 if b == 0xE0 else 0x80
            hi = 0x9F if b == 0xED else 0xBF
        elif 0xF0 <= b <= 0xF4:
            n = 3
            lo = 0x90 if b == 0xF0 else 0x80
            hi = 0x8F if b == 0xF4 else 0xBF
        else:
            return False
        if p + n >= e:  # the sequence runs past the key
            return False
        c = _at(buf, p + 1)
        if c < lo or c > hi:
            return False
        for k in range(2, n + 1):
            if not 0x80 <= _at(buf, p + k) <= 0xBF:
                return False
        p += n + 1
    return True


@njit(cache=True, nogil=True, inline="always")
def _same_prefix(buf, a, b, k):
    """Whether ``buf[a:a + k] == buf[b:b + k]`` for ``k <= 16``, both of ``a + 16`` and ``b + 16``
    inside ``buf``."""
    if k > 8:
        if _load8(buf, a) != _load8(buf, b):
            return False
        a, b, k = a + 8, b + 8, k - 8
    mask = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64(64 - 8 * k)
    return ((_load8(buf, a) ^ _load8(buf, b)) & mask) == 0


@njit(cache=True, nogil=True, inline="always")
def _match(buf, s, e, names, name_off, guess):
    n = len(name_off) - 1
    length = e - s
    for j in range(n):
        f = guess + j
        if f >= n:
            f -= n
        a = _at(name_off, f)
        if _at(name_off, f + 1) - a != length:
            continue
        same = True
        for k in range(length):
            if _at(buf, s + k) != _at(names, a + k):
                same = False
                break
        if same:
            return f
    return -1


@njit(cache=True, nogil=True)
def locate(
    buf, rec_off, rec_len, names, name_off, out_start, out_end, out_kind, out_count,
    scalar_kind, scalar_out,
):
    """Pass 1 over a batch: for each record and each wanted feature, the span of its value list,
    its kind and its value count (``out_kind`` must come zeroed: kind 0 = absent, and nothing
    else is written for an absent feature). Returns ``(record, error, byte position)`` of the
    first malformed record, or ``(-1, OK, 0)``.

    Numeric scalar features (``scalar_kind[f]`` > 0) in the usual encoding (one packed value) are
    decoded on the spot into ``scalar_out[r, f]``, their start set to -1 (see ``fill``).
    """
    hints = np.zeros(MAX_HINTS, dtype=np.int64)
    # Templates: the map entry at each position that was last decoded as a scalar, by where it
    # starts in ``buf``, where its value starts and ends (relative), its feature and kind. An
    # entry whose bytes before the value are the template's has the same keys, tags and lengths,
    # so the same parse: only its value needs reading.
    tpl_at = np.full(MAX_HINTS, -1, dtype=np.int64)
    tpl_value = np.zeros(MAX_HINTS, dtype=np.int64)
    tpl_len = np.zeros(MAX_HINTS, dtype=np.int64)
    tpl_feat = np.zeros(MAX_HINTS, dtype=np.int64)
    tpl_kind = np.zeros(MAX_HINTS, dtype=np.int64)
    for r in range(len(rec_off)):
        p = rec_off[r]
        end = p + rec_len[r]
        entry = 0
        while p < end:
            field, wire, s, e, err = _field(buf, p, end)
            if err != OK:
                return r, err, p
            p = e
            if field != 1 or wire != 2:
                continue
            q = s
            while q < e:  # Features
                slot = min(entry, MAX_HINTS - 1)
                t = _at(tpl_at, slot)
                if t >= 0 and q + 16 <= len(buf) and q + _at(tpl_len, slot) <= e and _same_prefix(
                    buf, q, t, _at(tpl_value, slot)
                ):
                    kind = _at(tpl_kind, slot)
                    vs, ve = q + _at(tpl_value, slot), q + _at(tpl_len, slot)
                    if kind == KIND_FLOAT:
                        scalar, after = np.uint64(_u32(buf, vs)), ve
                    else:
                        scalar, after = _varint(buf, vs, ve)
                    if after == ve:  # else not one value: the full walk below decides
                        at = (np.uint64(r), np.uint64(_at(tpl_feat, slot)))
                        out_kind[at] = kind
                        out_start[at] = -1
                        out_end[at] = ve
                        out_count[at] = 1
                        scalar_out[at] = scalar
                        entry += 1
                        q = ve
                        continue
                q0 = q
                f2, w2, s2, e2, err = _field(buf, q, e)
                if err != OK:
                    return r, err, q
                q = e2
                if f2 != 1 or w2 != 2:
                    continue
                key_s, key_e, val_s, val_e, nval, nkey = s2, s2, -1, -1, 0, 0
                m = s2
                if e2 - s2 >= 4 and _at(buf, s2) == 0x0A and _at(buf, s2 + 1) < 0x80:
                    # canonical entry: key (one-byte length) then value, nothing else
                    k_e = s2 + 2 + np.int64(_at(buf, s2 + 1))
                    if k_e < e2 and _at(buf, k_e) == 0x12:
                        n, v_s = _varint(buf, k_e + 1, e2)
                        if v_s > 0 and np.uint64(e2 - v_s) == n:
                            key_s, key_e, val_s, val_e, nval, nkey = s2 + 2, k_e, v_s, e2, 1, 1
                            m = e2
                while m < e2:  # map entry
                    f3, w3, s3, e3, err = _field(buf, m, e2)
                    if err != OK:
                        return r, err, m
                    m = e3
                    if w3 == 2 and f3 == 1:
                        key_s, key_e = s3, e3
                        nkey += 1
                    elif w3 == 2 and f3 == 2:
                        val_s, val_e = s3, e3
                        nval += 1
                    else:  # an unknown field: protobuf drops the whole entry
                        return r, UNUSUAL, s2
                if nval > 1 or nkey > 1:  # protobuf checks every key's UTF-8, keeps the last
                    return r, UNUSUAL, s2
                # records of one dataset list their features in the same order: guess the
                # feature the previous record had at this entry position
                entry += 1
                tpl_at[slot] = -1
                f = _match(buf, key_s, key_e, names, name_off, _at(hints, slot))
                if f < 0:  # not asked for, but protobuf would still reject a malformed one
                    if not _utf8_ok(buf, key_s, key_e):
                        return r, BAD_UTF8, key_s
                    if val_s >= 0:
                        err = _check_feature(buf, val_s, val_e)
                        if err != OK:
                            return r, err, val_s
                    continue
                hints[slot] = f
                kind, ls, le, nkind = KIND_NONE, 0, 0, 0
                v = val_s
                if val_e - val_s >= 2 and 0x0A <= _at(buf, v) <= 0x1A and _at(buf, v) & 7 == 2:
                    n, l_s = _varint(buf, v + 1, val_e)  # canonical Feature: one list
                    if l_s > 0 and np.uint64(val_e - l_s) == n:
                        kind, ls, le, nkind = np.int64(_at(buf, v) >> 3), l_s, val_e, 1
                        v = val_e
                while v < val_e:  # Feature
                    f4, w4, s4, e4, err = _field(buf, v, val_e)
                    if err != OK:
                        return r, err, v
                    v = e4
                    if w4 == 2 and 1 <= f4 <= 3:
                        kind, ls, le = f4, s4, e4
                        nkind += 1
                if nkind > 1:
                    return r, UNUSUAL, val_s
                count = 0
                scalar = np.uint64(0)
                run = ls  # start of the values when the list is one packed run (the usual)
                list_tag = _at(buf, ls) if le - ls >= 2 else 0
                short_run = (
                    list_tag == 0x0A and _at(buf, ls + 1) < 0x80 and _at(buf, ls + 1) == le - ls - 2
                )
                if kind == KIND_FLOAT and short_run and _at(buf, ls + 1) & 3 == 0:
                    run, count = ls + 2, np.int64(_at(buf, ls + 1)) >> 2
                    if count == 1:
                        scalar = np.uint64(_u32(buf, run))
                elif kind == KIND_INT64 and list_tag == 0x0A and _at(buf, le - 1) < 0x80:
                    n, run = _varint(buf, ls + 1, le)
                    if run > 0 and np.uint64(le - run) == n:
                        scalar, after = _varint(buf, run, le)
                        if run < le and after < 0:  # ends on a final byte: > 10 bytes long
                            return r, BAD_VARINT, run
                        count = 1 if after == le else _count_terminal_bytes(buf, run, le)
                    else:
                        run = ls
                if run == ls and kind != KIND_NONE:
                    count, err = _count_values(buf, kind, ls, le)
                    if err != OK:
                        return r, err, ls
                at = (np.uint64(r), np.uint64(f))  # unsigned: no negative-index select
                out_kind[at] = kind
                out_start[at] = ls
                out_end[at] = le
                out_count[at] = count
                if count == 1 and run > ls and kind == _at(scalar_kind, f):
                    scalar_out[at] = scalar
                    out_start[at] = -1
                    if le == e2 and run - q0 <= 16 and q0 + 16 <= len(buf):
                        # the value ends the entry: every other byte is before it
                        tpl_at[slot], tpl_value[slot], tpl_len[slot] = q0, run - q0, e2 - q0
                        tpl_feat[slot], tpl_kind[slot] = f, kind
    return -1, OK, 0


@njit(cache=True, nogil=True, inline="always")
def _packed_varints(buf, s, e, out, o):
    """Decode the packed varints of ``buf[s:e]`` (pass 1 checked that the run ends on a final
    byte) into ``out[o:]``; returns the next ``o`` and the largest shift a byte needed (> 63:
    a varint longer than 10 bytes).

    One step per byte and no branch on the data: token ids take 1, 2 or 3 bytes about at random,
    so any branch on a value's length is mispredicted all the time. Each byte adds its 7 bits to
    ``acc``, which is stored at ``out[o]`` every time (the last store of a value is the whole
    value); a final byte (top bit clear) moves ``o`` on and clears ``acc`` and ``shift``.
    """
    acc = np.uint64(0)
    shift = np.uint64(0)
    shifts = np.uint64(0)
    for byte in buf[s:e]:  # a slice: no wraparound check per byte (see _count_terminal_bytes)
        b = np.uint64(byte)
        acc |= (b & np.uint64(0x7F)) << (shift & np.uint64(63))
        out[np.uint64(o)] = acc  # unsigned index: no negative-index select
        more = b >> np.uint64(7)
        keep = np.uint64(0) - more  # all ones while the value goes on
        o += np.int64(1) - np.int64(more)
        shifts |= shift
        acc &= keep
        shift = (shift + np.uint64(7)) & keep
    return o, np.int64(shifts)


# problems ``layout`` finds, after the wire-format errors above
WRONG_KIND = 7  # a present feature holds another kind of list than the spec's
WRONG_COUNT = 8  # a FixedLen feature holds another number of values than its shape's
NO_DEFAULT = 9  # a FixedLen feature is missing and the spec gives no default


@njit(cache=True, nogil=True)
def layout(
    kinds, counts, want, size, has_default, var_of, dst, splits, missing, base, total, pool_size,
):
    """Between the passes: check every record's kinds and counts against the spec and say where
    the values go.

    Feature ``f`` (kind ``want[f]``; ``size[f]`` values a record, -1 for VarLen, whose row splits
    go to ``splits[var_of[f]]``, a zeroed row) gets the ``total[f]`` values from ``base[f]`` on of
    the pool of its kind, after the features before it; ``pool_size[kind]`` (zeroed) ends as each
    pool's length.
    Record ``r``'s values start at ``dst[r, f]`` (-1: none); a missing FixedLen feature with a
    default sets ``missing[f, r]`` and keeps its ``size[f]`` slots. Features are checked in
    order and records in order; returns ``(problem, feature, record, detail)`` of the first
    problem (detail: the kind found for WRONG_KIND, the count for WRONG_COUNT) or
    ``(OK, -1, -1, 0)``.
    """
    n, nfeat = kinds.shape
    for f in range(nfeat):
        w, m, v = want[f], size[f], var_of[f]
        o = pool_size[w]
        base[f] = o
        # one pass a feature: the first record with each problem, reported in this order after
        wrong_kind, wrong_count, no_default = -1, -1, -1
        for r in range(n):
            at = (np.uint64(r), np.uint64(f))  # unsigned: no negative-index select
            k = kinds[at]
            c = counts[at] if k != KIND_NONE else 0
            if k != KIND_NONE and k != w and wrong_kind < 0:
                wrong_kind = r
            if m < 0:
                dst[at] = o if c > 0 else -1
                o += c
                splits[np.uint64(v), np.uint64(r + 1)] = o - base[f]
            elif k != KIND_NONE:
                if c != m and wrong_count < 0:
                    wrong_count = r
                dst[at] = o + r * m
            else:
                dst[at] = -1
                missing[np.uint64(f), np.uint64(r)] = True
                if not has_default[f] and no_default < 0:
                    no_default = r
        if wrong_kind >= 0:
            return WRONG_KIND, f, wrong_kind, kinds[wrong_kind, f]
        if wrong_count >= 0:
            return WRONG_COUNT, f, wrong_count, counts[wrong_count, f]
        if no_default >= 0:
            return NO_DEFAULT, f, no_default, 0
        if m >= 0:
            o += n * m
        total[f] = o - base[f]
        pool_size[w] = o
    return OK, -1, -1, 0


@njit(cache=True, nogil=True)
def fill(buf, starts, ends, kinds, scalars, dst, ints, floats, str_off, str_len):
    """Pass 2: the values of every located feature, record by record, where ``layout`` put them.

    Record ``r``'s values of feature ``f`` are written from ``dst[r, f]`` on (-1: none): int64
    as the varints' 64 bits into ``ints``, float32 as their 32 bits into ``floats``, bytes as
    each value's offset and length into ``str_off`` / ``str_len``; a scalar that pass 1 decoded
    (start -1) is copied from ``scalars[r, f]``. Returns -1, or the record holding a varint
    longer than 10 bytes.
    """
    n, nfeat = dst.shape
    for r in range(n):
        for f in range(nfeat):
            at = (np.uint64(r), np.uint64(f))  # unsigned: no negative-index select
            o = dst[at]
            if o < 0:
                continue
            kind = kinds[at]
            p, end = starts[at], ends[at]
            if p < 0:
                if kind == KIND_INT64:
                    ints[np.uint64(o)] = scalars[at]
                else:
                    floats[np.uint64(o)] = np.uint32(scalars[at])
                continue
            while p < end:
                field, wire, s, e, _ = _field(buf, p, end)
                p = e
                if field != 1:
                    continue
                if kind == KIND_INT64 and wire == 2:
                    o, longest = _packed_varints(buf, s, e, ints, o)
                    if longest > 63:
                        return r  # a varint longer than 10 bytes
                elif kind == KIND_INT64 and wire == 0:
                    ints[o], _ = _varint(buf, s, e)
                    o += 1
                elif kind == KIND_FLOAT and (wire == 2 or wire == 5):
                    for q in range(s, e, 4):
                        floats[o] = np.uint32(_u32(buf, q))
                        o += 1
                elif kind == KIND_BYTES and wire == 2:
                    str_off[o] = s
                    str_len[o] = e - s
                    o += 1
    return -1


@njit(cache=True, nogil=True)
def gather_padded(buf, offs, lens, width, out):
    """Copy byte strings into rows of a zero-padded ``[n, width]`` matrix."""
    for i in range(len(offs)):
        s = offs[i]
        for k in range(lens[i]):
            out[i, k] = _at(buf, s + k)


# --- tf.Example writer ------------------------------------------------------------------------
# Writes what protobuf's deterministic serialization writes: map entries sorted by key, packed
# numeric lists, and (like the protobuf classes fed by ``encode_example``) an empty numeric list
# for a numeric value with no elements but an empty Feature for bytes with none.

COL_INT64, COL_FLOAT, COL_BYTES = 0, 1, 2


@njit(cache=True, nogil=True, inline="always")
def _varint_size(v):
    n = 1
    while v >= np.uint64(0x80):
        v >>= np.uint64(7)
        n += 1
    return n


@njit(cache=True, nogil=True, inline="always")
def _put_varint(out, p, v):
    while v >= np.uint64(0x80):
        out[p] = np.uint8((v & np.uint64(0x7F)) | np.uint64(0x80))
        v >>= np.uint64(7)
        p += 1
    out[p] = np.uint8(v)
    return p + 1


@njit(cache=True, nogil=True, inline="always")
def _usize(n):
    return _varint_size(np.uint64(n))


@njit(cache=True, nogil=True, inline="always")
def _feature_size(kind, count, payload):
    """Bytes of a Feature message whose list holds ``count`` values in ``payload`` bytes (the
    packed run for numbers, the repeated fields for bytes)."""
    if kind == COL_BYTES:
        if count == 0:
            return 0
        return 1 + _usize(payload) + payload
    if count == 0:
        return 2  # an empty list: tag + zero length
    body = 1 + _usize(payload) + payload
    return 1 + _usize(body) + body


@njit(cache=True, nogil=True)
def example_sizes(kinds, splits, present, nums, bytes_off, key_len, payload, body, rec_len):
    """Pass 1 of the writer: ``payload[c, r]`` (see ``_feature_size``) for every present feature,
    the length of every record's Features message in ``body`` and of the record in ``rec_len``."""
    ncol, n = present.shape
    for r in range(n):
        total = 0
        for c in range(ncol):
            if not present[c, r]:
                continue
            a, b = splits[c, r], splits[c, r + 1]
            kind = kinds[c]
            if kind == COL_INT64:
                size = 0
                for v in nums[a:b]:
                    size += _varint_size(v)
            elif kind == COL_FLOAT:
                size = 4 * (b - a)
            else:
                size = 0
                for i in range(a, b):
                    m = bytes_off[i + 1] - bytes_off[i]
                    size += 1 + _usize(m) + m
            payload[c, r] = size
            feat = _feature_size(kind, b - a, size)
            entry = 1 + _usize(key_len[c]) + key_len[c] + 1 + _usize(feat) + feat
            total += 1 + _usize(entry) + entry
        body[r] = total
        rec_len[r] = 1 + _usize(total) + total if total > 0 else 0
    return 0


@njit(cache=True, nogil=True)
def example_write(kinds, splits, present, nums, bytes_buf, bytes_off, keys, key_off, payload,
                  body, rec_off, out):
    """Pass 2 of the writer: record ``r`` at ``out[rec_off[r]:rec_off[r + 1]]``."""
    ncol, n = present.shape
    for r in range(n):
        if body[r] == 0:
            continue  # no features: the empty message
        p = rec_off[r]
        out[p] = 0x0A  # Example.features
        p = _put_varint(out, p + 1, np.uint64(body[r]))
        for c in range(ncol):
            if not present[c, r]:
                continue
            a, b = splits[c, r], splits[c, r + 1]
            kind = kinds[c]
            size = payload[c, r]
            feat = _feature_size(kind, b - a, size)
            k0, k1 = key_off[c], key_off[c + 1]
            klen = k1 - k0
            entry = 1 + _usize(klen) + klen + 1 + _usize(feat) + feat
            out[p] = 0x0A  # Features.feature (a map entry)
            p = _put_varint(out, p + 1, np.uint64(entry))
            out[p] = 0x0A  # key
            p = _put_varint(out, p + 1, np.uint64(klen))
            for k in range(k0, k1):
                out[p] = keys[k]
                p += 1
            out[p] = 0x12  # value
            p = _put_varint(out, p + 1, np.uint64(feat))
            if kind == COL_BYTES:
                if a == b:
                    continue
                out[p] = 0x0A  # bytes_list
                p = _put_varint(out, p + 1, np.uint64(size))
                for i in range(a, b):
                    s, e = bytes_off[i], bytes_off[i + 1]
                    out[p] = 0x0A
                    p = _put_varint(out, p + 1, np.uint64(e - s))
                    for k in range(s, e):
                        out[p] = bytes_buf[k]
                        p += 1
                continue
            out[p] = 0x1A if kind == COL_INT64 else 0x12  # int64_list / float_list
            if a == b:
                out[p + 1] = 0
                p += 2
                continue
            p = _put_varint(out, p + 1, np.uint64(1 + _usize(size) + size))
            out[p] = 0x0A  # the packed values
            p = _put_varint(out, p + 1, np.uint64(size))
            if kind == COL_INT64:
                for v in nums[a:b]:
                    p = _put_varint(out, p, v)
            else:
                for v in nums[a:b]:
                    out[p] = np.uint8(v & np.uint64(0xFF))
                    out[p + 1] = np.uint8((v >> np.uint64(8)) & np.uint64(0xFF))
                    out[p + 2] = np.uint8((v >> np.uint64(16)) & np.uint64(0xFF))
                    out[p + 3] = np.uint8((v >> np.uint64(24)) & np.uint64(0xFF))
                    p += 4
    return 0
