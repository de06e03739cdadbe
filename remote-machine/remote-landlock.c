/*
 * The files a sandboxed remote process may still open: those its block
 * backends opened at startup, QEMU's modules and the paths it was told to.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-builtin-types.h"
#include "qemu/error-report.h"
#include "qemu/cutils.h"
#include "block/block.h"
#include "block/block_int-common.h"
#include <linux/landlock.h>
#include <sys/syscall.h>
#include "remote.h"
#include "trace.h"

/* Rights newer than the headers this may be built with */
#define REMOTE_LL_FS_REFER      (1ULL << 13)    /* ABI 2 */
#define REMOTE_LL_FS_TRUNCATE   (1ULL << 14)    /* ABI 3 */
#define REMOTE_LL_FS_IOCTL_DEV  (1ULL << 15)    /* ABI 5 */
#define REMOTE_LL_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)   /* ABI 6 */
#define REMOTE_LL_SCOPE_SIGNAL  (1ULL << 1)             /* ABI 6 */

/* The ruleset attributes as of ABI 6; older kernels take a prefix */
typedef struct RemoteLandlockAttr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
} RemoteLandlockAttr;

static int remote_landlock_abi(void)
{
    return syscall(__NR_landlock_create_ruleset, NULL, 0,
                   LANDLOCK_CREATE_RULESET_VERSION);
}

/* Every file system right this kernel knows: all of them are ruled */
static uint64_t remote_landlock_fs_rights(int abi)
{
    uint64_t rights = (1ULL << 13) - 1;     /* ABI 1: EXECUTE .. MAKE_SYM */

    if (abi >= 2) {
        rights |= REMOTE_LL_FS_REFER;
    }
    if (abi >= 3) {
        rights |= REMOTE_LL_FS_TRUNCATE;
    }
    if (abi >= 5) {
        rights |= REMOTE_LL_FS_IOCTL_DEV;
    }
    return rights;
}

/* Rights that mean something for a file that is not a directory */
#define REMOTE_LL_FILE_RIGHTS (LANDLOCK_ACCESS_FS_EXECUTE | \
                               LANDLOCK_ACCESS_FS_WRITE_FILE | \
                               LANDLOCK_ACCESS_FS_READ_FILE | \
                               REMOTE_LL_FS_TRUNCATE | REMOTE_LL_FS_IOCTL_DEV)

/*
 * Allow @rights (of those the ruleset @handled) beneath @path, or on it if
 * it is not a directory. A path that does not exist is an error only if
 * @required.
 */
static bool remote_landlock_add(int ruleset, uint64_t handled,
                                const char *path, uint64_t rights,
                                bool required, Error **errp)
{
    struct landlock_path_beneath_attr rule = {
        .allowed_access = rights & handled,
    };
    struct stat st;
    bool ok = false;

    rule.parent_fd = open(path, O_PATH | O_CLOEXEC);
    if (rule.parent_fd < 0) {
        if (required) {
            error_setg_errno(errp, errno, "cannot allow %s", path);
        }
        return !required;
    }
    if (fstat(rule.parent_fd, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            rule.allowed_access &= REMOTE_LL_FILE_RIGHTS;
        }
        if (!S_ISBLK(st.st_mode) && !S_ISCHR(st.st_mode)) {
            rule.allowed_access &= ~REMOTE_LL_FS_IOCTL_DEV;
        }
        ok = syscall(__NR_landlock_add_rule, ruleset,
                     LANDLOCK_RULE_PATH_BENEATH, &rule, 0) == 0;
    }
    if (!ok) {
        error_setg_errno(errp, errno, "cannot allow %s", path);
    } else {
        trace_remote_landlock_allow(path, rule.allowed_access);
    }
    close(rule.parent_fd);
    return ok;
}

#ifdef __SANITIZE_ADDRESS__
/* ... and only then reads its suppressions file (LSAN_OPTIONS) */
static bool remote_landlock_allow_lsan_suppressions(int ruleset,
                                                    uint64_t handled,
                                                    Error **errp)
{
    const char *options = getenv("LSAN_OPTIONS");
    g_auto(GStrv) fields = g_strsplit_set(options ?: "", ": ", -1);

    for (char **f = fields; *f; f++) {
        if (g_str_has_prefix(*f, "suppressions=") &&
            !remote_landlock_add(ruleset, handled,
                                 *f + strlen("suppressions="),
                                 LANDLOCK_ACCESS_FS_READ_FILE, false, errp)) {
            return false;
        }
    }
    return true;
}
#endif

/*
 * QEMU's modules: a device_add may load one (dlopen reads and maps it),
 * wherever the module directory's links point (in a build tree). They are
 * part of QEMU, read-only to the process.
 */
