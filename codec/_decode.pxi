# The decode half of the codec kernel; included by _kernel.pyx.

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
                value = value[:vn - 1]
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
