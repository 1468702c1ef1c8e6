# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The Cython kernel of the ISO 8583 codec: the byte path only.

Behaviour (results, error messages, fields and offsets) is identical to the
pure-Python twin in codec/_twin.py; every codec test runs against both.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next, PyDict_SetItem
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF, Py_XINCREF
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

from codec.errors import DecodeError, EncodeError
from codec.spec import CompiledSpec, compile_spec

from codec._twin import _partial

cdef extern from "Python.h":
    ctypedef unsigned char Py_UCS1
    bint PyUnicode_IS_ASCII(object o)
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    Py_UCS1* PyUnicode_1BYTE_DATA(object o)
    int PyUnicode_1BYTE_KIND
    object PyUnicode_DecodeLatin1(const char* s, Py_ssize_t size, const char* errors)
    dict _PyDict_NewPresized(Py_ssize_t minused)
    int __builtin_clzll(unsigned long long x)

IMPLEMENTATION = "kernel"

cdef enum:
    K_BINARY = 0   # the values of codec.spec.KIND_*
    K_ASCII = 1
    K_LATIN1 = 2
    K_CODEC = 3
    K_BCD = 4
    SLOT_H = 193
    SLOT_T = 194
    SLOT_P = 195
    SLOT_S = 196
    KEY_IGNORE = -1
    KEY_H = 200
    KEY_T = 201

cdef tuple KEYS = tuple([str(i) for i in range(193)] + ["h", "t", "p", "1"])
cdef const char* HEXUP = b"0123456789ABCDEF"
cdef signed char HEXVAL[256]
cdef unsigned short HEXPAIR[256]     # the two upper-case hex digits of a byte, in memory order
cdef int _i
for _i in range(256):
    (<unsigned char*>&HEXPAIR[_i])[0] = HEXUP[_i >> 4]
    (<unsigned char*>&HEXPAIR[_i])[1] = HEXUP[_i & 15]
for _i in range(256):
    HEXVAL[_i] = -1
for _i in range(10):
    HEXVAL[48 + _i] = _i
for _i in range(6):
    HEXVAL[65 + _i] = 10 + _i
    HEXVAL[97 + _i] = 10 + _i


cdef class KSpec:
    def __cinit__(self, compiled):
        cdef int n
        self.compiled = compiled
        data_encs = [""] * 197
        len_encs = [""] * 197
        for n in range(193):
            self.fields[n].present = False
            fs = compiled.fields[n]
            if fs is not None:
                _fill(&self.fields[n], fs, n, data_encs, len_encs)
        self.header.present = False
        if compiled.header is not None:
            _fill(&self.header, compiled.header, SLOT_H, data_encs, len_encs)
        _fill(&self.mti, compiled.mti, SLOT_T, data_encs, len_encs)
        _fill(&self.primary, compiled.primary, SLOT_P, data_encs, len_encs)
        self.secondary.present = False
        if compiled.secondary is not None:
            _fill(&self.secondary, compiled.secondary, SLOT_S, data_encs, len_encs)
        self.data_encs = tuple(data_encs)
        self.len_encs = tuple(len_encs)


cdef int _fill(FieldC* f, fs, int slot, list data_encs, list len_encs) except -1:
    f.present = True
    f.slot = slot
    f.data_kind = fs.data_kind
    f.len_kind = fs.len_kind
    f.len_type = fs.len_type
    f.max_len = fs.max_len
    f.nibbles = fs.nibbles
    f.left_pad = ord(fs.left_pad) if fs.left_pad else 0
    f.right_pad = ord(fs.right_pad) if fs.right_pad else 0
    f.numeric = fs.numeric
    data_encs[slot] = fs.data_enc
    len_encs[slot] = fs.len_enc
    return 0


# One-entry memo in front of compile_spec: the same spec dict is used over and over.
cdef object _last_source = None
cdef KSpec _last_kspec = None