static bool remote_landlock_allow_modules(int ruleset, uint64_t handled,
                                          Error **errp)
{
    g_autofree char *moddir = get_relocated_path(CONFIG_QEMU_MODDIR);
    const char *dirs[] = { getenv("QEMU_MODULE_DIR"), moddir };
    const uint64_t rights = LANDLOCK_ACCESS_FS_EXECUTE |
                            LANDLOCK_ACCESS_FS_READ_FILE |
                            LANDLOCK_ACCESS_FS_READ_DIR;

    for (int i = 0; i < ARRAY_SIZE(dirs); i++) {
        g_autoptr(GDir) dir = dirs[i] ? g_dir_open(dirs[i], 0, NULL) : NULL;
        const char *name;

        if (!dir) {
            continue;
        }
        if (!remote_landlock_add(ruleset, handled, dirs[i], rights, false,
                                 errp)) {
            return false;
        }
        while ((name = g_dir_read_name(dir))) {
            g_autofree char *path = g_build_filename(dirs[i], name, NULL);
            g_autofree char *target = realpath(path, NULL);

            if (g_str_has_suffix(name, CONFIG_HOST_DSOSUF) && target &&
                strcmp(target, path) &&
                !remote_landlock_add(ruleset, handled, target, rights, false,
                                     errp)) {
                return false;
            }
        }
    }
    return true;
}

/* A backend's files: read and write them; in a directory, add and remove */
#define REMOTE_LL_DATA_RIGHTS (LANDLOCK_ACCESS_FS_READ_FILE | \
                               LANDLOCK_ACCESS_FS_WRITE_FILE | \
                               REMOTE_LL_FS_TRUNCATE | REMOTE_LL_FS_IOCTL_DEV | \
                               LANDLOCK_ACCESS_FS_READ_DIR | \
                               LANDLOCK_ACCESS_FS_MAKE_REG | \
                               LANDLOCK_ACCESS_FS_REMOVE_FILE)

/*
 * A ruleset that allows the files the block layer opened so far (it may
 * reopen them, e.g. when a migration's destination takes its images) and
 * @allow_paths, and nothing else. Without Landlock in the kernel, the
 * process says so and goes on without the restriction.
 */
int remote_landlock_prepare(strList *allow_paths, Error **errp)
{
    int abi = remote_landlock_abi();
    RemoteLandlockAttr attr = {};
    BlockDriverState *bs;
    size_t size;
    int ruleset;

    if (abi < 1) {
        warn_report("x-remote: the kernel has no Landlock: the remote "
                    "process may open any file its user can");
        return REMOTE_LANDLOCK_UNAVAILABLE;
    }
    attr.handled_access_fs = remote_landlock_fs_rights(abi);
    size = sizeof(attr.handled_access_fs);
    if (abi >= 6) {
        /* no signals to processes outside, no abstract sockets outside */
        attr.scoped = REMOTE_LL_SCOPE_ABSTRACT_UNIX_SOCKET |
                      REMOTE_LL_SCOPE_SIGNAL;
        size = sizeof(attr);
    }
    ruleset = syscall(__NR_landlock_create_ruleset, &attr, size, 0);
    if (ruleset < 0) {
        error_setg_errno(errp, errno, "cannot create a Landlock ruleset");
        return REMOTE_LANDLOCK_FAILED;
    }
    if (!remote_landlock_allow_modules(ruleset, attr.handled_access_fs,
                                       errp)) {
        close(ruleset);
        return REMOTE_LANDLOCK_FAILED;
    }
#ifdef __SANITIZE_ADDRESS__
    /*
     * LeakSanitizer lists the threads and maps of the process at exit, and
     * reads the executable's symbols to name the functions of a leak
     */
    if (!remote_landlock_add(ruleset, attr.handled_access_fs, "/proc",
                             LANDLOCK_ACCESS_FS_READ_FILE |
                             LANDLOCK_ACCESS_FS_READ_DIR, false, errp) ||
        !remote_landlock_add(ruleset, attr.handled_access_fs,
                             "/proc/self/exe",
                             LANDLOCK_ACCESS_FS_READ_FILE, false, errp) ||
        !remote_landlock_allow_lsan_suppressions(ruleset,
                                                 attr.handled_access_fs,
                                                 errp)) {
        close(ruleset);
        return REMOTE_LANDLOCK_FAILED;
    }
#endif
    for (bs = bdrv_next_all_states(NULL); bs; bs = bdrv_next_all_states(bs)) {
        if (bs->drv && bs->drv->protocol_name && bs->filename[0] &&
            access(bs->filename, F_OK) == 0 &&
            !remote_landlock_add(ruleset, attr.handled_access_fs,
                                 bs->filename, REMOTE_LL_DATA_RIGHTS, true,
                                 errp)) {
            close(ruleset);
            return REMOTE_LANDLOCK_FAILED;
        }
    }
    for (strList *p = allow_paths; p; p = p->next) {
        if (!remote_landlock_add(ruleset, attr.handled_access_fs, p->value,
                                 REMOTE_LL_DATA_RIGHTS, true, errp)) {
            close(ruleset);
            return REMOTE_LANDLOCK_FAILED;
        }
    }
    return ruleset;
}
