# The encode half of the codec kernel; included by _kernel.pyx.

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


# --------------------------------------------------------------------------
# encode

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