cdef KSpec _kspec(spec):
    global _last_source, _last_kspec
    if spec is _last_source:
        return _last_kspec
    compiled = compile_spec(spec)
    ks = compiled.kernel_state
    if not isinstance(ks, KSpec):
        ks = KSpec(compiled)
        compiled.kernel_state = ks
    _last_source = spec
    _last_kspec = ks
    return ks


# --------------------------------------------------------------------------
# output buffer

cdef struct Buf:
    unsigned char* p
    Py_ssize_t n
    Py_ssize_t cap
    bint heap


cdef int buf_reserve(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t want = b.n + extra
    cdef Py_ssize_t cap
    cdef unsigned char* q
    if want <= b.cap:
        return 0
    cap = b.cap * 2
    while cap < want:
        cap *= 2
    if b.heap:
        q = <unsigned char*>realloc(b.p, cap)
    else:
        q = <unsigned char*>malloc(cap)
        if q != NULL:
            memcpy(q, b.p, b.n)
    if q == NULL:
        raise MemoryError()
    b.p = q
    b.cap = cap
    b.heap = True
    return 0


cdef inline int buf_write(Buf* b, const unsigned char* src, Py_ssize_t n) except -1:
    if b.n + n > b.cap:
        buf_reserve(b, n)
    memcpy(b.p + b.n, src, n)
    b.n += n
    return 0


cdef int _present(unsigned long long primary, unsigned long long secondary,
                  unsigned long long tertiary, int* out):
    """Write the data fields present in the bitmaps, ascending, to out; return the count."""
    cdef int count = 0
    cdef int bit
    primary &= ~(1ULL << 63)      # field 1: the secondary bitmap itself
    secondary &= ~(1ULL << 63)    # field 65: the tertiary bitmap itself
    while primary:
        bit = __builtin_clzll(primary)
        out[count] = 1 + bit
        count += 1
        primary &= ~(1ULL << (63 - bit))
    while secondary:
        bit = __builtin_clzll(secondary)
        out[count] = 65 + bit
        count += 1
        secondary &= ~(1ULL << (63 - bit))
    while tertiary:
        bit = __builtin_clzll(tertiary)
        out[count] = 129 + bit
        count += 1
        tertiary &= ~(1ULL << (63 - bit))
    return count


# --------------------------------------------------------------------------
# encode

cdef inline unsigned long long _load8(const unsigned char* p):
    cdef unsigned long long w
    memcpy(&w, p, 8)
    return w


cdef inline bint _all_digits(const unsigned char* p, Py_ssize_t n):
    """True when all n bytes are ASCII digits (eight at a time, then the tail)."""
    cdef Py_ssize_t i = 0
    cdef unsigned long long w
    while i + 8 <= n:
        w = _load8(p + i)
        # A byte b is a digit iff b < 0x80, b - 0x30 does not borrow, b + 0x46 < 0x80.
        if (w | (w - 0x3030303030303030ULL) | (w + 0x4646464646464646ULL)) \
                & 0x8080808080808080ULL:
            return False
        i += 8
    while i < n:
        if p[i] < 48 or p[i] > 57:
            return False
        i += 1
    return True


cdef inline bint _is_ascii(const unsigned char* p, Py_ssize_t n):
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        if _load8(p + i) & 0x8080808080808080ULL:
            return False
        i += 8
    while i < n:
        if p[i] & 0x80:
            return False
        i += 1
    return True


cdef object _enc_error(str msg, int slot, Py_ssize_t pos):
    return EncodeError(msg, KEYS[slot], pos, {})


cdef int _write_text(Buf* b, KSpec ks, FieldC* f, object value, Py_ssize_t pos,
                     Py_ssize_t* out_len) except -1:
    """Encode a text value into the buffer; out_len receives its encoded byte count."""
    cdef Py_ssize_t n
    cdef const unsigned char* p
    cdef bytes encoded
    if f.data_kind == K_ASCII and PyUnicode_IS_ASCII(value):
        p = <const unsigned char*>PyUnicode_DATA(value)
        n = PyUnicode_GET_LENGTH(value)
    elif f.data_kind == K_LATIN1 and PyUnicode_KIND(value) == PyUnicode_1BYTE_KIND:
        p = <const unsigned char*>PyUnicode_DATA(value)
        n = PyUnicode_GET_LENGTH(value)
    elif f.data_kind == K_CODEC:
        try:
            encoded = value.encode(ks.data_encs[f.slot])
        except UnicodeError:
            raise _enc_error("Failed to encode field, invalid data", f.slot, pos) from None
        n = PyBytes_GET_SIZE(encoded)
        buf_write(b, <const unsigned char*>PyBytes_AS_STRING(encoded), n)
        out_len[0] = n
        if f.numeric and not _str_digits(value):
            raise _enc_error("Failed to encode field, non-digit data", f.slot, pos)
        return 0
    else:
        raise _enc_error("Failed to encode field, invalid data", f.slot, pos)
    if f.numeric and not _all_digits(p, n):
        raise _enc_error("Failed to encode field, non-digit data", f.slot, pos)
    buf_write(b, p, n)
    out_len[0] = n
    return 0


cdef bint _str_digits(str value):
    cdef Py_UCS4 c
    for c in value:
        if c < 48 or c > 57:
            return False
    return True


cdef int _write_hex(Buf* b, FieldC* f, object value, Py_ssize_t pos,
                    Py_ssize_t* out_len) except -1:
    """Write a hex string as raw bytes; out_len receives bytes or nibbles per the spec."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(value)
    cdef Py_ssize_t i, nbytes
    cdef const unsigned char* p
    cdef unsigned char pad = 0
    cdef bint left = False
    cdef unsigned char* dst
    cdef signed char hi, lo
    if f.nibbles and n & 1:
        if f.left_pad:
            pad = f.left_pad
            left = True
        elif f.right_pad:
            pad = f.right_pad
        else:
            raise _enc_error("Failed to encode field, odd-length nibble data, specify pad",
                             f.slot, pos)
    elif n & 1:
        raise _enc_error("Failed to encode field, odd-length hex data", f.slot, pos)
    if not PyUnicode_IS_ASCII(value):
        raise _enc_error("Failed to encode field, non-hex data", f.slot, pos)
    p = <const unsigned char*>PyUnicode_DATA(value)
    nbytes = (n + 1) >> 1
    buf_reserve(b, nbytes)
    dst = b.p + b.n
    if pad:
        if left:
            hi = HEXVAL[pad]
            lo = HEXVAL[p[0]]
            if lo < 0:
                raise _enc_error("Failed to encode field, non-hex data", f.slot, pos)
            dst[0] = (hi << 4) | lo
            dst += 1
            p += 1
        else:
            lo = HEXVAL[pad]
            hi = HEXVAL[p[n - 1]]
            if hi < 0:
                raise _enc_error("Failed to encode field, non-hex data", f.slot, pos)
            dst[nbytes - 1] = (hi << 4) | lo
        for i in range(n >> 1):
            hi = HEXVAL[p[2 * i]]
            lo = HEXVAL[p[2 * i + 1]]
            if hi < 0 or lo < 0:
                raise _enc_error("Failed to encode field, non-hex data", f.slot, pos)
            dst[i] = (hi << 4) | lo
    else:
        for i in range(nbytes):
            hi = HEXVAL[p[2 * i]]
            lo = HEXVAL[p[2 * i + 1]]
            if hi < 0 or lo < 0:
                raise _enc_error("Failed to encode field, non-hex data", f.slot, pos)
            dst[i] = (hi << 4) | lo
    if f.numeric and not _all_digits(<const unsigned char*>PyUnicode_DATA(value), n):
        raise _enc_error("Failed to encode field, non-digit data", f.slot, pos)
    b.n += nbytes
    out_len[0] = n if f.nibbles else nbytes
    return 0


cdef int _write_length(Buf* b, KSpec ks, FieldC* f, Py_ssize_t length) except -1:
    cdef unsigned char tmp[16]
    cdef int w = f.len_type
    cdef int i
    cdef Py_ssize_t v = length
    cdef bytes encoded
    if f.len_kind == K_BINARY:
        for i in range(w - 1, -1, -1):
            tmp[i] = v & 0xFF
            v >>= 8
    elif f.len_kind == K_BCD:
        for i in range(w - 1, -1, -1):
            tmp[i] = (v % 10) | (((v // 10) % 10) << 4)
            v //= 100
    elif f.len_kind == K_CODEC:
        encoded = ("%0*d" % (w, length)).encode(ks.len_encs[f.slot])
        return buf_write(b, <const unsigned char*>PyBytes_AS_STRING(encoded),
                         PyBytes_GET_SIZE(encoded))
    else:
        for i in range(w - 1, -1, -1):
            tmp[i] = 48 + v % 10
            v //= 10
    return buf_write(b, tmp, w)


cdef int _write_field(Buf* b, KSpec ks, FieldC* f, object value) except -1:
    cdef Py_ssize_t pos = b.n
    cdef Py_ssize_t length = 0
    cdef Py_ssize_t start
    cdef Py_ssize_t data_n
    cdef str unit
    if type(value) is not str:
        raise _enc_error("Failed to encode field, invalid data", f.slot, pos)
    # Leave room for the length prefix, write the data, then fill the prefix in.
    if f.len_type:
        buf_reserve(b, f.len_type)
        b.n += f.len_type
    start = b.n
    if f.data_kind == K_BINARY:
        _write_hex(b, f, value, pos, &length)
    else:
        _write_text(b, ks, f, value, pos, &length)
        if f.nibbles:
            length *= 2
    unit = "nibbles" if f.nibbles else "bytes"
    if f.len_type == 0:
        if length != f.max_len:
            raise _enc_error(f"Field data is {length} {unit}, expecting {f.max_len}",
                             f.slot, pos)
        return 0
    if length > f.max_len:
        raise _enc_error(f"Field data is {length} {unit}, larger than maximum {f.max_len}",
                         f.slot, pos)
    # The spec guarantees a length prefix of exactly len_type bytes (checked at compile).
    data_n = b.n - start
    b.n = pos
    _write_length(b, ks, f, length)
    b.n += data_n
    return 0


cdef int _write_bitmap(Buf* b, KSpec ks, FieldC* f, unsigned long long bits) except -1:
    cdef unsigned char raw[8]
    cdef unsigned char txt[16]
    cdef int i
    cdef Py_ssize_t n
    for i in range(8):
        raw[i] = (bits >> (56 - 8 * i)) & 0xFF
    if f.data_kind == K_BINARY:
        return buf_write(b, raw, 8)
    for i in range(8):
        txt[2 * i] = HEXUP[raw[i] >> 4]
        txt[2 * i + 1] = HEXUP[raw[i] & 15]
    if f.data_kind == K_CODEC:
        text = PyUnicode_DecodeLatin1(<char*>txt, 16, NULL)
        return _write_text(b, ks, f, text, b.n, &n)
    return buf_write(b, txt, 16)


def encode(doc, spec):
    """Encode a document (pyiso8583 decoded-dict shape) to ISO 8583 bytes."""
    cdef KSpec ks = _kspec(spec)
    cdef PyObject* pkey
    cdef PyObject* pvalue
    cdef PyObject* vals[202]   # strong references, by _key_code
    cdef Py_ssize_t it = 0
    cdef int code, n, i, count
    cdef int order[192]
    cdef unsigned long long primary = 0, secondary = 0, tertiary = 0
    cdef unsigned char stack[1024]
    cdef Buf b
    cdef dict d
    cdef FieldC* f
    if type(doc) is dict:
        d = <dict>doc
    else:
        from collections.abc import Mapping
        if not isinstance(doc, Mapping):
            raise TypeError(f"document must be a dict, not {type(doc).__name__}")
        d = dict(doc)
    vals[KEY_H] = NULL
    vals[KEY_T] = NULL
    b.p = stack
    b.n = 0
    b.cap = sizeof(stack)
    b.heap = False
    try:
        while PyDict_Next(d, &it, &pkey, &pvalue):
            code = _key_code(<object>pkey)
            if code == KEY_IGNORE:
                continue
            if code <= 64:
                primary |= 1ULL << (64 - code)
            elif code <= 128:
                secondary |= 1ULL << (128 - code)
            elif code <= 192:
                tertiary |= 1ULL << (192 - code)
            elif vals[code] != NULL:    # h or t seen twice cannot happen in a dict
                continue
            Py_XINCREF(pvalue)
            vals[code] = pvalue
        if tertiary:
            secondary |= 1ULL << 63
        if secondary:
            primary |= 1ULL << 63
        count = _present(primary, secondary, tertiary, order)

        if ks.header.present:
            if vals[KEY_H] == NULL:
                raise EncodeError("Field data is required according to specifications", "h",
                                  0, {})
            _write_field(&b, ks, &ks.header, <object>vals[KEY_H])
        if vals[KEY_T] == NULL:
            raise EncodeError("Field data is required", "t", b.n, {})
        _write_mti(&b, ks, <object>vals[KEY_T])
        if secondary and not ks.secondary.present:
            raise EncodeError("Field is not defined in the specification", "1", b.n,
                              _partial(d, _order_list(order, count), 0))
        _write_bitmap(&b, ks, &ks.primary, primary)
        if secondary:
            _write_bitmap(&b, ks, &ks.secondary, secondary)
            if tertiary:
                _write_bitmap(&b, ks, &ks.secondary, tertiary)
        i = 0
        try:
            while i < count:
                n = order[i]
                f = &ks.fields[n]
                if not f.present:
                    raise EncodeError("Field is not defined in the specification", KEYS[n], b.n)
                _write_field(&b, ks, f, <object>vals[n])
                i += 1
        except EncodeError as exc:
            raise EncodeError(exc.msg, exc.field, exc.pos,
                              _partial(d, _order_list(order, count), i)) from None
        return PyBytes_FromStringAndSize(<char*>b.p, b.n)
    finally:
        if b.heap:
            free(b.p)
        count = _present(primary, secondary, tertiary, order)
        for i in range(count):
            Py_XDECREF(vals[order[i]])
        Py_XDECREF(vals[KEY_H])
        Py_XDECREF(vals[KEY_T])


cdef int _key_code(object key) except -2:
    """Map a document key to a field number, KEY_H, KEY_T or KEY_IGNORE (as pyiso8583 does)."""
    cdef Py_ssize_t n, i
    cdef const unsigned char* p
    cdef int v = 0
    if type(key) is not str:
        raise EncodeError("Dictionary contains a non-string key", "p", 0, {})
    if not PyUnicode_IS_ASCII(key):
        if (<str>key).isnumeric():
            raise EncodeError("Dictionary contains a field outside of 2-192", "p", 0, {})
        return KEY_IGNORE
    n = PyUnicode_GET_LENGTH(key)
    p = <const unsigned char*>PyUnicode_DATA(key)
    if n == 0:
        return KEY_IGNORE
    if not _all_digits(p, n):
        if n == 1 and p[0] == 104:     # "h"
            return KEY_H
        if n == 1 and p[0] == 116:     # "t"
            return KEY_T
        return KEY_IGNORE
    if n > 3 or p[0] == 48:            # too long, or a leading zero
        raise EncodeError("Dictionary contains a field outside of 2-192", "p", 0, {})
    for i in range(n):
        v = v * 10 + (p[i] - 48)
    if v == 1 or v == 65:
        return KEY_IGNORE              # bitmaps are built, never taken from the document
    if v > 192:
        raise EncodeError("Dictionary contains a field outside of 2-192", "p", 0, {})
    return v


cdef list _order_list(int* order, int count):
    return [order[i] for i in range(count)]


cdef int _write_mti(Buf* b, KSpec ks, object value) except -1:
    cdef Py_ssize_t pos = b.n
    cdef Py_ssize_t n = 0
    cdef const unsigned char* p
    if type(value) is not str:
        raise EncodeError("Failed to encode field, invalid data", "t", pos, {})
    if ks.mti.data_kind == K_BINARY:
        if (PyUnicode_GET_LENGTH(value) != 4 or not PyUnicode_IS_ASCII(value)
                or not _all_digits(<const unsigned char*>PyUnicode_DATA(value), 4)):
            raise EncodeError("Message type must be 4 digits", "t", pos, {})
        p = <const unsigned char*>PyUnicode_DATA(value)
        buf_reserve(b, 2)
        b.p[b.n] = ((p[0] - 48) << 4) | (p[1] - 48)
        b.p[b.n + 1] = ((p[2] - 48) << 4) | (p[3] - 48)
        b.n += 2
        return 0
    _write_text(b, ks, &ks.mti, value, pos, &n)
    if n != 4 or not _str_digits(value):
        raise EncodeError("Message type must be 4 digits", "t", pos, {})
    return 0


# --------------------------------------------------------------------------
# decode

cdef object _hex_upper(const unsigned char* p, Py_ssize_t n):
    cdef object out = PyUnicode_New(2 * n, 127)
    cdef Py_UCS1* dst = PyUnicode_1BYTE_DATA(out)
    cdef Py_ssize_t i
    for i in range(n):
        memcpy(dst + 2 * i, &HEXPAIR[p[i]], 2)
    return out


cdef inline object _ascii_str(const unsigned char* p, Py_ssize_t n):
    cdef object out = PyUnicode_New(n, 127)
    memcpy(PyUnicode_1BYTE_DATA(out), p, n)
    return out


cdef object _text(KSpec ks, FieldC* f, const unsigned char* p, Py_ssize_t n,
                  Py_ssize_t pos, dict doc):
    if f.data_kind == K_ASCII:
        if not _is_ascii(p, n):
            raise DecodeError("Failed to decode field, invalid data", KEYS[f.slot], pos, doc)
        return _ascii_str(p, n)
    if f.data_kind == K_LATIN1:
        return PyUnicode_DecodeLatin1(<const char*>p, n, NULL)
    try:
        return PyBytes_FromStringAndSize(<const char*>p, n).decode(ks.data_encs[f.slot])
    except UnicodeError:
        raise DecodeError("Failed to decode field, invalid data", KEYS[f.slot], pos,
                          doc) from None


cdef Py_ssize_t _read_length(KSpec ks, FieldC* f, const unsigned char* s, Py_ssize_t size,
                             Py_ssize_t idx, dict doc) except -1:
    cdef int w = f.len_type
    cdef int i
    cdef Py_ssize_t v = 0
    cdef unsigned char c
    if size - idx < w:
        raise DecodeError(f"Field length is {size - idx} bytes wide, expecting {w}",
                          KEYS[f.slot], idx, doc)
    if f.len_kind == K_BINARY:
        for i in range(w):
            v = (v << 8) | s[idx + i]
        return v
    if f.len_kind == K_BCD:
        for i in range(w):
            c = s[idx + i]
            if (c >> 4) > 9 or (c & 15) > 9:
                raise DecodeError("Failed to decode field length, invalid BCD data",
                                  KEYS[f.slot], idx, doc)
            v = v * 100 + (c >> 4) * 10 + (c & 15)
        return v
    if f.len_kind == K_CODEC:
        try:
            digits = PyBytes_FromStringAndSize(<const char*>s + idx, w).decode(
                ks.len_encs[f.slot])
        except UnicodeError:
            raise DecodeError("Failed to decode field length, invalid data", KEYS[f.slot],
                              idx, doc) from None
        if not _str_digits(digits):
            raise DecodeError("Failed to decode field length, non-numeric data",
                              KEYS[f.slot], idx, doc)
        return int(digits)
    for i in range(w):
        c = s[idx + i]
        if c < 48 or c > 57:
            raise DecodeError("Failed to decode field length, non-numeric data",
                              KEYS[f.slot], idx, doc)
        v = v * 10 + (c - 48)
    return v


cdef Py_ssize_t _read_field(KSpec ks, FieldC* f, const unsigned char* s, Py_ssize_t size,
                            Py_ssize_t idx, dict doc) except -1:
    cdef Py_ssize_t length, nbytes, have
    cdef object value
    cdef Py_UCS1* vp
    cdef Py_ssize_t vn
    key = KEYS[f.slot]
    if f.len_type == 0:
        length = f.max_len
    else:
        length = _read_length(ks, f, s, size, idx, doc)
        if length > f.max_len:
            raise DecodeError(f"Field data is {length} {_unit(f)}, larger than maximum "
                              f"{f.max_len}", key, idx, doc)
        idx += f.len_type
    nbytes = (length + 1) >> 1 if f.nibbles else length
    if size - idx < nbytes:
        have = size - idx
        if f.nibbles:
            have *= 2
        raise DecodeError(f"Field data is {have} {_unit(f)}, expecting {length}", key, idx,
                          doc)
    if f.data_kind == K_BINARY:
        value = _hex_upper(s + idx, nbytes)
        if f.nibbles and length & 1:
            vp = PyUnicode_1BYTE_DATA(value)
            vn = 2 * nbytes
            if f.left_pad and vp[0] == f.left_pad:
                value = value[1:]
            elif f.right_pad and vp[vn - 1] == f.right_pad:
                value = value[:-1]
            else:
                raise DecodeError(f"Field data is {vn} nibbles, expecting {length}",
                                  key, idx, doc)
        if f.numeric and not _all_digits(PyUnicode_1BYTE_DATA(value),
                                         PyUnicode_GET_LENGTH(value)):
            raise DecodeError("Failed to decode field, non-digit data", key, idx, doc)
    else:
        if f.numeric and f.data_kind != K_CODEC:
            if not _all_digits(s + idx, nbytes):
                # Non-ASCII bytes are reported as invalid data first, as the twin does.
                _text(ks, f, s + idx, nbytes, idx, doc)
                raise DecodeError("Failed to decode field, non-digit data", key, idx, doc)
            value = _ascii_str(s + idx, nbytes)     # digits are ASCII and latin-1 alike
        else:
            value = _text(ks, f, s + idx, nbytes, idx, doc)
        if f.numeric and f.data_kind == K_CODEC and not _str_digits(value):
            raise DecodeError("Failed to decode field, non-digit data", key, idx, doc)
    PyDict_SetItem(doc, key, value)
    return idx + nbytes


cdef str _unit(FieldC* f):
    return "nibbles" if f.nibbles else "bytes"


cdef object _read_bitmap(KSpec ks, FieldC* f, const unsigned char* s, Py_ssize_t size,
                         Py_ssize_t idx, unsigned long long* bits):
    """Read one bitmap at idx; return its text (hex) and store its bits.

    Errors carry no partial result: decode() adds it.
    """
    cdef int width = 8 if f.data_kind == K_BINARY else 16
    cdef int i
    cdef unsigned long long v = 0
    cdef signed char h
    key = KEYS[f.slot]
    if size - idx < width:
        raise DecodeError(f"Field data is {size - idx} bytes, expecting {width}", key, idx)
    if f.data_kind == K_BINARY:
        for i in range(8):
            v = (v << 8) | s[idx + i]
        text = _hex_upper(s + idx, 8)
    else:
        text = _text(ks, f, s + idx, 16, idx, None)
        if PyUnicode_GET_LENGTH(text) != 16 or not PyUnicode_IS_ASCII(text):
            raise DecodeError("Failed to decode field, non-hex data", key, idx)
        for i in range(16):
            h = HEXVAL[PyUnicode_1BYTE_DATA(text)[i]]
            if h < 0:
                raise DecodeError("Failed to decode field, non-hex data", key, idx)
            v = (v << 4) | <unsigned long long>h
    bits[0] = v
    return text


cdef dict _head(dict header, object mti, object primary, object secondary):
    """The partial result before the fields: header, MTI and bitmaps read so far."""
    cdef dict out = dict(header) if header else {}
    if mti is not None:
        out["t"] = mti
    if primary is not None:
        out["p"] = primary
    if secondary is not None:
        out["1"] = secondary
    return out


def decode(data, spec):
    """Decode ISO 8583 bytes to a dict shaped like pyiso8583's decoded dict."""
    cdef KSpec ks = _kspec(spec)
    cdef bytes raw
    cdef const unsigned char* s
    cdef Py_ssize_t size, idx = 0
    cdef unsigned long long primary = 0, secondary = 0, tertiary = 0
    cdef int n
    cdef int width, count, i
    cdef int order[192]
    cdef dict header = None
    cdef dict doc
    cdef object mti = None, ptext = None, stext = None
    cdef FieldC* f
    if type(data) is bytes:
        raw = <bytes>data
    elif isinstance(data, (bytearray, memoryview)):
        raw = bytes(data)
    else:
        raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
    s = <const unsigned char*>PyBytes_AS_STRING(raw)
    size = PyBytes_GET_SIZE(raw)
    if ks.header.present:
        header = {}
        idx = _read_field(ks, &ks.header, s, size, idx, header)
    # message type
    width = 2 if ks.mti.data_kind == K_BINARY else 4
    if size - idx < width:
        raise DecodeError(f"Field data is {size - idx} bytes, expecting {width}", "t", idx,
                          header)
    if ks.mti.data_kind == K_BINARY:
        mti = _hex_upper(s + idx, 2)
    else:
        mti = _text(ks, &ks.mti, s + idx, 4, idx, header)
    if (PyUnicode_GET_LENGTH(mti) != 4 or not PyUnicode_IS_ASCII(mti)
            or not _all_digits(PyUnicode_1BYTE_DATA(mti), 4)):
        raise DecodeError("Message type must be 4 digits", "t", idx, header)
    idx += width
    # bitmaps
    try:
        ptext = _read_bitmap(ks, &ks.primary, s, size, idx, &primary)
        idx += 8 if ks.primary.data_kind == K_BINARY else 16
        if primary >> 63:
            if not ks.secondary.present:
                raise DecodeError("Bitmap announces a secondary bitmap the spec lacks", "1",
                                  idx)
            stext = _read_bitmap(ks, &ks.secondary, s, size, idx, &secondary)
            idx += 8 if ks.secondary.data_kind == K_BINARY else 16
            if secondary >> 63:
                stext = stext + _read_bitmap(ks, &ks.secondary, s, size, idx, &tertiary)
                idx += 8 if ks.secondary.data_kind == K_BINARY else 16
    except DecodeError as exc:
        raise DecodeError(exc.msg, exc.field, exc.pos, _head(header, mti, ptext, stext)
                          ) from None
    count = _present(primary, secondary, tertiary, order)
    doc = _PyDict_NewPresized(count + 4)
    if header:
        doc["h"] = header["h"]
    doc["t"] = mti
    doc["p"] = ptext
    if stext is not None:
        doc["1"] = stext
    count = _present(primary, secondary, tertiary, order)
    for i in range(count):
        f = &ks.fields[order[i]]
        if not f.present:
            raise DecodeError("Bitmap announces a field the spec lacks", KEYS[order[i]], idx,
                              doc)
        idx = _read_field(ks, f, s, size, idx, doc)
    if idx != size:
        raise DecodeError("Extra data after last field", "end", idx, doc)
    return doc
