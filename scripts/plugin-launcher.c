/* The istio-cni executable of the self-contained plugin (scripts/build-plugin-bundle.sh).
 *
 * ADD, DEL and CHECK are first sent to the node agent (launcher-agent.c): a pod the agent serves
 * costs one socket round trip and this small program, which does not even load libpython (the
 * dynamic loader's relocations of it alone cost several milliseconds). The interpreter is
 * started - istio-cni-python beside this file (embedded-python.c) - only when no agent listens or
 * it declined the request (then the plugin serves it in-process: run_in_process), or for any
 * other command or input this program does not read (then the Python plugin's whole path runs,
 * agent client included). Either way it reads the stdin already read here, from a memory file
 * put in its place.
 */
#define _GNU_SOURCE /* memfd_create */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "launcher.h"

static const char RUN[] = "run", RUN_IN_PROCESS[] = "run_in_process";

/* stdin, up to `limit` bytes: 1 all of it, 0 there is more, -1 it could not be read. */
static int read_stdin(struct buf *input) {
    char chunk[65536];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
        if (n == 0) return 1;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (!buf_put(input, chunk, (size_t)n)) {
            input->limit = input->len + (size_t)n;
            return buf_put(input, chunk, (size_t)n) ? 0 : -1;
        }
    }
}

/* Put what was read (and, when it was more than the launcher keeps, the rest of stdin) where the
 * interpreter reads stdin: a memory file on descriptor 0. */
static bool hand_stdin_over(const struct buf *input, bool complete) {
    char chunk[65536];
    int fd = memfd_create("istio-cni-stdin", MFD_CLOEXEC);
    bool ok = fd >= 0 && (input->len == 0 || write(fd, input->data, input->len) == (ssize_t)input->len);
    while (ok && !complete) {
        ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        complete = n == 0;
        ok = n >= 0 && (n == 0 || write(fd, chunk, (size_t)n) == n);
    }
    ok = ok && lseek(fd, 0, SEEK_SET) == 0 && dup2(fd, STDIN_FILENO) == STDIN_FILENO;
    if (fd >= 0) close(fd);
    return ok;
}

/* ADD/DEL/CHECK through the agent when one serves them; otherwise which Python path runs. */
static const char *serve_from_agent(int *exit_code) {
    const char *command = getenv("CNI_COMMAND");
    if (command == NULL || (strcmp(command, "ADD") != 0 && strcmp(command, "DEL") != 0 && strcmp(command, "CHECK") != 0))
        return RUN;
    struct buf input = {.limit = MAX_REQUEST_FRAME};
    const char *run = RUN;
    int complete = read_stdin(&input);
    if (complete < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "cannot read stdin: %s", strerror(errno));
        *exit_code = write_cni_error(NULL, 0, 5, msg, "");
        run = NULL;
    } else if (complete == 1) {
        switch (ask_agent(&input, exit_code)) {
        case AGENT_ANSWERED: run = NULL; break;
        case SERVE_IN_PROCESS: run = RUN_IN_PROCESS; break;
        case PYTHON_DECIDES: break;
        }
    }
    if (run != NULL && !hand_stdin_over(&input, complete == 1)) {
        *exit_code = write_cni_error(NULL, 0, 100, "istio-cni: cannot hand stdin to the bundled interpreter",
                                     strerror(errno));
        run = NULL;
    }
    buf_free(&input);
    return run;
}

int main(int argc, char **argv) {
    (void)argc;
    int exit_code = 1;
    const char *run = serve_from_agent(&exit_code);
    if (run == NULL) return exit_code;
    char self[PATH_MAX], python[PATH_MAX + 32];
    ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
    if (length > 0) {
        self[length] = '\0';
        snprintf(python, sizeof python, "%s/istio-cni-python", dirname(self));
        char *const python_argv[] = {argv[0], (char *)run, NULL};
        execv(python, python_argv);
    }
    return write_cni_error(NULL, 0, 100, "istio-cni: cannot start the bundled interpreter",
                           length > 0 ? strerror(errno) : "cannot read /proc/self/exe (is /proc mounted?)");
}
