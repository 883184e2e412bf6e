/*
 * schemas._native: the compiled hot paths of the Avro contract.
 *
 * Encoder turns JSON straight into framed Avro records, without building a Python dict,
 * str or float per field: a Massive WebSocket frame (a JSON array of events, each taken
 * by the program its "ev" names) or a REST page (an object whose "results" array holds
 * one kind). It is table-driven: each program is a list of field operations compiled in
 * Python from the field specification (schemas/program.py), in the schema's field order,
 * so no JSON key or Avro field is written here by hand.
 *
 * It is an accelerator, never the definition: the definition is the mappings
 * (producer.mapping, backfill.mapping) + schemas.codec. It takes only the common,
 * well-formed shape; for anything else (an escape in a string it reads, an unexpected
 * type, a number out of range, a duplicate key, malformed JSON, an unknown "ev") it
 * returns None and the caller hands the whole frame or page to the reference path, which
 * encodes it identically or rejects it with a clear error. Python checks each program
 * against the reference at start and the tests fuzz it against the reference byte for
 * byte.
 *
 * decode_rows (Avro bodies -> columns) and scan_messages (a Kafka poll -> one buffer) are
 * the consumer's side.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "Avro doubles are little-endian; this module assumes a little-endian host"
#endif

#define MAX_DEPTH 32
#define MAX_ITEMS 64      /* int arrays (conditions, indicators) longer than this bail */
#define MAX_TEXT 256      /* strings (symbols, trade ids) longer than this bail */

/* ---- JSON values of the fields we read ------------------------------------------- */

enum { V_ABSENT = 0, V_NULL, V_INT, V_FLOAT, V_STR, V_INTS, V_TRUE, V_FALSE, V_OTHER };

typedef struct {
    int type;
    int64_t i;          /* V_INT */
    double f;           /* V_FLOAT (V_INT keeps its exact value in i) */
    const char *s;      /* V_STR: UTF-8 without escapes */
    Py_ssize_t n;       /* V_STR length in bytes, V_INTS count */
    int32_t items[MAX_ITEMS];
} Value;

typedef struct {
    const char *p;
    const char *end;
} Cursor;

static inline void skip_ws(Cursor *c) {
    while (c->p < c->end) {
        char ch = *c->p;
        if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t')
            c->p++;
        else
            break;
    }
}

/* The length of the UTF-8 character at p (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF, as orjson requires), or -1. */
static inline int utf8_char(const unsigned char *p, const unsigned char *end) {
    unsigned c0 = p[0];
    int n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c0 >= 0xC2 && c0 <= 0xDF) {
        n = 2;
    } else if (c0 >= 0xE0 && c0 <= 0xEF) {
        n = 3;
        if (c0 == 0xE0)
            lo = 0xA0;
        else if (c0 == 0xED)
            hi = 0x9F;
    } else if (c0 >= 0xF0 && c0 <= 0xF4) {
        n = 4;
        if (c0 == 0xF0)
            lo = 0x90;
        else if (c0 == 0xF4)
            hi = 0x8F;
    } else {
        return -1;
    }
    if (end - p < n || p[1] < lo || p[1] > hi)
        return -1;
    for (int k = 2; k < n; k++)
        if (p[k] < 0x80 || p[k] > 0xBF)
            return -1;
    return n;
}

/* A string without escapes (valid UTF-8); c->p is at the opening quote. -1 (c->p
 * anywhere) on an escape or anything invalid. */
static int parse_string(Cursor *c, const char **out, Py_ssize_t *len) {
    const char *start = ++c->p;
    const unsigned char *end = (const unsigned char *)c->end;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            *out = start;
            *len = c->p - start;
            c->p++;
            return 0;
        }
        if (ch == '\\' || ch < 0x20)
            return -1;
        if (ch < 0x80) {
            c->p++;
        } else {
            int n = utf8_char((const unsigned char *)c->p, end);
            if (n < 0)
                return -1;
            c->p += n;
        }
    }
    return -1;
}

static inline int hex_digit(unsigned char ch) {
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Any JSON string validated and skipped, escapes included; c->p at the opening quote. A
 * \u escape of a surrogate bails: whether a pair or a lone one, that is orjson's call. */
static int skip_string(Cursor *c) {
    const unsigned char *p = (const unsigned char *)c->p + 1;
    const unsigned char *end = (const unsigned char *)c->end;
    while (p < end) {
        unsigned ch = *p;
        if (ch == '"') {
            c->p = (const char *)p + 1;
            return 0;
        }
        if (ch < 0x20)
            return -1;
        if (ch == '\\') {
            if (++p >= end)
                return -1;
            switch (*p) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                p++;
                break;
            case 'u': {
                if (end - p < 5)
                    return -1;
                unsigned v = 0;
                for (int k = 1; k <= 4; k++) {
                    int d = hex_digit(p[k]);
                    if (d < 0)
                        return -1;
                    v = v * 16 + (unsigned)d;
                }
                if (v >= 0xD800 && v <= 0xDFFF)
                    return -1;
                p += 5;
                break;
            }
            default:
                return -1;
            }
        } else if (ch < 0x80) {
            p++;
        } else {
            int n = utf8_char(p, end);
            if (n < 0)
                return -1;
            p += n;
        }
    }
    return -1;
}

/* The decimal digits at *pp appended to *acc (*overflow set once they no longer fit 64
 * bits; *acc then keeps its last value); *pp ends after them. Returns their count. */
static inline int read_digits(const char **pp, const char *end, uint64_t *acc,
                              int *overflow) {
    const char *p = *pp;
    int n = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        if (*acc > (UINT64_MAX - d) / 10)
            *overflow = 1;
        else
            *acc = *acc * 10 + d;
        p++;
        n++;
    }
    *pp = p;
    return n;
}

/* A JSON number (strict grammar). Integers must fit int64 (else V_OTHER); a number with
 * a fraction or exponent is parsed by CPython's correctly rounded dtoa, as float() does. */
static int parse_number(Cursor *c, Value *v) {
    const char *start = c->p;
    const char *p = c->p;
    const char *end = c->end;
    int neg = 0, is_float = 0, has_exp = 0;
    uint64_t acc = 0;       /* the integer part, then (fast path) every digit */
    int overflow = 0;
    int frac_digits = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end)
        return -1;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        read_digits(&p, end, &acc, &overflow);
    } else {
        return -1;
    }
    if (p < end && *p == '.') {
        is_float = 1;
        p++;
        if (p >= end || !(*p >= '0' && *p <= '9'))
            return -1;
        frac_digits = read_digits(&p, end, &acc, &overflow);
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_float = 1;
        has_exp = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !(*p >= '0' && *p <= '9'))
            return -1;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    c->p = p;
    if (!is_float) {
        if (overflow)
            return -1;  /* orjson makes such an integer a float, or refuses it as infinite */
        if ((!neg && acc > (uint64_t)INT64_MAX) || (neg && acc > (uint64_t)INT64_MAX + 1u)) {
            v->type = V_OTHER;  /* valid JSON (a uint64) that no field of ours takes */
            return 0;
        }
        v->type = V_INT;
        v->i = neg ? (int64_t)(0 - acc) : (int64_t)acc;
        return 0;
    }
    /* Clinger's fast path: a mantissa below 2^53 divided by an exact power of ten is
     * one correctly rounded IEEE operation, i.e. the very double dtoa would give. */
    static const double pow10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9,
                                   1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
                                   1e19, 1e20, 1e21, 1e22};
    if (!has_exp && !overflow && acc <= (1ULL << 53) && frac_digits <= 22) {
        double d = (double)acc / pow10[frac_digits];
        v->type = V_FLOAT;
        v->f = neg ? -d : d;
        return 0;
    }
    char buf[64];
    Py_ssize_t n = p - start;
    if (n >= (Py_ssize_t)sizeof(buf))
        return -1;  /* not worth a bigger buffer: the Python path decides */
    memcpy(buf, start, (size_t)n);
    buf[n] = '\0';
    char *stop = NULL;
    double d = PyOS_string_to_double(buf, &stop, NULL);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    if (stop != buf + n || !isfinite(d))
        return -1;  /* orjson refuses a number that is infinite as a double */
    v->type = V_FLOAT;
    v->f = d;
    return 0;
}


