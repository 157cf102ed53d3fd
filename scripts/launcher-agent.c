/* One CNI request to the node agent, as the Python plugin's agent/client.py sends it: the frame
 * {"env": {the CNI_* variables}, "stdin": the netconf, "started_ns"} behind a 4-byte big-endian length, and the
 * reply {"code", "stdout"} (or {"served": false, "reason"} when the agent declines unread).
 *
 * The rules are the Python client's (docs/security.md):
 * - the request is served in-process only when the agent never got it: nothing listens on the
 *   socket, not all of it could be written, or the agent declined it;
 * - the peer must be root (SO_PEERCRED), else the command fails and nothing is sent;
 * - once the request was written, a late, broken or oversized reply fails the command: the agent
 *   may still act on it, so it is never run a second time.
 * Everything else (no CNI semantics here) is the agent's or the Python plugin's to decide: input
 * this file does not read simply is handed to the Python plugin. */
#define _GNU_SOURCE /* struct ucred */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "launcher.h"

#define DEFAULT_AGENT_SOCKET "/var/run/meshcni/cni.sock"
#define DEFAULT_AGENT_TIMEOUT 120.0  /* agent/client.py's AGENT_TIMEOUT_SECONDS */
#define MAX_AGENT_TIMEOUT 220.0      /* and MAX_AGENT_TIMEOUT_SECONDS */
#define MAX_REPLY_FRAME (16 * 1024 * 1024)  /* agent/wire.py MAX_FRAME */
#define AGENT_ERROR_CODE 50
#define NOT_RUN_TWICE "it is not run a second time in this process; see the agent's log (meshcni install-cni)"

extern char **environ;

struct netconf_facts {
    struct buf socket_path, version;
    bool socket_given, socket_is_string, version_is_string, timeout_valid;
    double timeout;
};

/* A member that should be a string: decoded into `into` (the last one wins, as in Python's json);
 * *is_string says whether it was one. */
static bool string_member(struct json_cursor *value, struct buf *into, bool *is_string) {
    into->len = 0;
    *is_string = value->p < value->end && *value->p == '"';
    return *is_string ? json_string(value, into) : json_skip_value(value);
}

static bool netconf_member(void *context, const char *key, size_t key_len, struct json_cursor *value) {
    struct netconf_facts *facts = context;
    bool integral;
#define KEY_IS(name) (key_len == sizeof name - 1 && memcmp(key, name, key_len) == 0)
    if (KEY_IS("agent_socket")) {
        facts->socket_given = true;
        return string_member(value, &facts->socket_path, &facts->socket_is_string);
    }
    if (KEY_IS("cniVersion")) return string_member(value, &facts->version, &facts->version_is_string);
    if (KEY_IS("agent_timeout")) {
        facts->timeout_valid = json_number(value, &facts->timeout, &integral) && facts->timeout > 0 &&
                               facts->timeout <= MAX_AGENT_TIMEOUT;
        return facts->timeout_valid || json_skip_value(value);
    }
#undef KEY_IS
    return json_skip_value(value);
}

static int fail(const struct netconf_facts *facts, const char *msg, const char *details) {
    return write_cni_error(facts->version.data, facts->version.len, AGENT_ERROR_CODE, msg, details);
}

static bool put_env(struct buf *frame) {
    bool first = true;
    if (!buf_puts(frame, "\"env\": {")) return false;
    for (char **entry = environ; *entry != NULL; entry++) {
        const char *equals = strchr(*entry, '=');
        if (strncmp(*entry, "CNI_", 4) != 0 || equals == NULL) continue;
        size_t name_len = (size_t)(equals - *entry);
        bool seen = false; /* os.environ keeps the first of duplicate names */
        for (char **earlier = environ; earlier != entry && !seen; earlier++)
            seen = strncmp(*earlier, *entry, name_len + 1) == 0;
        if (seen) continue;
        if (!utf8_valid(*entry, strlen(*entry))) return false;
        if ((!first && !buf_puts(frame, ", ")) || !json_put_string(frame, *entry, name_len) ||
            !buf_puts(frame, ": ") || !json_put_string(frame, equals + 1, strlen(equals + 1)))
            return false;
        first = false;
    }
    return buf_puts(frame, "}");
}

/* The request frame, or false when it cannot be written as the agent would read it. "started_ns"
 * (CLOCK_MONOTONIC) lets the agent time the ADD from the plugin's start: this process is a few
 * hundred microseconds old here, well inside the histogram's smallest bucket. */
