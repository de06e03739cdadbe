/*
 * Helpers shared by the mpqemu qtests: scratch directories and remote
 * processes under qtest control.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/sockets.h"
#include "mpqemu-qtest.h"

#include <sys/un.h>

char *mpqemu_tmp_dir(void)
{
    char *dir = g_dir_make_tmp("mpqemu-qtest-XXXXXX", NULL);

    g_assert(dir);
    return dir;
}

static void remove_tree(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *name;

    while (d && (name = g_dir_read_name(d))) {
        g_autofree char *path = g_build_filename(dir, name, NULL);

        unlink(path);
    }
    rmdir(dir);
}

void mpqemu_tmp_free(char *dir)
{
    remove_tree(dir);
    g_free(dir);
}

QTestState *mpqemu_start_remote(const char *sock_path, const char *devid,
                                const char *devices)
{
    QTestState *qts;

    qts = qtest_initf("-machine x-remote -nodefaults %s "
                      "-object x-remote-object,id=robj-%s,devid=%s,socket=%s",
                      devices, devid, devid, sock_path);
    g_assert(g_file_test(sock_path, G_FILE_TEST_EXISTS));
    return qts;
}

int mpqemu_connect(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_assert(fd >= 0);
    g_assert(strlen(path) < sizeof(addr.sun_path));
    strcpy(addr.sun_path, path);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}