/* After an array item or object member: 1 when a comma follows (consumed, with the space
 * after it: another item comes), 0 when ``close`` does (consumed), -1 otherwise. */
static int next_item(Cursor *c, char close) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ',') {
        c->p++;
        skip_ws(c);
        return 1;
    }
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return 0;
    }
    return -1;
}

/* An object member's key and its colon; c->p ends at the value. */
static int parse_key(Cursor *c, const char **key, Py_ssize_t *len) {
    if (c->p >= c->end || *c->p != '"' || parse_string(c, key, len) < 0)
        return -1;
    skip_ws(c);
    if (c->p >= c->end || *c->p != ':')
        return -1;
    c->p++;
    skip_ws(c);
    return 0;
}

static int literal(Cursor *c, const char *word, Py_ssize_t n) {
    if (c->end - c->p < n || memcmp(c->p, word, (size_t)n) != 0)
        return -1;
    c->p += n;
    return 0;
}


/* Any JSON value, validated and skipped (the fields we do not read). */
static int skip_value(Cursor *c, int depth) {
    if (depth > MAX_DEPTH || c->p >= c->end)
        return -1;
    char ch = *c->p;
    if (ch == '"')
        return skip_string(c);
    if (ch == '-' || (ch >= '0' && ch <= '9')) {
        Value v;
        return parse_number(c, &v);
    }
    if (ch == 't')
        return literal(c, "true", 4);
    if (ch == 'f')
        return literal(c, "false", 5);
    if (ch == 'n')
        return literal(c, "null", 4);
    if (ch == '[' || ch == '{') {
        char close = ch == '[' ? ']' : '}';
        c->p++;
        skip_ws(c);
        if (c->p < c->end && *c->p == close) {
            c->p++;
            return 0;
        }
        for (;;) {
            const char *k;
            Py_ssize_t kn;
            if (ch == '{' && parse_key(c, &k, &kn) < 0)
                return -1;
            if (skip_value(c, depth + 1) < 0)
                return -1;
            int more = next_item(c, close);
            if (more <= 0)
                return more;
        }
    }
    return -1;
}

/* The value of a field we read: null, true, false, an int, a float, a string without
 * escapes, an array of int32 (anything else is V_OTHER, after validating and skipping
 * it: a program that reads it bails, one that does not carries on). */
static int parse_value(Cursor *c, Value *v) {
    if (c->p >= c->end)
        return -1;
    char ch = *c->p;
    if (ch == '"') {
        const char *save = c->p;
        v->type = V_STR;
        if (parse_string(c, &v->s, &v->n) == 0)
            return 0;
        c->p = save;  /* an escape perhaps: valid JSON, but not ours to decode */
        v->type = V_OTHER;
        return skip_string(c);
    }
    if (ch == '-' || (ch >= '0' && ch <= '9'))
        return parse_number(c, v);
    if (ch == 'n') {
        v->type = V_NULL;
        return literal(c, "null", 4);
    }
    if (ch == 't') {
        v->type = V_TRUE;
        return literal(c, "true", 4);
    }
    if (ch == 'f') {
        v->type = V_FALSE;
        return literal(c, "false", 5);
    }
    if (ch == '[') {
        const char *save = c->p;
        c->p++;
        skip_ws(c);
        v->type = V_INTS;
        v->n = 0;
        if (c->p < c->end && *c->p == ']') {
            c->p++;
            return 0;
        }
        for (;;) {
            Value item;
            if (c->p >= c->end || !(*c->p == '-' || (*c->p >= '0' && *c->p <= '9')))
                break;
            if (parse_number(c, &item) < 0)
                return -1;
            if (item.type != V_INT || item.i < INT32_MIN || item.i > INT32_MAX ||
                v->n >= MAX_ITEMS)
                break;
            v->items[v->n++] = (int32_t)item.i;
            int more = next_item(c, ']');
            if (more <= 0)
                return more;
        }
        c->p = save;  /* not a short list of int32: validate it, but do not use it */
        v->type = V_OTHER;
        return skip_value(c, 1);
    }
    v->type = V_OTHER;
    return skip_value(c, 1);
}

/* ---- Avro encoding --------------------------------------------------------------- */

typedef struct {
    char *buf;
    Py_ssize_t n;
} Out;

static inline void put_byte(Out *o, unsigned char b) { o->buf[o->n++] = (char)b; }

static inline void put_bytes(Out *o, const void *src, Py_ssize_t n) {
    memcpy(o->buf + o->n, src, (size_t)n);
    o->n += n;
}

static inline void put_long(Out *o, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    while (z >= 0x80) {
        put_byte(o, (unsigned char)(z | 0x80));
        z >>= 7;
    }
    put_byte(o, (unsigned char)z);
}

static inline void put_double(Out *o, double d) { put_bytes(o, &d, 8); }

static inline void put_text(Out *o, const char *s, Py_ssize_t n) {
    put_long(o, n);
    put_bytes(o, s, n);
}

static inline void put_ints(Out *o, const int32_t *items, Py_ssize_t n) {
    if (n) {
        put_long(o, n);
        for (Py_ssize_t k = 0; k < n; k++)
            put_long(o, items[k]);
    }
    put_byte(o, 0);
}

static inline int is_int32(const Value *v) {
    return v->type == V_INT && v->i >= INT32_MIN && v->i <= INT32_MAX;
}

static inline int is_number(const Value *v) { return v->type == V_INT || v->type == V_FLOAT; }

static inline double number(const Value *v) {
    return v->type == V_INT ? (double)v->i : v->f;
}

static inline int is_absent(const Value *v) { return v->type == V_ABSENT || v->type == V_NULL; }

/* A decimal-string field (``ds``: fractional size) as float() reads it, for the strict
 * JSON number grammar only (float() also takes spaces, "_", "inf"...: those bail). A
 * number where a string was expected is taken as it is, as the Python mapping does. */
static int decimal(const Value *v, double *out) {
    if (is_number(v)) {
        *out = number(v);
        return 0;
    }
    if (v->type != V_STR || v->n == 0 || v->n >= 64)
        return -1;
    Cursor c = {v->s, v->s + v->n};
    Value parsed;
    if (parse_number(&c, &parsed) < 0 || c.p != c.end)
        return -1;
    if (parsed.type == V_FLOAT) {
        *out = parsed.f;
        return 0;
    }
    if (parsed.type != V_INT)
        return -1;
    /* float("-0") is -0.0, which (double)0 is not */
    *out = (parsed.i == 0 && v->s[0] == '-') ? -0.0 : (double)parsed.i;
    return 0;
}



/* Field program codes (schemas.batch builds the program from the schema). */
enum { F_LONG = 'l', F_INT = 'i', F_DOUBLE = 'd', F_FLOAT = 'f', F_BOOL = 'b',
       F_STRING = 's', F_BYTES = 'y', F_ENUM = 'e', F_NULL = '0' };

typedef struct {
    int code;         /* F_* of the value (the item, for arrays) */
    int nullable;     /* 0: plain, 1: ["null", T], 2: [T, "null"] */
    int array;        /* an array of code */
    long n_symbols;   /* enums */
    Py_ssize_t width; /* bytes per value in the output buffer */
    PyObject *values; /* bytearray (numbers) or list (strings, bytes) */
    PyObject *mask;   /* bytearray, 1 = null (nullable only) */
    PyObject *offsets;/* bytearray of int64 (arrays only) */
    char *items;      /* arrays: growable item buffer */
    Py_ssize_t n_items, cap_items;
} Column;

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
    int bad;
} Reader;

