/* The self-contained istio-cni's C launcher: shared declarations (see plugin-launcher.c). */
#ifndef MESHCNI_LAUNCHER_H
#define MESHCNI_LAUNCHER_H

#include <stdbool.h>
#include <stddef.h>

/* A growable byte buffer that refuses to grow past `limit` bytes. */
struct buf {
    char *data;
    size_t len, cap, limit;
};
bool buf_put(struct buf *b, const void *data, size_t len);
bool buf_puts(struct buf *b, const char *text);
void buf_free(struct buf *b);

/* launcher-json.c: the little JSON the launcher reads and writes. */
size_t utf8_sequence(const unsigned char *p, size_t available);
bool utf8_valid(const char *text, size_t len);
struct json_cursor {
    const char *p, *end;
};
/* Calls `member` for each member of the top-level object in text; `member` must consume the
 * value at the cursor (json_string, json_number, json_literal or json_skip_value). */
typedef bool (*json_member_fn)(void *context, const char *key, size_t key_len, struct json_cursor *value);
bool json_object_members(const char *text, size_t len, json_member_fn member, void *context);
bool json_string(struct json_cursor *c, struct buf *out); /* out may be NULL: skip it */
bool json_number(struct json_cursor *c, double *value, bool *integral);
bool json_literal(struct json_cursor *c, const char *literal);
bool json_skip_value(struct json_cursor *c);
bool json_put_string(struct buf *out, const char *text, size_t len);
int write_cni_error(const char *version, size_t version_len, int code, const char *msg, const char *details);

/* launcher-agent.c: one request to the node agent. */
enum agent_route {
    AGENT_ANSWERED,  /* stdout is written (the agent's reply, or our error): exit with *exit_code */
    SERVE_IN_PROCESS,  /* the agent never got the request (none listening, or it declined it) */
    PYTHON_DECIDES,  /* input the launcher does not handle: the Python plugin's full path runs */
};
#define MAX_REQUEST_FRAME (1024 * 1024) /* what the agent reads (agent/server.py Limits) */
enum agent_route ask_agent(const struct buf *stdin_data, int *exit_code);

#endif
