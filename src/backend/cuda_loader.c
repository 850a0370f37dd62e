/* See cuda_loader.h. The plugin's three symbols are described in
 * backend/cuda/cuda_plugin.h; this file only needs their names and types
 * and never includes CUDA headers. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cuda/cuda_plugin.h"
#include "backend/cuda_loader.h"
#include "core/error.h"

#define PLUGIN_FILE "libmgpu-cuda.so"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void *plugin;                  /* kept for the life of the process */
static char load_error[384];          /* why it could not be loaded */
static bool tried;

/* ISO C has no conversion from void * to a function pointer; POSIX
 * guarantees the representation is the same. */
static void *sym(const char *name)
{
    return dlsym(plugin, name);
}

/* Folder of the running executable, or "" when /proc is not there. */
static void exe_dir(char *buf, size_t size)
{
    buf[0] = '\0';
    ssize_t n = readlink("/proc/self/exe", buf, size - 1);
    if (n <= 0)
        return;
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (slash)
        *slash = '\0';
    else
        buf[0] = '\0';
}

/* Under the lock: loads and checks the plugin once. */
static void load(void)
{
    if (tried)
        return;
    tried = true;
    const char *env = getenv("MGPU_CUDA_PLUGIN");
    if (env && *env) {
        plugin = dlopen(env, RTLD_NOW | RTLD_LOCAL);
        if (!plugin) {
            snprintf(load_error, sizeof load_error, "cannot load the CUDA plugin %.200s: %.150s", env,
                     dlerror());
            return;
        }
    } else {
        char path[4096];
        exe_dir(path, sizeof path - sizeof PLUGIN_FILE - 1);
        if (path[0]) {
            strcat(path, "/" PLUGIN_FILE);
            if (access(path, F_OK) == 0) {
                plugin = dlopen(path, RTLD_NOW | RTLD_LOCAL);
                if (!plugin) { /* there but unusable (libcublas missing, say) */
                    snprintf(load_error, sizeof load_error, "cannot load the CUDA plugin %.200s: %.150s",
                             path, dlerror());
                    return;
                }
            }
        }
        if (!plugin)
            plugin = dlopen(PLUGIN_FILE, RTLD_NOW | RTLD_LOCAL);
        if (!plugin) {
            snprintf(load_error, sizeof load_error,
                     "the CUDA plugin is not built (no " PLUGIN_FILE
                     " next to the executable or on the library path; set MGPU_CUDA_PLUGIN "
                     "to its path)");
            return;
        }
    }
    const int *abi = sym(MGPU_CUDA_PLUGIN_ABI_SYMBOL);
    if (!abi || !sym(MGPU_CUDA_PLUGIN_CREATE_SYMBOL) || !sym(MGPU_CUDA_PLUGIN_COUNT_SYMBOL)) {
        snprintf(load_error, sizeof load_error, "the CUDA plugin lacks its entry points");
    } else if (*abi != MGPU_BACKEND_ABI) {
        snprintf(load_error, sizeof load_error,
                 "the CUDA plugin was built for backend ABI %d, this mgpu has %d: rebuild it",
                 *abi, MGPU_BACKEND_ABI);
    } else {
        return;
    }
    dlclose(plugin);
    plugin = NULL;
}

static bool loaded(void)
{
    pthread_mutex_lock(&lock);
    load();
    bool ok = plugin != NULL;
    pthread_mutex_unlock(&lock);
    return ok;
}

mgpu_status mgpu_backend_cuda_create(int ordinal, mgpu_backend **out, mgpu_error *err)
{
    *out = NULL;
    if (!loaded()) {
        mgpu_status st = strstr(load_error, "backend ABI") ? MGPU_ERR_UNSUPPORTED
                                                          : MGPU_ERR_NOT_FOUND;
        return mgpu_error_set(err, st, "cuda:%d: %s", ordinal, load_error);
    }
    mgpu_cuda_plugin_create_fn create;
    void *p = sym(MGPU_CUDA_PLUGIN_CREATE_SYMBOL);
    memcpy(&create, &p, sizeof create);
    mgpu_error local = {0};
    mgpu_status st = create(MGPU_BACKEND_ABI, ordinal, out, &local);
    if (st != MGPU_OK) {
        *out = NULL;
        /* through mgpu_error_set: one printable line whatever the plugin wrote */
        return mgpu_error_set(err, st, "%s", local.message);
    }
    return MGPU_OK;
}

bool mgpu_backend_cuda_available(void)
{
    if (!loaded())
        return false;
    mgpu_cuda_plugin_count_fn count;
    void *p = sym(MGPU_CUDA_PLUGIN_COUNT_SYMBOL);
    memcpy(&count, &p, sizeof count);
    char why[256];
    return count(why, sizeof why) > 0;
}