static inline int64_t read_long(Reader *r) {
    uint64_t n = 0;
    int shift = 0;
    for (;;) {
        if (r->p >= r->end || shift > 63) {
            r->bad = 1;
            return 0;
        }
        unsigned char b = *r->p++;
        if (shift == 63 && (b & 0x7E)) {  /* beyond 64 bits */
            r->bad = 1;
            return 0;
        }
        n |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80))
            break;
        shift += 7;
    }
    return (int64_t)(n >> 1) ^ -(int64_t)(n & 1);
}

#define STR_CACHE 256
typedef struct {
    Py_ssize_t n;
    char text[16];
    PyObject *value;
} CachedText;

static PyObject *read_text(Reader *r, int is_bytes, CachedText *cache) {
    int64_t n = read_long(r);
    if (r->bad || n < 0 || n > r->end - r->p) {
        r->bad = 1;
        return NULL;
    }
    const char *s = (const char *)r->p;
    r->p += n;
    if (is_bytes)
        return PyBytes_FromStringAndSize(s, (Py_ssize_t)n);
    CachedText *slot = NULL;
    if (n <= 16) {  /* symbols repeat: one str per distinct value and call */
        uint32_t h = 2166136261u;
        for (int64_t k = 0; k < n; k++)
            h = (h ^ (unsigned char)s[k]) * 16777619u;
        slot = &cache[h % STR_CACHE];
        if (slot->value && slot->n == n && memcmp(slot->text, s, (size_t)n) == 0)
            return Py_NewRef(slot->value);
    }
    PyObject *v = PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "strict");
    if (v == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            return NULL;
        PyErr_Clear();
        r->bad = 1;
        return NULL;
    }
    if (slot) {
        Py_XSETREF(slot->value, Py_NewRef(v));
        slot->n = (Py_ssize_t)n;
        memcpy(slot->text, s, (size_t)n);
    }
    return v;
}

/* An IEEE float or double, little-endian on the wire as in memory. */
static inline int read_fixed(Reader *r, char *dst, Py_ssize_t size) {
    if (r->end - r->p < size) {
        r->bad = 1;
        return 0;
    }
    memcpy(dst, r->p, (size_t)size);
    r->p += size;
    return 0;
}

/* One value of code into dst (numbers) or *obj (strings); r->bad on a malformed value. */
static int read_scalar(Reader *r, const Column *col, char *dst, PyObject **obj,
                       CachedText *cache) {
    switch (col->code) {
    case F_LONG: {
        int64_t v = read_long(r);
        memcpy(dst, &v, 8);
        return 0;
    }
    case F_INT: {
        int64_t v = read_long(r);
        if (v < INT32_MIN || v > INT32_MAX)
            r->bad = 1;
        memcpy(dst, &v, 8);
        return 0;
    }
    case F_DOUBLE:
        return read_fixed(r, dst, 8);
    case F_FLOAT:
        return read_fixed(r, dst, 4);
    case F_BOOL:
        if (r->p >= r->end || *r->p > 1) {
            r->bad = 1;
            return 0;
        }
        *dst = (char)*r->p++;
        return 0;
    case F_ENUM: {
        int64_t v = read_long(r);
        if (v < 0 || v >= col->n_symbols)
            r->bad = 1;
        memcpy(dst, &v, 8);
        return 0;
    }
    case F_STRING:
    case F_BYTES: {
        PyObject *v = read_text(r, col->code == F_BYTES, cache);
        if (v == NULL && !r->bad)
            return -1;  /* a Python error (memory) */
        *obj = v;
        return 0;
    }
    case F_NULL:
        return 0;
    }
    r->bad = 1;
    return 0;
}

static int push_item(Column *col, const char *v) {
    if (col->n_items == col->cap_items) {
        Py_ssize_t cap = col->cap_items ? col->cap_items * 2 : 1024;
        char *grown = PyMem_Realloc(col->items, (size_t)(cap * col->width));
        if (grown == NULL)
            return -1;
        col->items = grown;
        col->cap_items = cap;
    }
    memcpy(col->items + col->n_items * col->width, v, (size_t)col->width);
    col->n_items++;
    return 0;
}

static void free_columns(Column *cols, Py_ssize_t n) {
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_XDECREF(cols[k].values);
        Py_XDECREF(cols[k].mask);
        Py_XDECREF(cols[k].offsets);
        PyMem_Free(cols[k].items);
    }
    PyMem_Free(cols);
}

static Py_ssize_t width_of(int code) {
    switch (code) {
    case F_DOUBLE: case F_LONG: case F_INT: case F_ENUM: return 8;
    case F_FLOAT: return 4;
    case F_BOOL: return 1;
    }
    return 0;  /* strings and bytes: list items */
}

PyDoc_STRVAR(decode_rows_doc,
"decode_rows(data, starts, ends, program) -> (columns, bad)\n\n"
"Decode the Avro record bodies data[starts[i]:ends[i]] (int64 buffers) with program, a\n"
"list of (code, nullable, array, n_symbols) per field, code one of l i d f b s y e 0.\n"
"columns: per field (values, mask, offsets): values a bytearray of little-endian numbers\n"
"(int/long/enum as int64) or a list of str/bytes (None where null or bad), mask a\n"
"bytearray (1 = null) for nullable fields, offsets a bytearray of int64 (rows + 1) for\n"
"arrays. bad: a bytearray, 1 where a row is malformed or does not end where it should\n"
"(its values are zero/None; the caller decodes it one by one for the error).");

