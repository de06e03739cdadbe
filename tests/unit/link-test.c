/*
 * Tests of the proxy's link (hw-proxy/proxy-rpc.c, proxy-ring.c) between two
 * threads: a notification signalled to the main loop while a vCPU holds the link.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/atomic.h"
#include "qemu/bswap.h"
#include "qemu/main-loop.h"
#include "qemu/thread.h"
#include "proxy.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

#define TIMEOUT_MS      5000
#define CALLS           2000

/* A proxy's link, and the remote's end of it, played by the test */
typedef struct Fixture {
    ProxyLink link;
    int remote_fd;          /* the remote's end of the socket */
    int notify_fd;          /* the remote's copy of the notify eventfd */
    MPQemuRing *ring;       /* the remote's mapping of the ring */
    size_t ring_size;
    unsigned notified;      /* notifications applied, by any thread */
    unsigned failures;
} Fixture;

/* A vCPU's request on the link, made by its own thread */
typedef struct Caller {
    Fixture *f;
    unsigned calls;
    unsigned ok;
} Caller;

static void fixture_notify(void *opaque, MPQemuMsg *msg)
{
    Fixture *f = opaque;

    g_assert_cmpuint(msg->hdr.cmd, ==, MPQEMU_CMD_SET_IRQ);
    qatomic_inc(&f->notified);
}

static void fixture_fail(void *opaque, RemoteDeviceFailureCause cause,
                         const char *reason)
{
    Fixture *f = opaque;

    g_test_message("link failed: %s", reason);
    f->failures++;
}

/* The remote: receive one request, which must be @cmd */
static void remote_recv(Fixture *f, MPQemuCmd cmd, MPQemuMsg *msg)
{
    g_assert_cmpint(mpqemu_msg_recv(f->remote_fd, msg, TIMEOUT_MS,
                                    &error_abort), ==, 0);
    g_assert_cmpstr(mpqemu_cmd_name(msg->hdr.cmd), ==, mpqemu_cmd_name(cmd));
}

/* The remote: answer @req with an empty success, or @value for a read */
static void remote_reply(Fixture *f, const MPQemuMsg *req, uint64_t value)
{
    MPQemuMsg reply;

    if (req->hdr.cmd == MPQEMU_CMD_CONFIG_READ) {
        mpqemu_msg_init_reply(&reply, req, sizeof(MPQemuValue));
        reply.u.value.value = cpu_to_le64(value);
    } else {
        mpqemu_msg_init_reply(&reply, req, 0);
    }
    g_assert_cmpint(mpqemu_msg_send(f->remote_fd, &reply, TIMEOUT_MS,
                                    &error_abort), ==, 0);
}

/*
 * The remote: send an interrupt, then tell the proxy's main loop as
 * remote_ring_notified() does, no halted vCPU reading the socket
 */
static void remote_notify(Fixture *f)
{
    MPQemuMsg msg;

    mpqemu_msg_init(&msg, MPQEMU_CMD_SET_IRQ, 0, 0, sizeof(MPQemuSetIrq));
    msg.u.set_irq.level = cpu_to_le32(1);
    g_assert_cmpint(mpqemu_msg_send(f->remote_fd, &msg, TIMEOUT_MS,
                                    &error_abort), ==, 0);
    smp_mb();
    if (!qatomic_read(&f->ring->socket_reader) &&
        !qatomic_read(&f->ring->notify_signalled)) {
        qatomic_set(&f->ring->notify_signalled, 1);
        g_assert_cmpint(eventfd_write(f->notify_fd, 1), ==, 0);
    }
}

/* The remote's side of RING_SETUP, while the main loop waits for it */
static void *remote_ring_setup(void *opaque)
{
    Fixture *f = opaque;
    MPQemuMsg msg;

    remote_recv(f, MPQEMU_CMD_RING_SETUP, &msg);
    g_assert_cmpint(msg.hdr.num_fds, ==, MPQEMU_RING_FDS + 1);
    g_assert_cmpuint(le32_to_cpu(msg.u.ring_setup.flags), ==,
                     MPQEMU_RING_SETUP_NOTIFY_FD);
    f->ring_size = le32_to_cpu(msg.u.ring_setup.size);
    f->ring = mmap(NULL, f->ring_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                   msg.fds[0], 0);
    g_assert_true(f->ring != MAP_FAILED);
    f->notify_fd = msg.fds[3];
    close(msg.fds[0]);
    close(msg.fds[1]);
    close(msg.fds[2]);
    remote_reply(f, &msg, 0);
    return NULL;
}

static Fixture *fixture_new(void)
{
    Fixture *f = g_new0(Fixture, 1);
    QemuThread remote;
    int sv[2];

    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                    ==, 0);
    f->remote_fd = sv[1];
    proxy_link_init(&f->link);
    proxy_link_open(&f->link, sv[0], TIMEOUT_MS, fixture_notify,
                    fixture_fail, f);
    qemu_thread_create(&remote, "remote", remote_ring_setup, f,
                       QEMU_THREAD_JOINABLE);
    g_assert_true(proxy_ring_setup(&f->link, false, true, &error_abort));
    qemu_thread_join(&remote);
    g_assert_cmpint(f->link.ring_notify_fd, >=, 0);
    return f;
}

static void fixture_free(Fixture *f)
{
    g_assert_cmpuint(f->failures, ==, 0);
    proxy_link_destroy(&f->link);
    munmap(f->ring, f->ring_size);
    close(f->notify_fd);
    close(f->remote_fd);
    g_free(f);
}

