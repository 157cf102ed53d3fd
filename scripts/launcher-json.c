/* The little JSON the launcher needs: the members of one top-level object (the netconf's
 * agent_socket/agent_timeout/cniVersion, the agent's reply), string escaping for the request, and
 * nothing else. Strict where a difference from Python's json would matter (string escapes,
 * UTF-8, control characters); any input it does not read is handed to the Python plugin. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher.h"

#define MAX_DEPTH 64 /* nesting skipped inside a member's value */

bool buf_put(struct buf *b, const void *data, size_t len) {
    if (len > b->limit - b->len) return false;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len) cap *= 2;
        if (cap > b->limit) cap = b->limit;
        char *grown = realloc(b->data, cap);
        if (grown == NULL) return false;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return true;
}

bool buf_puts(struct buf *b, const char *text) { return buf_put(b, text, strlen(text)); }

void buf_free(struct buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* The length of the well-formed UTF-8 sequence at p (as Python's strict decoder accepts it:
 * no overlong forms, no surrogates, nothing past U+10FFFF), or 0. */
size_t utf8_sequence(const unsigned char *p, size_t available) {
    unsigned char lead = p[0], low = 0x80, high = 0xBF;
    size_t n;
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) n = 2;
    else if (lead >= 0xE0 && lead <= 0xEF) n = 3, low = lead == 0xE0 ? 0xA0 : 0x80, high = lead == 0xED ? 0x9F : 0xBF;
    else if (lead >= 0xF0 && lead <= 0xF4) n = 4, low = lead == 0xF0 ? 0x90 : 0x80, high = lead == 0xF4 ? 0x8F : 0xBF;
    else return 0;
    if (available < n || p[1] < low || p[1] > high) return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}

bool utf8_valid(const char *text, size_t len) {
    const unsigned char *p = (const unsigned char *)text, *end = p + len;
    while (p < end) {
        size_t n = utf8_sequence(p, (size_t)(end - p));
        if (n == 0) return false;
        p += n;
    }
    return true;
}

static void skip_space(struct json_cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int hex4(const char *p) {
    int value = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        int digit = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (digit < 0) return -1;
        value = value * 16 + digit;
    }
    return value;
}

static bool put_code_point(struct buf *out, uint32_t cp) {
    unsigned char bytes[4];
    size_t n;
    if (cp < 0x80) bytes[0] = (unsigned char)cp, n = 1;
    else if (cp < 0x800) bytes[0] = 0xC0 | cp >> 6, bytes[1] = 0x80 | (cp & 0x3F), n = 2;
    else if (cp < 0x10000) bytes[0] = 0xE0 | cp >> 12, bytes[1] = 0x80 | (cp >> 6 & 0x3F), bytes[2] = 0x80 | (cp & 0x3F), n = 3;
    else bytes[0] = 0xF0 | cp >> 18, bytes[1] = 0x80 | (cp >> 12 & 0x3F), bytes[2] = 0x80 | (cp >> 6 & 0x3F),
         bytes[3] = 0x80 | (cp & 0x3F), n = 4;
    return out == NULL || buf_put(out, bytes, n);
}

/* A string at the cursor, decoded into out (UTF-8). A lone surrogate escape is refused: it has
 * no UTF-8 form. Raw bytes are copied; the caller checked the whole text is UTF-8. */
bool json_string(struct json_cursor *c, struct buf *out) {
    if (c->p >= c->end || *c->p != '"') return false;
    c->p++;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p++;
        if (ch == '"') return true;
        if (ch < 0x20) return false;
        if (ch != '\\') {
            if (out != NULL && !buf_put(out, &ch, 1)) return false;
            continue;
        }
        if (c->p >= c->end) return false;
        char escape = *c->p++, simple = 0;
        switch (escape) {
        case '"': case '\\': case '/': simple = escape; break;
        case 'b': simple = '\b'; break;
        case 'f': simple = '\f'; break;
        case 'n': simple = '\n'; break;
        case 'r': simple = '\r'; break;
        case 't': simple = '\t'; break;
        case 'u': break;
        default: return false;
        }
        if (simple) {
            if (out != NULL && !buf_put(out, &simple, 1)) return false;
            continue;
        }
        if (c->end - c->p < 4) return false;
        int unit = hex4(c->p);
        c->p += 4;
        if (unit < 0 || (unit >= 0xDC00 && unit <= 0xDFFF)) return false;
        uint32_t cp = (uint32_t)unit;
        if (unit >= 0xD800 && unit <= 0xDBFF) {
            int low = c->end - c->p >= 6 && c->p[0] == '\\' && c->p[1] == 'u' ? hex4(c->p + 2) : -1;
            if (low < 0xDC00 || low > 0xDFFF) return false;
            c->p += 6;
            cp = 0x10000 + (((uint32_t)unit - 0xD800) << 10) + ((uint32_t)low - 0xDC00);
        }
        if (!put_code_point(out, cp)) return false;
    }
    return false;
}

/* A number as JSON writes it: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; its value in *value
 * unless value is NULL (then it is only skipped). */