static PyObject *decode_rows(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer data, starts, ends;
    PyObject *program;
    if (!PyArg_ParseTuple(args, "y*y*y*O!", &data, &starts, &ends, &PyList_Type, &program))
        return NULL;
    PyObject *result = NULL, *bad = NULL, *out = NULL;
    Column *cols = NULL;
    CachedText *cache = NULL;
    Py_ssize_t n_fields = PyList_GET_SIZE(program);
    Py_ssize_t rows = starts.len / 8;
    if (ends.len != starts.len) {
        PyErr_SetString(PyExc_ValueError, "starts and ends differ in length");
        goto done;
    }
    cols = PyMem_Calloc((size_t)(n_fields ? n_fields : 1), sizeof(Column));
    cache = PyMem_Calloc(STR_CACHE, sizeof(CachedText));
    bad = PyByteArray_FromStringAndSize(NULL, rows);
    if (cols == NULL || cache == NULL || bad == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memset(PyByteArray_AS_STRING(bad), 0, (size_t)rows);
    for (Py_ssize_t k = 0; k < n_fields; k++) {
        Column *col = &cols[k];
        int code, nullable, array;
        long n_symbols;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(program, k), "Ciil", &code, &nullable, &array,
                              &n_symbols))
            goto done;
        col->code = code;
        col->nullable = nullable;
        col->array = array;
        col->n_symbols = n_symbols;
        col->width = width_of(code);
        int is_list = col->width == 0 && code != F_NULL;
        if (array && (is_list || code == F_NULL || nullable)) {
            PyErr_SetString(PyExc_ValueError, "arrays of numbers only");
            goto done;
        }
        if (array) {
            col->offsets = PyByteArray_FromStringAndSize(NULL, (rows + 1) * 8);
            if (col->offsets == NULL)
                goto done;
        } else if (is_list) {
            col->values = PyList_New(rows);
            if (col->values == NULL)
                goto done;
            for (Py_ssize_t i = 0; i < rows; i++)
                PyList_SET_ITEM(col->values, i, Py_NewRef(Py_None));
        } else if (code != F_NULL) {
            col->values = PyByteArray_FromStringAndSize(NULL, rows * col->width);
            if (col->values == NULL)
                goto done;
            memset(PyByteArray_AS_STRING(col->values), 0, (size_t)(rows * col->width));
        }
        if (nullable) {
            col->mask = PyByteArray_FromStringAndSize(NULL, rows);
            if (col->mask == NULL)
                goto done;
            memset(PyByteArray_AS_STRING(col->mask), 1, (size_t)rows);
        }
    }
    const int64_t *s = starts.buf, *e = ends.buf;
    const unsigned char *base = data.buf;
    char *bad_rows = PyByteArray_AS_STRING(bad);
    for (Py_ssize_t i = 0; i < rows; i++) {
        if (s[i] < 0 || e[i] < s[i] || e[i] > data.len) {
            bad_rows[i] = 1;
            for (Py_ssize_t k = 0; k < n_fields; k++)
                if (cols[k].array)
                    ((int64_t *)PyByteArray_AS_STRING(cols[k].offsets))[i] = cols[k].n_items;
            continue;
        }
        for (Py_ssize_t k = 0; k < n_fields; k++)
            if (cols[k].array)
                ((int64_t *)PyByteArray_AS_STRING(cols[k].offsets))[i] = cols[k].n_items;
        Reader r = {base + s[i], base + e[i], 0};
        for (Py_ssize_t k = 0; k < n_fields && !r.bad; k++) {
            Column *col = &cols[k];
            if (col->nullable) {
                if (r.p >= r.end) {
                    r.bad = 1;
                    break;
                }
                unsigned char tag = *r.p++;
                int null_tag = col->nullable == 1 ? 0 : 2;
                if (tag == null_tag)
                    continue;  /* mask stays 1, value 0 / None */
                if (tag != (null_tag ^ 2)) {
                    r.bad = 1;
                    break;
                }
                PyByteArray_AS_STRING(col->mask)[i] = 0;
            }
            if (col->array) {
                for (;;) {
                    int64_t n = read_long(&r);
                    if (r.bad)
                        break;
                    if (n == 0)
                        break;
                    if (n < 0) {  /* a block with its byte size */
                        read_long(&r);
                        if (n == INT64_MIN)
                            r.bad = 1;
                        n = -n;
                    }
                    if (r.bad || n > r.end - r.p) {
                        r.bad = 1;
                        break;
                    }
                    for (int64_t j = 0; j < n && !r.bad; j++) {
                        char v[8] = {0};
                        read_scalar(&r, col, v, NULL, cache);
                        if (!r.bad && push_item(col, v) < 0) {
                            PyErr_NoMemory();
                            goto done;
                        }
                    }
                    if (r.bad)
                        break;
                }
                continue;
            }
            if (col->width) {
                char *dst = PyByteArray_AS_STRING(col->values) + i * col->width;
                read_scalar(&r, col, dst, NULL, cache);
            } else if (col->code != F_NULL) {
                PyObject *v = NULL;
                if (read_scalar(&r, col, NULL, &v, cache) < 0)
                    goto done;
                if (v != NULL)
                    Py_SETREF(PyList_GET_ITEM(col->values, i), v);
            }
        }
        if (r.bad || r.p != r.end) {
            bad_rows[i] = 1;
            /* zero the row again: a half-read row must not look like data */
            for (Py_ssize_t k = 0; k < n_fields; k++) {
                Column *col = &cols[k];
                if (col->mask)
                    PyByteArray_AS_STRING(col->mask)[i] = 1;
                if (col->array) {
                    int64_t *off = (int64_t *)PyByteArray_AS_STRING(col->offsets);
                    col->n_items = off[i];
                } else if (col->width) {
                    memset(PyByteArray_AS_STRING(col->values) + i * col->width, 0,
                           (size_t)col->width);
                } else if (col->code != F_NULL) {  /* a null column has no values */
                    Py_SETREF(PyList_GET_ITEM(col->values, i), Py_NewRef(Py_None));
                }
            }
        }
    }
    out = PyList_New(n_fields);
    if (out == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < n_fields; k++) {
        Column *col = &cols[k];
        if (col->array) {
            ((int64_t *)PyByteArray_AS_STRING(col->offsets))[rows] = col->n_items;
            col->values = PyByteArray_FromStringAndSize(col->items,
                                                        col->n_items * col->width);
            if (col->values == NULL)
                goto done;
        }
        PyObject *item = Py_BuildValue("(OOO)", col->values ? col->values : Py_None,
                                       col->mask ? col->mask : Py_None,
                                       col->offsets ? col->offsets : Py_None);
        if (item == NULL)
            goto done;
        PyList_SET_ITEM(out, k, item);
    }
    result = PyTuple_Pack(2, out, bad);
done:
    if (cache) {
        for (int k = 0; k < STR_CACHE; k++)
            Py_XDECREF(cache[k].value);
        PyMem_Free(cache);
    }
    if (cols)
        free_columns(cols, n_fields);
    Py_XDECREF(out);
    Py_XDECREF(bad);
    PyBuffer_Release(&data);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&ends);
    return result;
}

/* ---- scan_messages: a poll of Kafka messages -> joined values + offsets ----------- */

PyDoc_STRVAR(scan_messages_doc,
"scan_messages(messages, pad) -> (data, lengths, last_offsets) or None\n\n"
"For a list of confluent_kafka Messages that all have error() None: data is every\n"
"value joined (None as empty) plus pad zero bytes, lengths a bytearray of int64, and\n"
"last_offsets {(topic, partition): offset of the last message}. None when any message\n"
"has an error or a value that is not bytes (the caller then takes the Python path).");

static PyObject *scan_messages(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *msgs;
    Py_ssize_t pad;
    if (!PyArg_ParseTuple(args, "O!n", &PyList_Type, &msgs, &pad))
        return NULL;
    if (pad < 0)
        pad = 0;
    Py_ssize_t n = PyList_GET_SIZE(msgs);
    PyObject **values = PyMem_Calloc((size_t)(n ? n : 1), sizeof(PyObject *));
    PyObject *lengths = PyByteArray_FromStringAndSize(NULL, n * 8);
    PyObject *last = PyDict_New();
    PyObject *data = NULL, *result = NULL, *topic = NULL;
    PyObject *s_error = PyUnicode_InternFromString("error");
    PyObject *s_value = PyUnicode_InternFromString("value");
    PyObject *s_topic = PyUnicode_InternFromString("topic");
    PyObject *s_partition = PyUnicode_InternFromString("partition");
    PyObject *s_offset = PyUnicode_InternFromString("offset");
    Py_ssize_t filled = 0;
    if (!values || !lengths || !last || !s_error || !s_value || !s_topic || !s_partition ||
        !s_offset) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    int64_t *len = (int64_t *)PyByteArray_AS_STRING(lengths);
    Py_ssize_t total = 0;
    long partition = -1;
    PyObject *offset = NULL;  /* the pending run's last offset (owned) */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *m = PyList_GET_ITEM(msgs, i);
        PyObject *err = PyObject_CallMethodNoArgs(m, s_error);
        if (err == NULL)
            goto fail_run;
        int has_error = err != Py_None;
        Py_DECREF(err);
        if (has_error)
            goto fallback_run;
        PyObject *v = PyObject_CallMethodNoArgs(m, s_value);
        if (v == NULL)
            goto fail_run;
        if (v == Py_None) {
            Py_DECREF(v);
            v = PyBytes_FromStringAndSize(NULL, 0);
            if (v == NULL)
                goto fail_run;
        } else if (!PyBytes_Check(v)) {
            Py_DECREF(v);
            goto fallback_run;
        }
        values[filled++] = v;
        len[i] = PyBytes_GET_SIZE(v);
        total += len[i];
        PyObject *t = PyObject_CallMethodNoArgs(m, s_topic);
        PyObject *pobj = t ? PyObject_CallMethodNoArgs(m, s_partition) : NULL;
        PyObject *o = pobj ? PyObject_CallMethodNoArgs(m, s_offset) : NULL;
        long part = pobj ? PyLong_AsLong(pobj) : -1;
        Py_XDECREF(pobj);
        if (o == NULL || (part == -1 && PyErr_Occurred())) {
            Py_XDECREF(t);
            Py_XDECREF(o);
            goto fail_run;
        }
        int same = topic != NULL && part == partition &&
                   (t == topic || PyObject_RichCompareBool(t, topic, Py_EQ) == 1);
        if (!same && topic != NULL) {  /* a run of one partition ended: note its last */
            PyObject *key = Py_BuildValue("(Ol)", topic, partition);
            if (key == NULL || PyDict_SetItem(last, key, offset) < 0) {
                Py_XDECREF(key);
                Py_DECREF(t);
                Py_DECREF(o);
                goto fail_run;
            }
            Py_DECREF(key);
        }
        Py_XSETREF(topic, t);
        Py_XSETREF(offset, o);
        partition = part;
    }
    if (topic != NULL) {
        PyObject *key = Py_BuildValue("(Ol)", topic, partition);
        if (key == NULL || PyDict_SetItem(last, key, offset) < 0) {
            Py_XDECREF(key);
            goto fail_run;
        }
        Py_DECREF(key);
    }
    Py_CLEAR(offset);
    data = PyBytes_FromStringAndSize(NULL, total + pad);
    if (data == NULL)
        goto done;
    {
        char *dst = PyBytes_AS_STRING(data);
        for (Py_ssize_t k = 0; k < filled; k++) {
            memcpy(dst, PyBytes_AS_STRING(values[k]), (size_t)PyBytes_GET_SIZE(values[k]));
            dst += PyBytes_GET_SIZE(values[k]);
        }
        memset(dst, 0, (size_t)pad);
    }
    result = PyTuple_Pack(3, data, lengths, last);
    goto done;
