/* istio-cni-python: the interpreter of the self-contained plugin (scripts/build-plugin-bundle.sh),
 * started by its istio-cni launcher (plugin-launcher.c) only when the Python plugin must run:
 *   istio-cni-python run             the Python plugin's whole path (agent client included)
 *   istio-cni-python run_in_process  the launcher asked the agent, which did not take the request
 *
 * It embeds the interpreter of the bundle it sits in: libpython comes from ./lib through this
 * file's RPATH (DT_RPATH, so the extension modules' libraries are found there too, without
 * LD_LIBRARY_PATH leaking into the iptables and nsenter processes the plugin starts), the
 * standard library from ./lib/PYTHON_DIR, our packages from ./site-packages. The interpreter is
 * isolated (no PYTHON* variables, no user or site directories) and writes no bytecode: nothing
 * on the host but the kernel and the C library is used, and nothing on it is changed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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

int main(int argc, char **argv) {
    char self[PATH_MAX], path[PATH_MAX + 64];
    const wchar_t *run = argc == 2 && strcmp(argv[1], "run") == 0              ? RUN
                         : argc == 2 && strcmp(argv[1], "run_in_process") == 0 ? RUN_IN_PROCESS
                                                                               : NULL;
    ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    if (run == NULL) return fail(&config, PyStatus_Error("usage: istio-cni-python run|run_in_process"));
    if (length <= 0) return fail(&config, PyStatus_Error("cannot read /proc/self/exe (is /proc mounted?)"));
    self[length] = '\0';
    const char *home = dirname(self);

    config.site_import = 0;
    config.write_bytecode = 0;
    PyStatus status = PyConfig_SetBytesString(&config, &config.home, home);
    if (PyStatus_Exception(status)) return fail(&config, status);
    status = PyConfig_SetBytesArgv(&config, 1, argv);
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
