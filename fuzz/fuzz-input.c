/*
 * mpqemu fuzzing: decodes the record script of an input and plays the
 * hostile peer's part of it (bytes and descriptors on a UNIX socket).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "fuzz-input.h"

uint16_t fuzz_le16(const uint8_t *p)
{
    return p[0] | (p[1] << 8);
}

uint32_t fuzz_le32(const uint8_t *p)
{
    return fuzz_le16(p) | ((uint32_t)fuzz_le16(p + 2) << 16);
}

uint64_t fuzz_le64(const uint8_t *p)
{
    return fuzz_le32(p) | ((uint64_t)fuzz_le32(p + 4) << 32);
}

void fuzz_input_init(FuzzInput *in, const uint8_t *data, size_t size)
{
    in->p = data;
    in->left = size;
    in->fds_used = 0;
}

static const uint8_t *take(FuzzInput *in, size_t n)
{
    const uint8_t *p = in->p;

    if (in->left < n) {
        in->left = 0;
        return NULL;
    }
    in->p += n;
    in->left -= n;
    return p;
}

bool fuzz_input_next(FuzzInput *in, FuzzRecord *rec)
{
    const uint8_t *p;

    while (in->left) {
        memset(rec, 0, sizeof(*rec));
        rec->op = *take(in, 1);
        switch (rec->op) {
        case FUZZ_OP_DATA:
            p = take(in, 3);
            if (!p) {
                return false;
            }
            rec->len = fuzz_le16(p);
            rec->nfds = p[2] & 0xf;
            rec->fd_kind = p[2] >> 4;
            if (rec->nfds > FUZZ_MAX_FDS_PER_CHUNK) {
                rec->nfds = FUZZ_MAX_FDS_PER_CHUNK;
            }
            /* a chunk cut short still sends what there is */
            if (rec->len > in->left) {
                rec->len = in->left;
            }
            rec->data = take(in, rec->len);
            return true;
        case FUZZ_OP_CALL:
            p = take(in, 2);
            if (!p) {
                return false;
            }
            rec->what = p[0];
            rec->arg = p[1];
            return true;
        case FUZZ_OP_RING:
            p = take(in, 1 + FUZZ_RING_OPERANDS);
            if (!p) {
                return false;
            }
            rec->what = p[0];
            rec->operands = p + 1;
            return true;
        case FUZZ_OP_POLL:
        case FUZZ_OP_EOF:
            return true;
        default:
            break;      /* skipped */
        }
    }
    return false;
}

static int new_memfd(off_t size, bool sealed)
{
    int fd = memfd_create("mpqemu-fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    if (fd < 0) {
        return -1;
    }
    if (ftruncate(fd, size) < 0 ||
        (sealed && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int new_fd(unsigned kind, unsigned index)
{
    int p[2];

    switch (kind) {
    case FUZZ_FDS_RING:
        return index == 0 ? new_memfd(FUZZ_MEMFD_SIZE, true)
                          : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    case FUZZ_FDS_MEMFD:
        return new_memfd(FUZZ_MEMFD_SIZE, true);
    case FUZZ_FDS_EVENTFD:
        return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    case FUZZ_FDS_PIPE:
        if (pipe2(p, O_CLOEXEC) < 0) {
            return -1;
        }
        close(p[1]);
        return p[0];
    case FUZZ_FDS_UNSEALED:
        return new_memfd(4096, false);
    default:
        return open("/dev/null", O_RDWR | O_CLOEXEC);
    }
}

bool fuzz_send_chunk(FuzzInput *in, int fd, const FuzzRecord *rec,
                     int timeout_ms)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * FUZZ_MAX_FDS_PER_CHUNK)];
    } control;
    int fds[FUZZ_MAX_FDS_PER_CHUNK];
    unsigned nfds = 0;
    size_t sent = 0;
    bool ok = true;

    while (nfds < rec->nfds && in->fds_used < FUZZ_MAX_FDS_PER_INPUT) {
        int f = new_fd(rec->fd_kind, nfds);

        if (f < 0) {
            break;
        }
        fds[nfds++] = f;
        in->fds_used++;
    }

    do {
        struct iovec iov = {
            (void *)(rec->data + sent), rec->len - sent
        };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (sent == 0 && nfds) {
            struct cmsghdr *cmsg;

            memset(&control, 0, sizeof(control));
            mh.msg_control = control.buf;
            mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
            cmsg = CMSG_FIRSTHDR(&mh);
            cmsg->cmsg_level = SOL_SOCKET;
            cmsg->cmsg_type = SCM_RIGHTS;
            cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
            memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
        }
        n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = { .fd = fd, .events = POLLOUT };

            if (poll(&pfd, 1, timeout_ms) <= 0) {
                ok = false;
                break;
            }
            continue;
        }
        if (n < 0) {
            ok = false;
            break;
        }
        sent += n;
    } while (sent < rec->len);

    for (unsigned i = 0; i < nfds; i++) {
        close(fds[i]);
    }
    return ok;
}

int fuzz_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d) {
        return -1;
    }
    while ((e = readdir(d))) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1;   /* the directory's own descriptor */
}