fallback_run:
    Py_CLEAR(offset);
    result = Py_NewRef(Py_None);
    goto done;
fail_run:
    Py_CLEAR(offset);
done:
    for (Py_ssize_t k = 0; k < filled; k++)
        Py_DECREF(values[k]);
    PyMem_Free(values);
    Py_XDECREF(topic);
    Py_XDECREF(data);
    Py_XDECREF(lengths);
    Py_XDECREF(last);
    Py_XDECREF(s_error);
    Py_XDECREF(s_value);
    Py_XDECREF(s_topic);
    Py_XDECREF(s_partition);
    Py_XDECREF(s_offset);
    return result;
}


/* ---- Encoder: JSON -> framed Avro records, driven by field programs ---------------- */

/* Operations, one per Avro field in the schema's order (schemas/program.py compiles
 * them from the field specification). */
enum { OP_JSON = 'j', OP_CONST = 'c', OP_PARAM = 'p', OP_SUM = '+' };
/* How a JSON value becomes the field's Avro value. */
enum { T_LONG = 'l', T_INT = 'i', T_DOUBLE = 'd', T_DECIMAL = 'D', T_STRING = 's',
       T_BOOL = 'b', T_INTS = 'a', T_ONE_OR_INTS = 'A' };

#define MAX_SOURCES 4
#define MAX_SLOTS 64      /* distinct JSON keys one encoder reads */
#define MAX_LIT 64
#define MAX_PARAMS 8
#define KEY_TABLE 256
#define KEY_CACHE 64

typedef struct {
    int slot;       /* the JSON key, as an index into the encoder's keys */
    int type;       /* T_* */
    int64_t scale;  /* integers are multiplied by it (ms -> ns), overflow bails */
} Source;

typedef struct {
    int op;
    int type;                 /* OP_PARAM, OP_SUM: T_LONG or T_STRING */
    int n_src;
    Source src[MAX_SOURCES];  /* OP_JSON: the first one present and not null is taken */
    char lit[MAX_LIT];        /* OP_CONST: the bytes; else the union branch before a value */
    Py_ssize_t lit_n;
    char absent[16];          /* what an absent (or null) value writes */
    Py_ssize_t absent_n;
    int absent_ok;            /* 0: an absent value bails */
    int arg;                  /* OP_PARAM: the call's parameter; OP_SUM: the op it adds to */
    int arg2;                 /* OP_SUM: the parameter added */
} Op;

typedef struct {
    char tag[8];              /* the "ev" code that selects it (frames) */
    Py_ssize_t tag_n;
    PyObject *header;         /* bytes: the codec's framing prefix */
    PyObject *topic;          /* whatever the caller wants back with each record */
    int n_ops;
    Op *ops;
    int time_op;              /* the op whose long value is the event time, or -1 */
    int key_op;               /* the string op whose text is the Kafka key, or -1 */
} Program;

typedef struct {
    Py_ssize_t n;
    char text[16];
    PyObject *key;
} CachedKey;

typedef struct {
    PyObject_HEAD
    int ready;
    int n_slots;
    char *key_text[MAX_SLOTS];
    Py_ssize_t key_len[MAX_SLOTS];
    unsigned char table[KEY_TABLE];   /* hash -> slot + 1, open addressing */
    int tag_slot;                     /* the "ev" key's slot, or -1 */
    int n_programs;
    Program *programs;
    Py_ssize_t max_record;            /* bytes: the largest record any program writes */
    CachedKey keys[KEY_CACHE];
} Encoder;

static inline unsigned key_hash(const char *k, Py_ssize_t n) {
    unsigned h = (unsigned)n * 131u;
    if (n > 0)
        h += (unsigned char)k[0] * 31u + (unsigned char)k[n - 1] * 7u +
             (unsigned char)k[n / 2] * 3u;
    return h & (KEY_TABLE - 1);
}

static inline int slot_of(const Encoder *e, const char *k, Py_ssize_t n) {
    unsigned h = key_hash(k, n);
    for (int probe = 0; probe < KEY_TABLE; probe++) {
        int s = e->table[(h + probe) & (KEY_TABLE - 1)];
        if (s == 0)
            return -1;
        s--;
        if (e->key_len[s] == n && memcmp(e->key_text[s], k, (size_t)n) == 0)
            return s;
    }
    return -1;
}

static void Encoder_clear(Encoder *self) {
    for (int s = 0; s < self->n_slots; s++)
        PyMem_Free(self->key_text[s]);
    self->n_slots = 0;
    if (self->programs) {
        for (int k = 0; k < self->n_programs; k++) {
            Py_XDECREF(self->programs[k].header);
            Py_XDECREF(self->programs[k].topic);
            PyMem_Free(self->programs[k].ops);
        }
        PyMem_Free(self->programs);
        self->programs = NULL;
    }
    self->n_programs = 0;
    for (int k = 0; k < KEY_CACHE; k++)
        Py_CLEAR(self->keys[k].key);
    self->ready = 0;
}

static void Encoder_dealloc(Encoder *self) {
    Encoder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int bad_program(const char *what) {
    PyErr_Format(PyExc_ValueError, "Encoder program: %s", what);
    return -1;
}

/* Bytes of a Python bytes object into buf (at most cap), or -1 with an error set. */
static int copy_bytes(PyObject *b, char *buf, Py_ssize_t cap, Py_ssize_t *n,
                      const char *what) {
    if (!PyBytes_Check(b) || PyBytes_GET_SIZE(b) > cap)
        return bad_program(what);
    *n = PyBytes_GET_SIZE(b);
    memcpy(buf, PyBytes_AS_STRING(b), (size_t)*n);
    return 0;
}

/* The largest value an op writes after its literal. */
static Py_ssize_t max_value(int type) {
    switch (type) {
    case T_LONG: return 10;
    case T_INT: return 5;
    case T_DOUBLE: case T_DECIMAL: return 8;
    case T_STRING: return 2 + MAX_TEXT;
    case T_BOOL: return 1;
    case T_INTS: case T_ONE_OR_INTS: return 10 + MAX_ITEMS * 5 + 1;
    }
    return -1;
}

static int parse_op(Encoder *self, Program *prog, int index, PyObject *spec) {
    Op *op = &prog->ops[index];
    int code, type;
    PyObject *sources, *lit, *absent;
    if (!PyArg_ParseTuple(spec, "CCO!SOii", &code, &type, &PyTuple_Type, &sources, &lit,
                          &absent, &op->arg, &op->arg2))
        return -1;
    op->op = code;
    op->type = type;
    if (copy_bytes(lit, op->lit, MAX_LIT, &op->lit_n, "a literal longer than 64 bytes") < 0)
        return -1;
    op->absent_ok = absent != Py_None;
    if (op->absent_ok && copy_bytes(absent, op->absent, (Py_ssize_t)sizeof(op->absent),
                                    &op->absent_n, "an absent value longer than 16 bytes") < 0)
        return -1;
    op->n_src = (int)PyTuple_GET_SIZE(sources);
    if (op->n_src > MAX_SOURCES)
        return bad_program("more than 4 sources for one field");
    for (int k = 0; k < op->n_src; k++) {
        Source *s = &op->src[k];
        long long scale;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(sources, k), "iCL", &s->slot, &s->type,
                              &scale))
            return -1;
        s->scale = scale;
        if (s->slot < 0 || s->slot >= self->n_slots)
            return bad_program("a source's key is not among the keys");
        if (max_value(s->type) < 0)
            return bad_program("an unknown source type");
        if (scale < 1 || (scale != 1 && s->type != T_LONG && s->type != T_INT))
            return bad_program("a scale on a value that is not an integer");
    }
    switch (code) {
    case OP_JSON:
        if (op->n_src == 0)
            return bad_program("a JSON field without a key");
        break;
    case OP_CONST:
        break;
    case OP_PARAM:
        if (op->arg < 0 || op->arg >= MAX_PARAMS || (type != T_LONG && type != T_STRING))
            return bad_program("a parameter out of range or of another type than long/string");
        break;
    case OP_SUM:
        if (op->arg < 0 || op->arg >= index || op->arg2 < 0 || op->arg2 >= MAX_PARAMS ||
            type != T_LONG)
            return bad_program("a sum of something but an earlier field and a parameter");
        break;
    default:
        return bad_program("an unknown operation");
    }
    return 0;
}

