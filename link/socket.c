/*
 * mpqemu sockets: the checks and messages for an inherited socket or
 * eventfd, and UNIX socket paths to connect to or listen on.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/sockets.h"
#include "monitor/monitor.h"
#include "mpqemu/socket.h"

#include <sys/un.h>

int mpqemu_socket_from_param(const char *fd_str, const char *other_end,
                             Error **errp)
{
    ERRP_GUARD();
    int type = 0, domain = 0;
    socklen_t len = sizeof(int);
    struct stat st;
    int fd;

    if (g_str_has_prefix(fd_str, "/dev/fdset/")) {
        /* a duplicate of the one in the set that add-fd filled */
        fd = qemu_open(fd_str, O_RDWR, errp);
    } else {
        fd = monitor_fd_param(monitor_cur(), fd_str, errp);
    }
    if (fd < 0) {
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "fd=%s", fd_str);
        return -1;
    }
    if (!S_ISSOCK(st.st_mode) ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 ||
        type != SOCK_STREAM || domain != AF_UNIX) {
        error_setg(errp, "fd=%s is not a UNIX stream socket", fd_str);
        error_append_hint(errp, "Pass one end of socketpair(AF_UNIX, "
                          "SOCK_STREAM) here and the other end to %s, or use "
                          "socket=PATH\n", other_end);
        /* ours to close, unless it is one of the standard streams */
        if (fd > STDERR_FILENO) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

static bool socket_address(const char *path, struct sockaddr_un *addr,
                           Error **errp)
{
    *addr = (struct sockaddr_un) { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(addr->sun_path)) {
        error_setg(errp, "socket path '%s' is longer than %zu bytes", path,
                   sizeof(addr->sun_path) - 1);
        return false;
    }
    pstrcpy(addr->sun_path, sizeof(addr->sun_path), path);
    return true;
}

int mpqemu_socket_connect(const char *path, Error **errp)
{
    struct sockaddr_un addr;
    int fd;

    if (!socket_address(path, &addr, errp)) {
        return -1;
    }
    fd = qemu_socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "cannot create a socket");
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        error_setg_errno(errp, errno, "cannot connect to remote process "
                         "socket '%s'", path);
        close(fd);
        return -1;
    }
    return fd;
}

int mpqemu_socket_listen(const char *path, Error **errp)
{
    struct sockaddr_un addr;
    struct stat st;
    int fd;

    if (!socket_address(path, &addr, errp)) {
        return -1;
    }
    /* A socket left behind by an earlier run is replaced; files are not */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        unlink(path);
    }
    fd = qemu_socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "cannot create a socket");
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(fd, 1) < 0) {
        error_setg_errno(errp, errno, "cannot listen on '%s'", path);
        close(fd);
        return -1;
    }
    return fd;
}

bool mpqemu_fd_is_eventfd(int fd)
{
    g_autofree char *link = g_strdup_printf("/proc/self/fd/%d", fd);
    g_autofree char *target = g_file_read_link(link, NULL);

    return target && g_str_equal(target, "anon_inode:[eventfd]");
}
