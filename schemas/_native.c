/*
 * schemas._native: the compiled hot paths of the Avro contract.
 *
 * FrameEncoder turns one Massive WebSocket frame (a JSON array of T and Q events) into
 * framed Avro records in one pass over the frame's bytes, without building a Python dict,
 * str or float per field. It is an accelerator, never the definition: the definition is
 * producer.mapping + schemas.codec (and producer.liveencode, which gives the same bytes).
 * It takes only the common, well-formed shape; for anything else (a status message, a
 * bar, an escape in a string, a non-ASCII byte, an unexpected type, a number out of
 * range, a duplicate key, malformed JSON) it returns None and the caller hands the whole
 * frame to the Python path, which encodes it identically or rejects it with a clear
 * error. Python checks it against the codec at start (producer.liveencode.NativeFrames)
 * and the tests fuzz it against the Python path byte for byte.
 *
 * Field order follows schemas/trade.avsc and schemas/quote.avsc.
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
#define MAX_TEXT 256      /* symbols and trade ids longer than this bail */
#define NS_PER_MS 1000000LL
#define MAX_MS (INT64_MAX / NS_PER_MS)

/* ---- JSON values of the fields we read ------------------------------------------- */

enum { V_ABSENT = 0, V_NULL, V_INT, V_FLOAT, V_STR, V_INTS, V_OTHER };

typedef struct {
    int type;
    int64_t i;          /* V_INT */
    double f;           /* V_FLOAT (V_INT keeps its exact value in i) */
    const char *s;      /* V_STR: ASCII, no escapes */
    Py_ssize_t n;       /* V_STR length, V_INTS count */
    int32_t items[MAX_ITEMS];
} Value;

/* The keys of T and Q events we read; anything else is skipped. */
enum { K_EV, K_SYM, K_T, K_P, K_S, K_X, K_I, K_Q, K_Z, K_C, K_TRFI, K_TRFT, K_DS,
       K_BP, K_BS, K_AP, K_AS, K_BX, K_AX, K_COUNT };

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

/* A string without escapes and with printable ASCII only; c->p is at the opening quote. */
static int parse_string(Cursor *c, const char **out, Py_ssize_t *len) {
    const char *start = ++c->p;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            *out = start;
            *len = c->p - start;
            c->p++;
            return 0;
        }
        if (ch == '\\' || ch < 0x20 || ch >= 0x80)
            return -1;
        c->p++;
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
    if (ch == '"') {
        const char *s;
        Py_ssize_t n;
        return parse_string(c, &s, &n);
    }
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

/* The value of a field we read: null, an int, a float, a plain string, an array of
 * int32 (anything else is V_OTHER, after validating and skipping it). */