static bool request_frame(struct buf *frame, const struct buf *stdin_data) {
    struct timespec ts;
    char started[48];
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(started, sizeof started, ", \"started_ns\": %llu}",
             (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec);
    if (!buf_put(frame, "\0\0\0\0{", 5) || !put_env(frame) || !buf_puts(frame, ", \"stdin\": ") ||
        !json_put_string(frame, stdin_data->data ? stdin_data->data : "", stdin_data->len) || !buf_puts(frame, started))
        return false;
    uint32_t size = (uint32_t)(frame->len - 4);
    unsigned char header[4] = {size >> 24, size >> 16 & 0xFF, size >> 8 & 0xFF, size & 0xFF};
    memcpy(frame->data, header, 4);
    return true;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Exactly len bytes before the deadline: 1 read, 0 the connection ended, -1 error, -2 timeout. */
static int receive(int fd, char *into, size_t len, double deadline) {
    while (len > 0) {
        double left = deadline - now();
        if (left <= 0) return -2;
        struct pollfd pfd = {fd, POLLIN, 0};
        int ready = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (ready < 0 && errno != EINTR) return -1;
        if (ready <= 0) continue;
        ssize_t got = recv(fd, into, len, MSG_DONTWAIT);
        if (got == 0) return 0;
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return -1;
        }
        into += got, len -= (size_t)got;
    }
    return 1;
}

struct reply {
    struct buf stdout_text, reason;
    bool declined, has_code, has_stdout, has_reason;
    double code;
};

static bool reply_member(void *context, const char *key, size_t key_len, struct json_cursor *value) {
    struct reply *reply = context;
    bool integral;
#define KEY_IS(name) (key_len == sizeof name - 1 && memcmp(key, name, key_len) == 0)
    if (KEY_IS("served")) {
        reply->declined = json_literal(value, "false");
        return reply->declined || json_skip_value(value);
    }
    if (KEY_IS("reason")) return string_member(value, &reply->reason, &reply->has_reason);
    if (KEY_IS("code")) {
        reply->has_code = json_number(value, &reply->code, &integral) && integral && reply->code >= 0 && reply->code <= 255;
        return reply->has_code || json_skip_value(value);
    }
    if (KEY_IS("stdout")) return string_member(value, &reply->stdout_text, &reply->has_stdout);
#undef KEY_IS
    return json_skip_value(value);
}

static bool write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data += n, len -= (size_t)n;
    }
    return true;
}