static Py_ssize_t op_size(const Op *op) {
    if (op->op == OP_CONST)
        return op->lit_n;
    Py_ssize_t value = 0;
    if (op->op == OP_JSON) {
        for (int k = 0; k < op->n_src; k++)
            if (max_value(op->src[k].type) > value)
                value = max_value(op->src[k].type);
    } else {
        value = max_value(op->type);
    }
    Py_ssize_t present = op->lit_n + value;
    return present > op->absent_n ? present : op->absent_n;
}

static int Encoder_init(Encoder *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"keys", "tag_key", "programs", NULL};
    PyObject *keys, *tag_key, *programs;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OO!", kwlist, &PyList_Type, &keys,
                                     &tag_key, &PyList_Type, &programs))
        return -1;
    Encoder_clear(self);
    Py_ssize_t n_keys = PyList_GET_SIZE(keys);
    if (n_keys > MAX_SLOTS)
        return bad_program("more than 64 keys");
    memset(self->table, 0, sizeof(self->table));
    self->tag_slot = -1;
    for (Py_ssize_t s = 0; s < n_keys; s++) {
        Py_ssize_t n;
        const char *text = PyUnicode_Check(PyList_GET_ITEM(keys, s))
            ? PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(keys, s), &n) : NULL;
        if (text == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "keys must be str");
            return -1;
        }
        if (slot_of(self, text, n) >= 0)
            return bad_program("a key listed twice");
        self->key_text[s] = PyMem_Malloc((size_t)(n ? n : 1));
        if (self->key_text[s] == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(self->key_text[s], text, (size_t)n);
        self->key_len[s] = n;
        self->n_slots = (int)s + 1;
        unsigned h = key_hash(text, n);
        while (self->table[h])
            h = (h + 1) & (KEY_TABLE - 1);
        self->table[h] = (unsigned char)(s + 1);
        if (tag_key != Py_None && PyUnicode_Compare(tag_key, PyList_GET_ITEM(keys, s)) == 0)
            self->tag_slot = (int)s;
    }
    if (PyErr_Occurred())
        return -1;
    if (tag_key != Py_None && self->tag_slot < 0)
        return bad_program("the tag key is not among the keys");
    Py_ssize_t n_programs = PyList_GET_SIZE(programs);
    self->programs = PyMem_Calloc((size_t)(n_programs ? n_programs : 1), sizeof(Program));
    if (self->programs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->n_programs = (int)n_programs;
    self->max_record = 0;
    for (Py_ssize_t k = 0; k < n_programs; k++) {
        Program *prog = &self->programs[k];
        PyObject *tag, *header, *topic, *ops;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(programs, k), "OSOiiO!", &tag, &header, &topic,
                              &prog->time_op, &prog->key_op, &PyList_Type, &ops))
            return -1;
        prog->header = Py_NewRef(header);
        prog->topic = Py_NewRef(topic);
        if (tag != Py_None) {
            Py_ssize_t n;
            const char *t = PyUnicode_Check(tag) ? PyUnicode_AsUTF8AndSize(tag, &n) : NULL;
            if (t == NULL || n > (Py_ssize_t)sizeof(prog->tag))
                return PyErr_Occurred() ? -1 : bad_program("a tag must be a short str");
            memcpy(prog->tag, t, (size_t)n);
            prog->tag_n = n;
        }
        if (PyBytes_GET_SIZE(header) > 64)
            return bad_program("a header longer than 64 bytes");
        prog->n_ops = (int)PyList_GET_SIZE(ops);
        prog->ops = PyMem_Calloc((size_t)(prog->n_ops ? prog->n_ops : 1), sizeof(Op));
        if (prog->ops == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        Py_ssize_t size = PyBytes_GET_SIZE(header);
        for (int j = 0; j < prog->n_ops; j++) {
            if (parse_op(self, prog, j, PyList_GET_ITEM(ops, j)) < 0)
                return -1;
            size += op_size(&prog->ops[j]);
        }
        if (prog->time_op >= prog->n_ops || prog->key_op >= prog->n_ops)
            return bad_program("the time or key field is out of range");
        if (prog->key_op >= 0) {
            const Op *kop = &prog->ops[prog->key_op];
            if (kop->op != OP_JSON || kop->n_src != 1 || kop->src[0].type != T_STRING ||
                kop->absent_ok || kop->src[0].slot < 0)
                return bad_program("the key field must be one required JSON string");
        }
        if (size > self->max_record)
            self->max_record = size;
    }
    self->ready = 1;
    return 0;
}

/* One JSON object's members into vals by slot (c->p at '{'): -1 when it is not ours
 * (malformed, or a key we read given twice: "last one wins" is the reference's). */
static int parse_object(const Encoder *e, Cursor *c, Value *vals) {
    uint64_t seen = 0;
    for (int k = 0; k < e->n_slots; k++)
        vals[k].type = V_ABSENT;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        return 0;
    }
    for (;;) {
        const char *k;
        Py_ssize_t kn;
        if (parse_key(c, &k, &kn) < 0)
            return -1;
        int slot = slot_of(e, k, kn);
        if (slot < 0) {
            if (skip_value(c, 1) < 0)
                return -1;
        } else {
            if (seen & (1ull << slot))
                return -1;
            seen |= 1ull << slot;
            if (parse_value(c, &vals[slot]) < 0)
                return -1;
        }
        int more = next_item(c, '}');
        if (more < 0)
            return -1;
        if (more == 0)
            return 0;
    }
}

/* The call's parameters, read once per call. */
typedef struct {
    int n;
    int is_none[MAX_PARAMS];
    int is_str[MAX_PARAMS];
    int64_t i[MAX_PARAMS];
    const char *s[MAX_PARAMS];
    Py_ssize_t len[MAX_PARAMS];
} Params;

/* 0, or -1 with a TypeError/OverflowError set. */
static int read_params(PyObject *params, Params *out) {
    if (!PyTuple_Check(params) || PyTuple_GET_SIZE(params) > MAX_PARAMS) {
        PyErr_SetString(PyExc_TypeError, "params must be a tuple of at most 8 items");
        return -1;
    }
    out->n = (int)PyTuple_GET_SIZE(params);
    for (int k = 0; k < out->n; k++) {
        PyObject *v = PyTuple_GET_ITEM(params, k);
        out->is_none[k] = v == Py_None;
        out->is_str[k] = PyUnicode_Check(v);
        if (out->is_none[k])
            continue;
        if (out->is_str[k]) {
            out->s[k] = PyUnicode_AsUTF8AndSize(v, &out->len[k]);
            if (out->s[k] == NULL)
                return -1;
        } else if (PyLong_CheckExact(v)) {
            out->i[k] = PyLong_AsLongLong(v);
            if (out->i[k] == -1 && PyErr_Occurred())
                return -1;
        } else {
            PyErr_SetString(PyExc_TypeError, "a parameter must be None, str or int");
            return -1;
        }
    }
    return 0;
}