static int parse_value(Cursor *c, Value *v) {
    if (c->p >= c->end)
        return -1;
    char ch = *c->p;
    if (ch == '"') {
        v->type = V_STR;
        if (parse_string(c, &v->s, &v->n) == 0)
            return 0;
        /* an escape or non-ASCII text: valid JSON perhaps, but not ours to decode */
        return -1;
    }
    if (ch == '-' || (ch >= '0' && ch <= '9'))
        return parse_number(c, v);
    if (ch == 'n') {
        v->type = V_NULL;
        return literal(c, "null", 4);
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

static int key_of(const char *k, Py_ssize_t n) {
    switch (n) {
    case 1:
        switch (k[0]) {
        case 't': return K_T;
        case 'p': return K_P;
        case 's': return K_S;
        case 'x': return K_X;
        case 'i': return K_I;
        case 'q': return K_Q;
        case 'z': return K_Z;
        case 'c': return K_C;
        }
        return -1;
    case 2:
        if (k[0] == 'e' && k[1] == 'v') return K_EV;
        if (k[0] == 'd' && k[1] == 's') return K_DS;
        if (k[0] == 'b' && k[1] == 'p') return K_BP;
        if (k[0] == 'b' && k[1] == 's') return K_BS;
        if (k[0] == 'a' && k[1] == 'p') return K_AP;
        if (k[0] == 'a' && k[1] == 's') return K_AS;
        if (k[0] == 'b' && k[1] == 'x') return K_BX;
        if (k[0] == 'a' && k[1] == 'x') return K_AX;
        return -1;
    case 3:
        return memcmp(k, "sym", 3) == 0 ? K_SYM : -1;
    case 4:
        if (memcmp(k, "trfi", 4) == 0) return K_TRFI;
        if (memcmp(k, "trft", 4) == 0) return K_TRFT;
        return -1;
    }
    return -1;
}

/* ---- Avro encoding --------------------------------------------------------------- */

typedef struct {
    char buf[2048];
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

/* ["null", "int"] from an optional int32 field; -1 when it is not one */
static inline int put_opt_int(Out *o, const Value *v) {
    if (is_absent(v)) {
        put_byte(o, 0);
        return 0;
    }
    if (!is_int32(v))
        return -1;
    put_byte(o, 2);
    put_long(o, v->i);
    return 0;
}

static inline int is_ms(const Value *v) {
    return v->type == V_INT && v->i <= MAX_MS && v->i >= -MAX_MS;
}

static inline int is_text(const Value *v) {
    return v->type == V_STR && v->n > 0 && v->n <= MAX_TEXT;
}

/* trade.avsc: symbol, sip_timestamp_ns, participant_timestamp_ns, trf_timestamp_ns,
 * price, size, exchange, tape, conditions, id, sequence_number, trf_id, correction,
 * source, received_ns */
static int encode_trade(Out *o, const Value *f, const char *head, Py_ssize_t head_n,
                        const char *recv, Py_ssize_t recv_n) {
    const Value *sym = &f[K_SYM], *t = &f[K_T], *p = &f[K_P], *s = &f[K_S], *x = &f[K_X],
                *i = &f[K_I], *q = &f[K_Q], *c = &f[K_C], *trft = &f[K_TRFT];
    double size;
    if (!is_text(sym) || !is_ms(t) || !is_number(p) || !is_int32(x) || !is_text(i) ||
        q->type != V_INT)
        return -1;
    if (is_absent(&f[K_DS])) {  /* a fractional size in "ds" replaces the whole "s" */
        if (!is_number(s))
            return -1;
        size = number(s);
    } else if (decimal(&f[K_DS], &size) < 0) {
        return -1;
    }
    if (!(is_absent(c) || c->type == V_INTS) || !(is_absent(trft) || is_ms(trft)))
        return -1;
    o->n = 0;
    put_bytes(o, head, head_n);
    put_text(o, sym->s, sym->n);
    put_long(o, t->i * NS_PER_MS);
    put_byte(o, 0);
    if (is_absent(trft)) {
        put_byte(o, 0);
    } else {
        put_byte(o, 2);
        put_long(o, trft->i * NS_PER_MS);
    }
    put_double(o, number(p));
    put_double(o, size);
    put_long(o, x->i);
    if (put_opt_int(o, &f[K_Z]) < 0)
        return -1;
    put_ints(o, c->items, c->type == V_INTS ? c->n : 0);
    put_text(o, i->s, i->n);
    put_long(o, q->i);
    if (put_opt_int(o, &f[K_TRFI]) < 0)
        return -1;
    put_byte(o, 0);  /* correction: null */
    put_byte(o, 0);  /* source: live */
    put_bytes(o, recv, recv_n);
    return 0;
}

/* quote.avsc: symbol, sip_timestamp_ns, participant_timestamp_ns, trf_timestamp_ns,
 * bid_price, bid_size, bid_exchange, ask_price, ask_size, ask_exchange, conditions,
 * indicators, sequence_number, tape, source, received_ns */
static int encode_quote(Out *o, const Value *f, const char *head, Py_ssize_t head_n,
                        const char *recv, Py_ssize_t recv_n) {
    const Value *sym = &f[K_SYM], *t = &f[K_T], *bp = &f[K_BP], *bs = &f[K_BS],
                *ap = &f[K_AP], *as = &f[K_AS], *q = &f[K_Q], *c = &f[K_C], *ind = &f[K_I];
    if (!is_text(sym) || !is_ms(t) || !is_number(bp) || !is_number(bs) ||
        !is_number(ap) || !is_number(as) || q->type != V_INT)
        return -1;
    if (!(is_absent(c) || is_int32(c)) || !(is_absent(ind) || ind->type == V_INTS))
        return -1;
    o->n = 0;
    put_bytes(o, head, head_n);
    put_text(o, sym->s, sym->n);
    put_long(o, t->i * NS_PER_MS);
    put_byte(o, 0);
    put_byte(o, 0);
    put_double(o, number(bp));
    put_double(o, number(bs));
    if (put_opt_int(o, &f[K_BX]) < 0)
        return -1;
    put_double(o, number(ap));
    put_double(o, number(as));
    if (put_opt_int(o, &f[K_AX]) < 0)
        return -1;
    if (is_absent(c)) {
        put_byte(o, 0);
    } else {
        int32_t one = (int32_t)c->i;
        put_ints(o, &one, 1);
    }
    put_ints(o, ind->items, ind->type == V_INTS ? ind->n : 0);
    put_long(o, q->i);
    if (put_opt_int(o, &f[K_Z]) < 0)
        return -1;
    put_byte(o, 0);  /* source: live */
    put_bytes(o, recv, recv_n);
    return 0;
}

/* ---- decode_rows: Avro bodies -> column buffers ------------------------------------ */

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

static PyMethodDef native_functions[] = {
    {"decode_rows", decode_rows, METH_VARARGS, decode_rows_doc},
    {"scan_messages", scan_messages, METH_VARARGS, scan_messages_doc},
    {NULL, NULL, 0, NULL},
};

/* ---- FrameEncoder ---------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *trade_header;  /* bytes: the codec's framing prefix of a trade record */
    PyObject *quote_header;
    PyObject *trade_topic;   /* whatever the caller wants back with each record */
    PyObject *quote_topic;
} FrameEncoder;

static int FrameEncoder_init(FrameEncoder *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"trade_header", "quote_header", "trade_topic", "quote_topic",
                             NULL};
    PyObject *th, *qh, *tt, *qt;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "SSOO", kwlist, &th, &qh, &tt, &qt))
        return -1;
    if (PyBytes_GET_SIZE(th) > 64 || PyBytes_GET_SIZE(qh) > 64) {
        PyErr_SetString(PyExc_ValueError, "record headers longer than 64 bytes");
        return -1;
    }
    Py_INCREF(th);
    Py_INCREF(qh);
    Py_INCREF(tt);
    Py_INCREF(qt);
    Py_XSETREF(self->trade_header, th);
    Py_XSETREF(self->quote_header, qh);
    Py_XSETREF(self->trade_topic, tt);
    Py_XSETREF(self->quote_topic, qt);
    return 0;
}

