/*
 * Helpers shared by the mpqemu qtests: start a remote process and a main
 * QEMU whose proxy is connected to it.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef MPQEMU_QTEST_H
#define MPQEMU_QTEST_H

#include "libqtest.h"

/* A scratch directory for sockets and images, removed by mpqemu_tmp_free() */
char *mpqemu_tmp_dir(void);
void mpqemu_tmp_free(char *dir);

/*
 * Start a remote QEMU (-machine x-remote, under qtest so the test can
 * query it) serving device @devid through a socket at @sock_path.
 * @devices holds the -device/-drive options that create the device.
 */
QTestState *mpqemu_start_remote(const char *sock_path, const char *devid,
                                const char *devices);

/* A connected client socket to @path, or -1 */
int mpqemu_connect(const char *path);

#endif