/* One record of prog from vals into o, the framing header first; *time_ns gets its event
 * time. -1: not ours (the reference path decides). */
static int encode_record(const Program *prog, const Value *vals, const Params *params,
                         Out *o, int64_t *longs, int64_t *time_ns) {
    o->n = 0;
    put_bytes(o, PyBytes_AS_STRING(prog->header), PyBytes_GET_SIZE(prog->header));
    for (int j = 0; j < prog->n_ops; j++) {
        const Op *op = &prog->ops[j];
        longs[j] = 0;
        if (op->op == OP_CONST) {
            put_bytes(o, op->lit, op->lit_n);
            continue;
        }
        if (op->op == OP_PARAM) {
            int k = op->arg;
            if (k >= params->n)
                return -1;
            if (params->is_none[k]) {
                if (!op->absent_ok)
                    return -1;
                put_bytes(o, op->absent, op->absent_n);
                continue;
            }
            put_bytes(o, op->lit, op->lit_n);
            if (op->type == T_STRING) {
                if (!params->is_str[k] || params->len[k] > MAX_TEXT)
                    return -1;
                put_text(o, params->s[k], params->len[k]);
            } else {
                if (params->is_str[k])
                    return -1;
                put_long(o, params->i[k]);
                longs[j] = params->i[k];
            }
            continue;
        }
        if (op->op == OP_SUM) {
            int k = op->arg2;
            int64_t sum;
            if (k >= params->n || params->is_none[k] || params->is_str[k] ||
                __builtin_add_overflow(longs[op->arg], params->i[k], &sum))
                return -1;
            put_bytes(o, op->lit, op->lit_n);
            put_long(o, sum);
            longs[j] = sum;
            continue;
        }
        const Value *v = NULL;
        const Source *s = NULL;
        for (int k = 0; k < op->n_src; k++) {
            if (!is_absent(&vals[op->src[k].slot])) {
                s = &op->src[k];
                v = &vals[s->slot];
                break;
            }
        }
        if (v == NULL) {
            if (!op->absent_ok)
                return -1;
            put_bytes(o, op->absent, op->absent_n);
            continue;
        }
        put_bytes(o, op->lit, op->lit_n);
        switch (s->type) {
        case T_LONG:
        case T_INT: {
            int64_t x;
            if (v->type != V_INT || __builtin_mul_overflow(v->i, s->scale, &x))
                return -1;
            if (s->type == T_INT && (x < INT32_MIN || x > INT32_MAX))
                return -1;
            put_long(o, x);
            longs[j] = x;
            break;
        }
        case T_DOUBLE:
            if (!is_number(v))
                return -1;
            put_double(o, number(v));
            break;
        case T_DECIMAL: {
            double d;
            if (decimal(v, &d) < 0)
                return -1;
            put_double(o, d);
            break;
        }
        case T_STRING:
            if (v->type != V_STR || v->n == 0 || v->n > MAX_TEXT)
                return -1;
            put_text(o, v->s, v->n);
            break;
        case T_BOOL:
            if (v->type != V_TRUE && v->type != V_FALSE)
                return -1;
            put_byte(o, v->type == V_TRUE);
            break;
        case T_INTS:
            if (v->type != V_INTS)
                return -1;
            put_ints(o, v->items, v->n);
            break;
        case T_ONE_OR_INTS:
            if (v->type == V_INTS) {
                put_ints(o, v->items, v->n);
            } else if (is_int32(v)) {
                int32_t one = (int32_t)v->i;
                put_ints(o, &one, 1);
            } else {
                return -1;
            }
            break;
        default:
            return -1;
        }
    }
    if (prog->time_op >= 0)
        *time_ns = longs[prog->time_op];
    return 0;
}

/* The Kafka key of a record: its symbol as bucket names spell it, '/' -> '.'; the rule
 * of schemas/keys.py (symbol_key), which the Python side checks this against at start.
 * Short symbols are cached: a frame repeats a few of them. */
static PyObject *key_of(Encoder *e, const Value *sym) {
    CachedKey *slot = NULL;
    if (sym->n <= 16) {
        unsigned h = 2166136261u;
        for (Py_ssize_t k = 0; k < sym->n; k++)
            h = (h ^ (unsigned char)sym->s[k]) * 16777619u;
        slot = &e->keys[h % KEY_CACHE];
        if (slot->key && slot->n == sym->n && memcmp(slot->text, sym->s, (size_t)sym->n) == 0)
            return Py_NewRef(slot->key);
    }
    PyObject *key;
    if (memchr(sym->s, '/', (size_t)sym->n) == NULL) {
        key = PyUnicode_FromStringAndSize(sym->s, sym->n);
    } else {
        char text[MAX_TEXT];
        for (Py_ssize_t j = 0; j < sym->n; j++)
            text[j] = sym->s[j] == '/' ? '.' : sym->s[j];
        key = PyUnicode_FromStringAndSize(text, sym->n);
    }
    if (key != NULL && slot != NULL) {
        Py_XSETREF(slot->key, Py_NewRef(key));
        slot->n = sym->n;
        memcpy(slot->text, sym->s, (size_t)sym->n);
    }
    return key;
}

/* Per-call scratch: slot values, the record buffer, the ops' long values. */
typedef struct {
    Value *vals;
    Out out;
    int64_t *longs;
} Scratch;