static void FrameEncoder_dealloc(FrameEncoder *self) {
    Py_XDECREF(self->trade_header);
    Py_XDECREF(self->quote_header);
    Py_XDECREF(self->trade_topic);
    Py_XDECREF(self->quote_topic);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* One object of the frame: its fields in f (c->p at '{'). Returns 'T', 'Q' or -1. */
static int parse_event(Cursor *c, Value *f) {
    unsigned seen = 0;
    for (int k = 0; k < K_COUNT; k++)
        f[k].type = V_ABSENT;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}')
        return -1;
    for (;;) {
        const char *k;
        Py_ssize_t kn;
        if (parse_key(c, &k, &kn) < 0)
            return -1;
        int key = key_of(k, kn);
        if (key < 0) {
            if (skip_value(c, 1) < 0)
                return -1;
        } else {
            if (seen & (1u << key))
                return -1;  /* a duplicate key: leave "last one wins" to the Python path */
            seen |= 1u << key;
            if (parse_value(c, &f[key]) < 0)
                return -1;
        }
        int more = next_item(c, '}');
        if (more < 0)
            return -1;
        if (more == 0)
            break;
    }
    const Value *ev = &f[K_EV];
    if (ev->type != V_STR || ev->n != 1 || (ev->s[0] != 'T' && ev->s[0] != 'Q'))
        return -1;
    return ev->s[0];
}

/* The Kafka key of an event: its symbol as bucket names spell it, '/' -> '.'; the rule
 * of schemas/keys.py (symbol_key), which NativeFrames checks this against at start. */
static PyObject *symbol_key(const Value *sym) {
    if (memchr(sym->s, '/', (size_t)sym->n) == NULL)
        return PyUnicode_FromStringAndSize(sym->s, sym->n);
    char key[MAX_TEXT];
    for (Py_ssize_t j = 0; j < sym->n; j++)
        key[j] = sym->s[j] == '/' ? '.' : sym->s[j];
    return PyUnicode_FromStringAndSize(key, sym->n);
}