/* Send the frame and print the agent's answer; the route says whether Python must serve it. */
static enum agent_route exchange(int fd, const struct netconf_facts *facts, const struct buf *frame, int *exit_code) {
    const char *path = facts->socket_path.data;
    char msg[512], details[512];
    struct ucred peer;
    socklen_t peer_len = sizeof peer;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) != 0 || peer.uid != 0) {
        snprintf(msg, sizeof msg, "refusing the node agent at %s: it is served by uid %ld (pid %ld), not root", path,
                 peer_len == sizeof peer ? (long)peer.uid : -1L, peer_len == sizeof peer ? (long)peer.pid : -1L);
        *exit_code = fail(facts, msg, "the real agent runs as root; a process of another user listening on that path "
                          "may be impersonating it, so nothing was sent to it and the request is not served "
                          "in-process either");
        return AGENT_ANSWERED;
    }
    for (size_t sent = 0; sent < frame->len;) {
        ssize_t n = send(fd, frame->data + sent, frame->len - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { /* not all of it was written: the agent cannot act on half a frame */
            fprintf(stderr, "istio-cni: node agent at %s took no request (%s); serving in-process\n", path,
                    strerror(errno));
            return SERVE_IN_PROCESS;
        }
        sent += (size_t)n;
    }
    double deadline = now() + facts->timeout;
    unsigned char header[4];
    struct buf payload = {.limit = MAX_REPLY_FRAME};
    struct reply reply = {.stdout_text = {.limit = MAX_REPLY_FRAME}, .reason = {.limit = 4096}};
    enum agent_route route = AGENT_ANSWERED;
    int got = receive(fd, (char *)header, sizeof header, deadline);
    uint32_t size = (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 | (uint32_t)header[2] << 8 | header[3];
    if (got == 1 && size > MAX_REPLY_FRAME) {
        snprintf(msg, sizeof msg, "node agent at %s failed after receiving the request: frame of %lu bytes is "
                 "larger than %d", path, (unsigned long)size, MAX_REPLY_FRAME);
        *exit_code = fail(facts, msg, NOT_RUN_TWICE);
        goto done;
    }
    if (got == 1) {
        payload.data = malloc(size ? size : 1);
        got = payload.data ? receive(fd, payload.data, size, deadline) : -1;
        payload.len = size;
    }
    if (got == -2) {
        snprintf(msg, sizeof msg, "node agent at %s did not answer within %gs", path, facts->timeout);
        snprintf(details, sizeof details, "the agent has the request and may still act on it, so %s", NOT_RUN_TWICE);
        *exit_code = fail(facts, msg, details);
    } else if (got != 1) {
        snprintf(msg, sizeof msg, "node agent at %s failed after receiving the request: %s", path,
                 got == 0 ? "connection closed mid-frame" : strerror(errno));
        *exit_code = fail(facts, msg, NOT_RUN_TWICE);
    } else if (!utf8_valid(payload.data, payload.len) ||
               !json_object_members(payload.data, payload.len, reply_member, &reply)) {
        snprintf(msg, sizeof msg, "node agent at %s failed after receiving the request: its reply is not a JSON object",
                 path);
        *exit_code = fail(facts, msg, NOT_RUN_TWICE);
    } else if (reply.declined) { /* declined unread: it will not act on it */
        fprintf(stderr, "istio-cni: node agent at %s declined the request (%.*s); serving in-process\n", path,
                (int)reply.reason.len, reply.reason.data ? reply.reason.data : "");
        route = SERVE_IN_PROCESS;
    } else if (!reply.has_code || !reply.has_stdout) {
        snprintf(msg, sizeof msg, "node agent at %s sent a malformed reply", path);
        *exit_code = fail(facts, msg, NOT_RUN_TWICE);
    } else {
        *exit_code = write_all(STDOUT_FILENO, reply.stdout_text.data ? reply.stdout_text.data : "",
                               reply.stdout_text.len) ? (int)reply.code : 1;
    }
done:
    buf_free(&payload);
    buf_free(&reply.stdout_text);
    buf_free(&reply.reason);
    return route;
}

enum agent_route ask_agent(const struct buf *stdin_data, int *exit_code) {
    struct netconf_facts facts = {.socket_path = {.limit = 4096}, .version = {.limit = 256}, .timeout_valid = true,
                                  .timeout = DEFAULT_AGENT_TIMEOUT, .socket_is_string = true, .version_is_string = true};
    struct buf frame = {.limit = 4 + MAX_REQUEST_FRAME};
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    enum agent_route route = PYTHON_DECIDES;
    int fd = -1;
    if (!utf8_valid(stdin_data->data, stdin_data->len) ||
        !json_object_members(stdin_data->data, stdin_data->len, netconf_member, &facts) || !facts.timeout_valid ||
        !facts.version_is_string)
        goto done; /* the Python plugin reports what is wrong */
    if (!facts.socket_is_string) {
        route = SERVE_IN_PROCESS;
        goto done;
    }
    if (!facts.socket_given && !buf_puts(&facts.socket_path, DEFAULT_AGENT_SOCKET)) goto done;
    if (!buf_put(&facts.socket_path, "", 1)) goto done; /* NUL-terminated from here on */
    route = SERVE_IN_PROCESS;
    size_t path_len = facts.socket_path.len - 1;
    if (path_len == 0 || memchr(facts.socket_path.data, '\0', path_len) || path_len >= sizeof address.sun_path)
        goto done; /* no usable agent socket: the Python plugin does not ask one either */
    route = PYTHON_DECIDES;
    if (!request_frame(&frame, stdin_data)) goto done; /* over the agent's limit, or an environment not UTF-8 */
    route = SERVE_IN_PROCESS;
    memcpy(address.sun_path, facts.socket_path.data, path_len + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) goto done;
    struct timeval send_timeout = {(time_t)facts.timeout, (suseconds_t)((facts.timeout - (time_t)facts.timeout) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout); /* bounds connect() too */
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) goto done; /* nobody listening */
    route = exchange(fd, &facts, &frame, exit_code);
done:
    if (fd >= 0) close(fd);
    buf_free(&frame);
    buf_free(&facts.socket_path);
    buf_free(&facts.version);
    return route;
}