bool json_number(struct json_cursor *c, double *value, bool *integral) {
    const char *start = c->p, *p = c->p, *end = c->end;
    *integral = true;
    if (p < end && *p == '-') p++;
    if (p >= end || *p < '0' || *p > '9') return false;
    if (*p == '0') p++;
    else while (p < end && *p >= '0' && *p <= '9') p++;
    if (p < end && *p == '.') {
        *integral = false;
        if (++p >= end || *p < '0' || *p > '9') return false;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *integral = false;
        if (++p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return false;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (value != NULL) { /* a skipped number may have any length */
        char text[64];
        if ((size_t)(p - start) >= sizeof text) return false;
        memcpy(text, start, (size_t)(p - start));
        text[p - start] = '\0';
        *value = strtod(text, NULL);
    }
    c->p = p;
    return true;
}

bool json_literal(struct json_cursor *c, const char *literal) {
    size_t n = strlen(literal);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, literal, n) != 0) return false;
    c->p += n;
    return true;
}

static bool skip_nested(struct json_cursor *c, int depth);

static bool skip_members(struct json_cursor *c, char close, int depth) {
    c->p++;
    skip_space(c);
    if (c->p < c->end && *c->p == close) return c->p++, true;
    for (;;) {
        if (close == '}') {
            skip_space(c);
            if (!json_string(c, NULL)) return false;
            skip_space(c);
            if (c->p >= c->end || *c->p++ != ':') return false;
        }
        skip_space(c);
        if (!skip_nested(c, depth + 1)) return false;
        skip_space(c);
        if (c->p >= c->end) return false;
        char next = *c->p++;
        if (next == close) return true;
        if (next != ',') return false;
    }
}

static bool skip_nested(struct json_cursor *c, int depth) {
    bool integral;
    if (depth > MAX_DEPTH || c->p >= c->end) return false;
    switch (*c->p) {
    case '"': return json_string(c, NULL);
    case '{': return skip_members(c, '}', depth);
    case '[': return skip_members(c, ']', depth);
    case 't': return json_literal(c, "true");
    case 'f': return json_literal(c, "false");
    case 'n': return json_literal(c, "null");
    case 'N': return json_literal(c, "NaN");
    case 'I': return json_literal(c, "Infinity");
    case '-': if (json_literal(c, "-Infinity")) return true; /* fall through */
    default: return json_number(c, NULL, &integral);
    }
}

bool json_skip_value(struct json_cursor *c) { return skip_nested(c, 0); }

bool json_object_members(const char *text, size_t len, json_member_fn member, void *context) {
    struct json_cursor c = {text, text + len};
    struct buf key = {.limit = len};
    bool ok = false;
    skip_space(&c);
    if (c.p >= c.end || *c.p++ != '{') goto done;
    skip_space(&c);
    if (c.p < c.end && *c.p == '}') {
        c.p++;
    } else {
        for (;;) {
            key.len = 0;
            skip_space(&c);
            if (!json_string(&c, &key)) goto done;
            skip_space(&c);
            if (c.p >= c.end || *c.p++ != ':') goto done;
            skip_space(&c);
            if (!member(context, key.data ? key.data : "", key.len, &c)) goto done;
            skip_space(&c);
            if (c.p >= c.end) goto done;
            char next = *c.p++;
            if (next == '}') break;
            if (next != ',') goto done;
        }
    }
    skip_space(&c);
    ok = c.p == c.end;
done:
    buf_free(&key);
    return ok;
}

/* A JSON string of UTF-8 text: quotes, backslashes and control characters escaped. */
bool json_put_string(struct buf *out, const char *text, size_t len) {
    if (!buf_put(out, "\"", 1)) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        char escaped[8];
        if (ch == '"' || ch == '\\') {
            escaped[0] = '\\', escaped[1] = (char)ch;
            if (!buf_put(out, escaped, 2)) return false;
        } else if (ch < 0x20) {
            snprintf(escaped, sizeof escaped, "\\u%04x", ch);
            if (!buf_put(out, escaped, 6)) return false;
        } else if (!buf_put(out, &ch, 1)) {
            return false;
        }
    }
    return buf_put(out, "\"", 1);
}

/* The CNI error object the Python plugin prints (protocol.error_object) and its stderr lines;
 * returns the exit status, 1. */
int write_cni_error(const char *version, size_t version_len, int code, const char *msg, const char *details) {
    struct buf out = {.limit = 64 * 1024};
    char number[16];
    fprintf(stderr, "istio-cni: cni: %s\n", msg);
    if (*details) fprintf(stderr, "  %s\n", details);
    snprintf(number, sizeof number, "%d", code);
    bool ok = buf_puts(&out, "{\"cniVersion\": ") &&
              (version_len ? json_put_string(&out, version, version_len) : buf_puts(&out, "\"1.1.0\"")) &&
              buf_puts(&out, ", \"code\": ") && buf_puts(&out, number) && buf_puts(&out, ", \"msg\": ") &&
              json_put_string(&out, msg, strlen(msg)) &&
              (!*details || (buf_puts(&out, ", \"details\": ") && json_put_string(&out, details, strlen(details)))) &&
              buf_puts(&out, "}\n");
    if (ok) {
        fwrite(out.data, 1, out.len, stdout);
        fflush(stdout);
    }
    buf_free(&out);
    return 1;
}
