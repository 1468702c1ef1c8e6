# Declarations of the codec's Cython kernel (codec/_kernel.pyx).

cdef struct FieldC:
    bint present
    int slot             # index into KEYS / KSpec.data_encs (0-192 fields, 193 h, 194 t, 195 p, 196 the secondary bitmap)
    int data_kind        # codec.spec.KIND_* for the data
    int len_kind         # codec.spec.KIND_* for the length prefix
    int len_type         # width of the length prefix in bytes, 0 = fixed
    Py_ssize_t max_len   # in bytes, or in nibbles when `nibbles`
    bint nibbles
    unsigned char left_pad   # 0 = none, else an upper-case hex character
    unsigned char right_pad
    bint numeric         # data_type "n": decimal digits only


cdef class KSpec:
    """The kernel's C view of one CompiledSpec."""
    cdef object compiled         # the codec.spec.CompiledSpec it was built from
    cdef FieldC header
    cdef FieldC mti
    cdef FieldC primary
    cdef FieldC secondary
    cdef FieldC fields[193]
    cdef tuple data_encs         # codec name per slot
    cdef tuple len_encs
