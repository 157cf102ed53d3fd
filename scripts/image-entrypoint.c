/* /usr/bin/meshcni of the install-cni image (scripts/build-image.py): the operator CLI
 * (meshcni_core.cli.main) on the interpreter of the plugin bundle the image carries for the
 * hosts, so the image holds one Python, not two.
 *
 * BUNDLE is the bundle's absolute place in the image; libpython is found in BUNDLE/lib through
 * this file's RPATH. EXTRA_PACKAGES holds what only the image needs besides the bundle's
 * packages (the platform and repair-policy extensions). The interpreter is isolated: no PYTHON*
 * variables, no user site, no bytecode written into the image.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if !defined(BUNDLE) || !defined(PYTHON_DIR) || !defined(EXTRA_PACKAGES)
#error "build with -DBUNDLE=... -DPYTHON_DIR=... -DEXTRA_PACKAGES=..."
#endif

static const char *const MODULE_PATH[] = {
    BUNDLE "/lib/" PYTHON_DIR, BUNDLE "/lib/" PYTHON_DIR "/lib-dynload", BUNDLE "/site-packages", EXTRA_PACKAGES,
};

static int startup_failed(PyConfig *config, PyStatus status) {
    PyConfig_Clear(config);
    if (PyStatus_IsExit(status)) return status.exitcode;
    fprintf(stderr, "meshcni: cannot start the image's interpreter (%s): %s\n", BUNDLE,
            status.err_msg ? status.err_msg : "");
    return 1;
}

int main(int argc, char **argv) {
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;
    config.write_bytecode = 0;
    PyStatus status = PyConfig_SetBytesString(&config, &config.home, BUNDLE);
    if (!PyStatus_Exception(status)) status = PyConfig_SetBytesArgv(&config, argc, argv);
    config.module_search_paths_set = 1;
    for (size_t i = 0; i < sizeof MODULE_PATH / sizeof *MODULE_PATH && !PyStatus_Exception(status); i++) {
        wchar_t *entry = Py_DecodeLocale(MODULE_PATH[i], NULL);
        status = entry ? PyWideStringList_Append(&config.module_search_paths, entry) : PyStatus_NoMemory();
        PyMem_RawFree(entry);
    }
    if (!PyStatus_Exception(status))
        status = PyConfig_SetString(&config, &config.run_command, L"from meshcni_core.cli.main import run\nrun()\n");
    if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(status)) return startup_failed(&config, status);
    PyConfig_Clear(&config);
    return Py_RunMain();
}
