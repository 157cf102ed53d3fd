/* The istio-cni executable of the self-contained plugin (scripts/build-plugin-bundle.sh).
 *
 * It embeds the interpreter of the bundle it sits in: libpython comes from ./lib through this
 * file's RPATH (DT_RPATH, so the extension modules' libraries are found there too, without
 * LD_LIBRARY_PATH leaking into the iptables and nsenter processes the plugin starts), the
 * standard library from ./lib/PYTHON_DIR, our packages from ./site-packages. The interpreter is
 * isolated (no PYTHON* variables, no user or site directories) and writes no bytecode: nothing
 * on the host but the kernel and the C library is used, and nothing on it is changed.
 *
 * ADD, DEL and CHECK are first sent to the node agent (launcher-agent.c) without starting the
 * interpreter: a pod served by the agent costs one socket round trip. The interpreter starts
 * only when no agent listens or it declined the request (then the plugin serves it in-process,
 * run_in_process), or for any other command or input the launcher does not read (then the Python
 * plugin's whole path runs, agent client included). Either way it reads the stdin the launcher
 * already read, from a memory file put in its place.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "launcher.h"

#ifndef PYTHON_DIR
#error "build with -DPYTHON_DIR='\"python3.X\"'"
#endif

static const char *const SEARCH_PATH[] = {"lib/" PYTHON_DIR, "lib/" PYTHON_DIR "/lib-dynload", "site-packages"};
static const wchar_t RUN[] = L"from meshcni_core.cni.plugin import run\nrun()\n";
static const wchar_t RUN_IN_PROCESS[] = L"from meshcni_core.cni.plugin import run_in_process\nrun_in_process()\n";

/* A runtime reads one JSON object from a plugin's stdout, whatever went wrong. */
static int fail(PyConfig *config, PyStatus status) {
    PyConfig_Clear(config);
    if (PyStatus_IsExit(status)) return status.exitcode;
    fprintf(stderr, "istio-cni: cannot start the bundled interpreter: %s\n", status.err_msg ? status.err_msg : "");
    printf("{\"cniVersion\": \"0.4.0\", \"code\": 100, \"msg\": \"istio-cni: cannot start the bundled interpreter\"}\n");
    return 1;
}

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
static const wchar_t *serve_from_agent(int *exit_code) {
    const char *command = getenv("CNI_COMMAND");
    if (command == NULL || (strcmp(command, "ADD") != 0 && strcmp(command, "DEL") != 0 && strcmp(command, "CHECK") != 0))
        return RUN;
    struct buf input = {.limit = MAX_REQUEST_FRAME};
    const wchar_t *run = RUN;
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
    int exit_code = 1;
    const wchar_t *run = serve_from_agent(&exit_code);
    if (run == NULL) return exit_code;

    char self[PATH_MAX], path[PATH_MAX + 64];
    ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    if (length <= 0) return fail(&config, PyStatus_Error("cannot read /proc/self/exe (is /proc mounted?)"));
    self[length] = '\0';
    const char *home = dirname(self);

    config.site_import = 0;
    config.write_bytecode = 0;
    PyStatus status = PyConfig_SetBytesString(&config, &config.home, home);
    if (PyStatus_Exception(status)) return fail(&config, status);
    status = PyConfig_SetBytesArgv(&config, argc, argv);
    if (PyStatus_Exception(status)) return fail(&config, status);
    config.module_search_paths_set = 1;
    for (size_t i = 0; i < sizeof SEARCH_PATH / sizeof *SEARCH_PATH; i++) {
        snprintf(path, sizeof path, "%s/%s", home, SEARCH_PATH[i]);
        wchar_t *wide = Py_DecodeLocale(path, NULL);
        if (wide == NULL) return fail(&config, PyStatus_NoMemory());
        status = PyWideStringList_Append(&config.module_search_paths, wide);
        PyMem_RawFree(wide);
        if (PyStatus_Exception(status)) return fail(&config, status);
    }
    status = PyConfig_SetString(&config, &config.run_command, run);
    if (PyStatus_Exception(status)) return fail(&config, status);
    status = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(status)) return fail(&config, status);
    PyConfig_Clear(&config);
    return Py_RunMain();
}
