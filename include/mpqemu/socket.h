/*
 * mpqemu sockets: how the proxy and the remote get their connection, from
 * an inherited descriptor or a UNIX socket path.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef MPQEMU_SOCKET_H
#define MPQEMU_SOCKET_H

/*
 * The connected UNIX stream socket that @fd_str names (a number, a name
 * passed with the monitor's getfd, or /dev/fdset/N of add-fd). @other_end
 * says, for the hint, where the other end of the socketpair goes.
 */
int mpqemu_socket_from_param(const char *fd_str, const char *other_end,
                             Error **errp);

/* A socket connected to, or listening on, the UNIX socket @path */
int mpqemu_socket_connect(const char *path, Error **errp);
int mpqemu_socket_listen(const char *path, Error **errp);

/* Whether @fd is an eventfd (as the ring and doorbells need) */
bool mpqemu_fd_is_eventfd(int fd);

#endif