static int scratch_alloc(const Encoder *e, Scratch *s) {
    int max_ops = 1;
    for (int k = 0; k < e->n_programs; k++)
        if (e->programs[k].n_ops > max_ops)
            max_ops = e->programs[k].n_ops;
    s->vals = PyMem_Malloc(sizeof(Value) * (size_t)(e->n_slots ? e->n_slots : 1));
    s->out.buf = PyMem_Malloc((size_t)e->max_record + 1);
    s->out.n = 0;
    s->longs = PyMem_Malloc(sizeof(int64_t) * (size_t)max_ops);
    if (s->vals == NULL || s->out.buf == NULL || s->longs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void scratch_free(Scratch *s) {
    PyMem_Free(s->vals);
    PyMem_Free(s->out.buf);
    PyMem_Free(s->longs);
}

static int check_ready(const Encoder *self) {
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Encoder.__init__ was not called or failed");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(encode_frame_doc,
"encode_frame(frame, params) -> (records, counts, last_time) or None\n\n"
"frame: a JSON array of objects, each encoded by the program its tag key names.\n"
"records: a list of (topic, value, key) in frame order, value the framed Avro record and\n"
"key the text of the program's key field as buckets spell it ('/' -> '.'); counts: the\n"
"records per program (a tuple); last_time: the last record's event time. None: the frame\n"
"is not one this encoder takes exactly (use the reference path for the whole frame).");

static PyObject *Encoder_encode_frame(Encoder *self, PyObject *args) {
    Py_buffer frame;
    PyObject *params_obj;
    if (check_ready(self) < 0)
        return NULL;
    if (self->tag_slot < 0) {
        PyErr_SetString(PyExc_RuntimeError, "encode_frame needs an encoder with a tag key");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*O", &frame, &params_obj))
        return NULL;
    Params params;
    Scratch s = {NULL, {NULL, 0}, NULL};
    PyObject *records = NULL, *result = NULL;
    long counts[16] = {0};
    int64_t last_time = 0;
    if (self->n_programs > 16) {
        PyErr_SetString(PyExc_ValueError, "encode_frame takes at most 16 programs");
        goto done;
    }
    if (read_params(params_obj, &params) < 0 || scratch_alloc(self, &s) < 0)
        goto done;
    records = PyList_New(0);
    if (records == NULL)
        goto done;
    Cursor cur = {(const char *)frame.buf, (const char *)frame.buf + frame.len};
    Cursor *c = &cur;
    skip_ws(c);
    if (c->p >= c->end || *c->p != '[')
        goto fallback;
    c->p++;
    skip_ws(c);
    for (;;) {
        if (c->p >= c->end || *c->p != '{' || parse_object(self, c, s.vals) < 0)
            goto fallback;
        const Value *tag = &s.vals[self->tag_slot];
        if (tag->type != V_STR)
            goto fallback;
        int which = -1;
        for (int k = 0; k < self->n_programs; k++) {
            const Program *p = &self->programs[k];
            if (p->tag_n == tag->n && memcmp(p->tag, tag->s, (size_t)tag->n) == 0) {
                which = k;
                break;
            }
        }
        if (which < 0)
            goto fallback;
        const Program *prog = &self->programs[which];
        if (encode_record(prog, s.vals, &params, &s.out, s.longs, &last_time) < 0)
            goto fallback;
        counts[which]++;
        PyObject *value = PyBytes_FromStringAndSize(s.out.buf, s.out.n);
        PyObject *key = NULL;
        if (value != NULL)
            key = prog->key_op >= 0
                ? key_of(self, &s.vals[prog->ops[prog->key_op].src[0].slot])
                : Py_NewRef(Py_None);
        PyObject *item = key ? PyTuple_New(3) : NULL;
        if (item == NULL) {
            Py_XDECREF(value);
            Py_XDECREF(key);
            goto done;
        }
        PyTuple_SET_ITEM(item, 0, Py_NewRef(prog->topic));
        PyTuple_SET_ITEM(item, 1, value);
        PyTuple_SET_ITEM(item, 2, key);
        int rc = PyList_Append(records, item);
        Py_DECREF(item);
        if (rc < 0)
            goto done;
        int more = next_item(c, ']');
        if (more < 0)
            goto fallback;
        if (more == 0)
            break;
    }
    skip_ws(c);
    if (c->p != c->end)
        goto fallback;
    PyObject *count_tuple = PyTuple_New(self->n_programs);
    if (count_tuple == NULL)
        goto done;
    for (int k = 0; k < self->n_programs; k++) {
        PyObject *n = PyLong_FromLong(counts[k]);
        if (n == NULL) {
            Py_DECREF(count_tuple);
            goto done;
        }
        PyTuple_SET_ITEM(count_tuple, k, n);
    }
    result = Py_BuildValue("(NNL)", Py_NewRef(records), count_tuple, (long long)last_time);
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(records);
    scratch_free(&s);
    PyBuffer_Release(&frame);
    return result;
}

PyDoc_STRVAR(encode_page_doc,
"encode_page(body, program, params) -> (values, start, end) or None\n\n"
"body: a JSON object (a REST page) whose \"results\" array holds objects of one kind,\n"
"each encoded by programs[program]. values: the framed Avro records in order; start:end\n"
"the bytes of the \"results\" value in body (-1, -1 when there is none), so the caller\n"
"can read the rest of the page without them. None: the page is not one this encoder\n"
"takes exactly (use the reference path for the whole page).");

static PyObject *Encoder_encode_page(Encoder *self, PyObject *args) {
    Py_buffer body;
    int which;
    PyObject *params_obj;
    if (check_ready(self) < 0)
        return NULL;
    if (!PyArg_ParseTuple(args, "y*iO", &body, &which, &params_obj))
        return NULL;
    Params params;
    Scratch s = {NULL, {NULL, 0}, NULL};
    PyObject *values = NULL, *result = NULL;
    int have_results = 0;
    Py_ssize_t start = -1, stop = -1;
    int64_t last_time = 0;
    if (which < 0 || which >= self->n_programs) {
        PyErr_SetString(PyExc_IndexError, "no such program");
        goto done;
    }
    const Program *prog = &self->programs[which];
    if (read_params(params_obj, &params) < 0 || scratch_alloc(self, &s) < 0)
        goto done;
    values = PyList_New(0);
    if (values == NULL)
        goto done;
    const char *base = (const char *)body.buf;
    Cursor cur = {base, base + body.len};
    Cursor *c = &cur;
    skip_ws(c);
    if (c->p >= c->end || *c->p != '{')
        goto fallback;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
    } else {
        for (;;) {
            const char *k;
            Py_ssize_t kn;
            if (parse_key(c, &k, &kn) < 0)
                goto fallback;
            if (kn != 7 || memcmp(k, "results", 7) != 0) {
                if (skip_value(c, 1) < 0)
                    goto fallback;
            } else {
                if (have_results)
                    goto fallback;  /* twice: "last one wins" is the reference's */
                have_results = 1;
                start = c->p - base;
                if (literal(c, "null", 4) == 0) {
                    stop = c->p - base;
                } else {
                    if (c->p >= c->end || *c->p != '[')
                        goto fallback;
                    c->p++;
                    skip_ws(c);
                    if (c->p < c->end && *c->p == ']') {
                        c->p++;
                    } else {
                        for (;;) {
                            if (c->p >= c->end || *c->p != '{' ||
                                parse_object(self, c, s.vals) < 0 ||
                                encode_record(prog, s.vals, &params, &s.out, s.longs,
                                              &last_time) < 0)
                                goto fallback;
                            PyObject *value = PyBytes_FromStringAndSize(s.out.buf, s.out.n);
                            if (value == NULL)
                                goto done;
                            int rc = PyList_Append(values, value);
                            Py_DECREF(value);
                            if (rc < 0)
                                goto done;
                            int more = next_item(c, ']');
                            if (more < 0)
                                goto fallback;
                            if (more == 0)
                                break;
                        }
                    }
                    stop = c->p - base;
                }
            }
            int more = next_item(c, '}');
            if (more < 0)
                goto fallback;
            if (more == 0)
                break;
        }
    }
    skip_ws(c);
    if (c->p != c->end)
        goto fallback;
    result = Py_BuildValue("(Onn)", values, start, stop);
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(values);
    scratch_free(&s);
    PyBuffer_Release(&body);
    return result;
}

static PyMethodDef Encoder_methods[] = {
    {"encode_frame", (PyCFunction)Encoder_encode_frame, METH_VARARGS, encode_frame_doc},
    {"encode_page", (PyCFunction)Encoder_encode_page, METH_VARARGS, encode_page_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Encoder_doc,
"Encoder(keys, tag_key, programs)\n\n"
"keys: the JSON keys read (a source names one by its index); tag_key: the key whose\n"
"string value selects a frame object's program (None: pages only); programs: a list of\n"
"(tag, header, topic, time_op, key_op, ops), ops one per Avro field in order:\n"
"(op, type, sources, literal, absent, arg, arg2) with op 'j' (JSON: sources a tuple of\n"
"(key index, type, scale), the first present and not null taken), 'c' (the literal\n"
"bytes), 'p' (call parameter arg), '+' (op arg's long value + parameter arg2); type one\n"
"of l i d D s b a A; literal the union branch written before a value; absent the bytes\n"
"of an absent or null value, or None to bail. schemas/program.py builds them.");

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "schemas._native.Encoder",
    .tp_basicsize = sizeof(Encoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Encoder_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Encoder_init,
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_methods = Encoder_methods,
};

static PyMethodDef native_functions[] = {
    {"decode_rows", decode_rows, METH_VARARGS, decode_rows_doc},
    {"scan_messages", scan_messages, METH_VARARGS, scan_messages_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "schemas._native",
    .m_doc = "Compiled hot paths of the Avro contract (optional; Python fallbacks exist).",
    .m_size = -1,
    .m_methods = native_functions,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&EncoderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    /* schemas/native.py refuses a module whose API_VERSION is not its own */
    if (PyModule_AddIntConstant(m, "API_VERSION", 3) < 0 ||
        PyModule_AddObjectRef(m, "Encoder", (PyObject *)&EncoderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