PyDoc_STRVAR(encode_doc,
"encode(frame, received_ns) -> (records, trades, quotes, last_event_ns) or None\n\n"
"records: a list of (topic, value, key) in frame order, topic being trade_topic or\n"
"quote_topic, value the framed Avro record and key its symbol as buckets spell it\n"
"('/' -> '.'). None: the frame is not a well-formed array of T and Q events only; use\n"
"the Python path for the whole frame.");

static PyObject *FrameEncoder_encode(FrameEncoder *self, PyObject *args) {
    Py_buffer frame;
    long long received_ns;
    if (self->trade_header == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FrameEncoder.__init__ was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*L", &frame, &received_ns))
        return NULL;
    Cursor cur = {(const char *)frame.buf, (const char *)frame.buf + frame.len};
    Cursor *c = &cur;
    Value *fields = PyMem_Malloc(sizeof(Value) * K_COUNT);
    Out *out = PyMem_Malloc(sizeof(Out));
    PyObject *records = NULL, *result = NULL;
    if (fields == NULL || out == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    char recv[11];
    Py_ssize_t recv_n;
    {
        Out r;
        r.n = 0;
        put_byte(&r, 2);
        put_long(&r, received_ns);
        memcpy(recv, r.buf, (size_t)r.n);
        recv_n = r.n;
    }
    const char *th = PyBytes_AS_STRING(self->trade_header);
    Py_ssize_t th_n = PyBytes_GET_SIZE(self->trade_header);
    const char *qh = PyBytes_AS_STRING(self->quote_header);
    Py_ssize_t qh_n = PyBytes_GET_SIZE(self->quote_header);
    long trades = 0, quotes = 0;
    long long last_ns = 0;

    records = PyList_New(0);
    if (records == NULL)
        goto done;
    skip_ws(c);
    if (c->p >= c->end || *c->p != '[')
        goto fallback;
    c->p++;
    skip_ws(c);
    for (;;) {
        if (c->p >= c->end || *c->p != '{')
            goto fallback;
        int ev = parse_event(c, fields);
        if (ev < 0)
            goto fallback;
        PyObject *topic;
        if (ev == 'T') {
            if (encode_trade(out, fields, th, th_n, recv, recv_n) < 0)
                goto fallback;
            topic = self->trade_topic;
            trades++;
        } else {
            if (encode_quote(out, fields, qh, qh_n, recv, recv_n) < 0)
                goto fallback;
            topic = self->quote_topic;
            quotes++;
        }
        last_ns = fields[K_T].i * NS_PER_MS;
        PyObject *value = PyBytes_FromStringAndSize(out->buf, out->n);
        PyObject *key = value ? symbol_key(&fields[K_SYM]) : NULL;
        PyObject *item = key ? PyTuple_New(3) : NULL;
        if (item == NULL) {
            Py_XDECREF(value);
            Py_XDECREF(key);
            goto done;
        }
        Py_INCREF(topic);
        PyTuple_SET_ITEM(item, 0, topic);
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
    result = Py_BuildValue("(OllL)", records, trades, quotes, last_ns);
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(records);
    PyMem_Free(fields);
    PyMem_Free(out);
    PyBuffer_Release(&frame);
    return result;
}

static PyMethodDef FrameEncoder_methods[] = {
    {"encode", (PyCFunction)FrameEncoder_encode, METH_VARARGS, encode_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(FrameEncoder_doc,
"FrameEncoder(trade_header, quote_header, trade_topic, quote_topic)\n\n"
"Massive WS frames of T/Q events -> framed Avro records, or None for the Python path.");

static PyTypeObject FrameEncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "schemas._native.FrameEncoder",
    .tp_basicsize = sizeof(FrameEncoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = FrameEncoder_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FrameEncoder_init,
    .tp_dealloc = (destructor)FrameEncoder_dealloc,
    .tp_methods = FrameEncoder_methods,
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "schemas._native",
    .m_doc = "Compiled hot paths of the Avro contract (optional; Python fallbacks exist).",
    .m_size = -1,
    .m_methods = native_functions,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&FrameEncoderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    /* schemas/native.py refuses a module whose API_VERSION is not its own */
    if (PyModule_AddIntConstant(m, "API_VERSION", 2) < 0 ||
        PyModule_AddObjectRef(m, "FrameEncoder", (PyObject *)&FrameEncoderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