/* Whether the main loop would wake up for the notify eventfd now */
static bool main_loop_signalled(Fixture *f, int timeout_ms)
{
    struct pollfd pfd = { .fd = f->link.ring_notify_fd, .events = POLLIN };

    return poll(&pfd, 1, timeout_ms) == 1;
}

/* A vCPU: config reads, each a round trip that holds the link */
static void *vcpu_calls(void *opaque)
{
    Caller *c = opaque;

    for (unsigned i = 0; i < c->calls; i++) {
        MPQemuMsg req, reply;

        mpqemu_msg_init(&req, MPQEMU_CMD_CONFIG_READ, 0, 0,
                        sizeof(MPQemuConfigAccess));
        req.u.config.offset = cpu_to_le32(0);
        req.u.config.len = cpu_to_le32(4);
        if (proxy_link_call(&c->f->link, &req, &reply, &error_abort) &&
            le64_to_cpu(reply.u.value.value) == i) {
            c->ok++;
        }
    }
    return NULL;
}

/*
 * The main loop, woken by the notify eventfd while a vCPU waits for an
 * answer with the link held, leaves the notification to that vCPU and
 * sleeps: the eventfd no longer wakes it (it used to, again and again, for
 * as long as the vCPU held the link). Once the vCPU lets go, the signal is
 * back and the main loop finds the notification applied.
 */
static void test_held_link(void)
{
    Fixture *f = fixture_new();
    Caller c = { .f = f, .calls = 1 };
    QemuThread vcpu;
    MPQemuMsg req;

    qemu_thread_create(&vcpu, "vcpu", vcpu_calls, &c, QEMU_THREAD_JOINABLE);
    /* the request is out: the vCPU holds the link until it has the answer */
    remote_recv(f, MPQEMU_CMD_CONFIG_READ, &req);
    remote_notify(f);
    g_assert_true(main_loop_signalled(f, 0));

    g_assert_false(proxy_link_poll_notifications(&f->link, true));
    g_assert_false(main_loop_signalled(f, 0));
    g_assert_true(qatomic_read(&f->link.notify_deferred));

    remote_reply(f, &req, 0);
    qemu_thread_join(&vcpu);
    g_assert_cmpuint(c.ok, ==, 1);
    /* the vCPU read the interrupt while it waited, and applied it */
    g_assert_cmpuint(qatomic_read(&f->notified), ==, 1);

    g_assert_true(main_loop_signalled(f, TIMEOUT_MS));
    g_assert_true(proxy_link_poll_notifications(&f->link, true));
    g_assert_false(main_loop_signalled(f, 0));
    g_assert_false(qatomic_read(&f->link.notify_deferred));
    /* seen: the remote signals the main loop again for the next one */
    g_assert_cmpuint(qatomic_read(&f->ring->notify_signalled), ==, 0);
    g_assert_cmpuint(qatomic_read(&f->notified), ==, 1);
    fixture_free(f);
}

/*
 * The remote's side of vcpu_calls(): an interrupt with every answer, before
 * it (the waiting vCPU reads it) or after it (whoever holds the link next)
 */
static void *remote_serve_calls(void *opaque)
{
    Caller *c = opaque;

    for (unsigned i = 0; i < c->calls; i++) {
        MPQemuMsg req;

        remote_recv(c->f, MPQEMU_CMD_CONFIG_READ, &req);
        if (i % 2) {
            remote_notify(c->f);
        }
        remote_reply(c->f, &req, i);
        if (!(i % 2)) {
            remote_notify(c->f);
        }
    }
    return NULL;
}

/*
 * A vCPU makes round trips back to back, the remote sends an interrupt
 * with each, and the main loop handles every signal it gets: whichever
 * thread ends up with each notify signal, none is lost. At the end the
 * main loop is not left signalled for nothing, and every interrupt was
 * applied once.
 */
static void test_held_link_race(void)
{
    Fixture *f = fixture_new();
    Caller c = { .f = f, .calls = CALLS };
    QemuThread vcpu, remote;

    qemu_thread_create(&vcpu, "vcpu", vcpu_calls, &c, QEMU_THREAD_JOINABLE);
    qemu_thread_create(&remote, "remote", remote_serve_calls, &c,
                       QEMU_THREAD_JOINABLE);
    while (qatomic_read(&f->notified) < CALLS) {
        if (main_loop_signalled(f, TIMEOUT_MS)) {
            proxy_link_poll_notifications(&f->link, true);
        } else {
            /* nobody signals: what is left must have been applied */
            break;
        }
    }
    qemu_thread_join(&remote);
    qemu_thread_join(&vcpu);
    g_assert_cmpuint(c.ok, ==, CALLS);
    /* the last signal, if any, reaches the main loop */
    while (main_loop_signalled(f, 100)) {
        proxy_link_poll_notifications(&f->link, true);
    }
    g_assert_cmpuint(qatomic_read(&f->notified), ==, CALLS);
    g_assert_false(qatomic_read(&f->link.notify_deferred));
    g_assert_cmpuint(qatomic_read(&f->ring->notify_signalled), ==, 0);
    fixture_free(f);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* libqemuutil's stand-in for the BQL: every thread holds it, if asked */
    rust_bql_mock_lock();
    qemu_init_main_loop(&error_abort);
    g_test_add_func("/mpqemu/link/notify/held-link", test_held_link);
    g_test_add_func("/mpqemu/link/notify/held-link-race",
                    test_held_link_race);
    return g_test_run();
}
