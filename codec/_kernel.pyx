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
from codec.spec import compile_spec

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
# helpers shared by encode and decode

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


cdef bint _str_digits(str value):
    cdef Py_UCS4 c
    for c in value:
        if c < 48 or c > 57:
            return False
    return True


include "_encode.pxi"
include "_decode.pxi"
