/*
 * A halted vCPU waits on the sockets of the proxied devices instead of the
 * main loop: a remote's interrupt wakes the vCPU, not the main loop and then it.
 * It looks for a short while before it sleeps: an interrupt that comes then
 * costs no wake-up at all.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/main-loop.h"
#include "qemu/atomic.h"
#include "qemu/timer.h"
#include "hw/core/cpu.h"
#include "hw/boards.h"
#include "system/cpus.h"
#include "proxy.h"
#include "trace.h"

#include <poll.h>
#include <sys/eventfd.h>

/* More links than this and a halted vCPU leaves them to the main loop */
#define PROXY_HALT_WAIT_MAX_LINKS   64
/*
 * A vCPU waits on the links only this long after the last interrupt from
 * them: while the guest does I/O. An idle guest's vCPU wakes for its timers,
 * and waking it through its halt condition costs a little less.
 */
#define PROXY_HALT_WAIT_ACTIVE_NS   (20 * SCALE_MS)
/*
 * How long a halted vCPU looks for an interrupt before it sleeps: a window
 * that adapts to its waits, as the remote's polling window does to the gaps
 * between requests. Waking a thread that sleeps costs from a few µs (its
 * CPU busy) to tens of µs (its CPU idle, on a virtualized host), and a disk
 * read that the host has cached takes some 30 µs from the doorbell to the
 * interrupt: the vCPU would sleep through little else. A wait that ended
 * soon after the window closed widens it; one longer than the widest window
 * (a large read, a slow disk) narrows it: such waits go to sleep almost at
 * once and leave the CPU to the threads that do the work. Each look is one
 * system call, and between looks the vCPU yields the CPU to them.
 */
#define PROXY_HALT_SPIN_MIN_NS      (5 * SCALE_US)
#define PROXY_HALT_SPIN_START_NS    (20 * SCALE_US)
#define PROXY_HALT_SPIN_MAX_NS      (50 * SCALE_US)

/* A vCPU thread that has waited here */
typedef struct ProxyHaltWaiter {
    int wake_fd;            /* an eventfd: kicked while it waits */
    bool waiting;
    int64_t spin_ns;        /* its thread's: how long it looks before sleeping */
} ProxyHaltWaiter;

/* With the BQL: the links whose notifications a halted vCPU receives */
static GPtrArray *halt_links;
/* ... and a count of their changes, for a vCPU that let go of the BQL */
static unsigned halt_links_gen;
/*
 * With the BQL: the one vCPU that waits on them. An interrupt wakes it and
 * the main loop, not every halted vCPU; the others sleep as without us.
 */
static CPUState *halt_links_waiter;
/* With the BQL: their notifications counted, and when that count last moved */
static uint32_t halt_links_notified;
static int64_t halt_links_active_ns;

/* By cpu_index; each is set once, by its vCPU thread */
static ProxyHaltWaiter **halt_waiters;
static unsigned nr_halt_waiters;

static ProxyHaltWaiter *proxy_halt_waiter(CPUState *cpu)
{
    ProxyHaltWaiter *w;
    int fd;

    if (cpu->cpu_index < 0 || cpu->cpu_index >= nr_halt_waiters) {
        return NULL;
    }
    w = qatomic_load_acquire(&halt_waiters[cpu->cpu_index]);
    if (w || !qemu_cpu_is_self(cpu)) {
        return w;
    }
    fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) {
        return NULL;    /* the halt condition does the job, as without us */
    }
    w = g_new0(ProxyHaltWaiter, 1);
    w->wake_fd = fd;
    w->spin_ns = PROXY_HALT_SPIN_START_NS;
    qatomic_store_release(&halt_waiters[cpu->cpu_index], w);
    return w;
}

/* With the BQL: whether the links' devices interrupted the guest lately */
static bool proxy_halt_links_active(void)
{
    uint32_t notified = 0;
    int64_t now = get_clock();

    for (unsigned i = 0; i < halt_links->len; i++) {
        ProxyLink *link = g_ptr_array_index(halt_links, i);

        notified += qatomic_read(&link->notify_count);
    }
    if (notified != halt_links_notified) {
        halt_links_notified = notified;
        halt_links_active_ns = now;
    }
    return now - halt_links_active_ns <= PROXY_HALT_WAIT_ACTIVE_NS;
}

/*
 * Without the BQL: wait until one of @pfd (the kick, then the links) can be
 * read, looking for up to @w's window first. Returns what poll() returned.
 */
static int proxy_halt_poll(CPUState *cpu, ProxyHaltWaiter *w,
                           struct pollfd *pfd, unsigned nfds)
{
    int64_t start = get_clock(), now = start;
    int ret;

    do {
        ret = poll(pfd, nfds, 0);
        if (ret) {
            trace_proxy_halt_spin(cpu->cpu_index, now - start, w->spin_ns);
            return ret;
        }
        sched_yield();
        now = get_clock();
    } while (now - start < w->spin_ns);

    ret = poll(pfd, nfds, -1);
    now = get_clock();
    if (now - start > PROXY_HALT_SPIN_MAX_NS) {
        w->spin_ns = MAX(w->spin_ns / 2, PROXY_HALT_SPIN_MIN_NS);
    } else {
        w->spin_ns = MIN(w->spin_ns * 2, PROXY_HALT_SPIN_MAX_NS);
    }
    trace_proxy_halt_slept(cpu->cpu_index, now - start, w->spin_ns);
    return ret;
}

/*
 * With the BQL, for an idle vCPU: wait until its state changes or a link
 * has something to read, and take what came. False to leave the wait to
 * the halt condition.
 */
static bool proxy_halt_wait(CPUState *cpu)
{
    struct pollfd pfd[PROXY_HALT_WAIT_MAX_LINKS + 1];
    ProxyLink *links[PROXY_HALT_WAIT_MAX_LINKS];
    /* the rings through which the remotes learnt that we read their sockets */
    MPQemuRing *told[PROXY_HALT_WAIT_MAX_LINKS] = { NULL };
    unsigned n = halt_links->len, gen = halt_links_gen;
    ProxyHaltWaiter *w;
    uint64_t count;

    if (!n || n > PROXY_HALT_WAIT_MAX_LINKS || !cpu->halted ||
        cpu_is_stopped(cpu) || halt_links_waiter ||
        !proxy_halt_links_active()) {
        return false;
    }
    w = proxy_halt_waiter(cpu);
    if (!w) {
        return false;
    }
    pfd[0] = (struct pollfd) { .fd = w->wake_fd, .events = POLLIN };
    for (unsigned i = 0; i < n; i++) {
        links[i] = g_ptr_array_index(halt_links, i);
        pfd[i + 1] = (struct pollfd) { .fd = links[i]->fd, .events = POLLIN };
    }

    /* Pairs with proxy_halt_kick(): a change after this check kicks us */
    qatomic_set_mb(&w->waiting, true);
    if (cpu_thread_is_idle(cpu)) {
        trace_proxy_halt_wait(cpu->cpu_index, n);
        halt_links_waiter = cpu;
        /*
         * What arrives is ours: the main loop sleeps on. A remote that
         * signals the main loop learns so from its ring, for the others
         * the main loop stops watching their sockets.
         */
        for (unsigned i = 0; i < n; i++) {
            told[i] = proxy_ring_socket_reader_begin(links[i]);
            if (!told[i]) {
                proxy_link_watch_suspend(links[i]);
            }
        }
        bql_unlock();
        if (proxy_halt_poll(cpu, w, pfd, n + 1) < 0) {
            pfd[0].revents = 0;
            for (unsigned i = 0; i < n; i++) {
                pfd[i + 1].revents = 0;
            }
        }
        bql_lock();
        halt_links_waiter = NULL;
        trace_proxy_halt_woken(cpu->cpu_index, !!pfd[0].revents);
    }
    qatomic_set(&w->waiting, false);
    /* a kick that comes later only makes the next wait look once more */
    if (pfd[0].revents && eventfd_read(w->wake_fd, &count) < 0) {
        /* EAGAIN: another read took it */
    }

    /*
     * Links that came or went meanwhile are the main loop's to read; a link
     * still there that learnt we read it may have sent something after we
     * looked, which nobody told the main loop of: read it now.
     */
    for (unsigned i = 0; i < n; i++) {
        bool present = gen == halt_links_gen ||
                       g_ptr_array_find(halt_links, links[i], NULL);

        if (!present) {
            continue;
        }
        if (told[i]) {
            proxy_ring_socket_reader_end(links[i], told[i]);
        }
        if (told[i] || (pfd[i + 1].revents && gen == halt_links_gen)) {
            trace_proxy_halt_wake(cpu->cpu_index, i);
            if (!proxy_link_poll_notifications(links[i], false) && told[i]) {
                /* the vCPU that holds it may not read it: the main loop will */
                proxy_ring_signal_main_loop(links[i]);
            }
        }
    }
    /* ... and what came since, or was left, the main loop's */
    proxy_link_watch_resume_all();
    return true;
}

/* From any thread: wake @cpu if it waits in proxy_halt_wait() */
static void proxy_halt_kick(CPUState *cpu)
{
    ProxyHaltWaiter *w;

    if (cpu->cpu_index < 0 || cpu->cpu_index >= nr_halt_waiters) {
        return;
    }
    w = qatomic_load_acquire(&halt_waiters[cpu->cpu_index]);
    if (!w) {
        return;
    }
    /* Pairs with proxy_halt_wait(): the change that kicks is visible */
    smp_mb();
    if (qatomic_read(&w->waiting) && eventfd_write(w->wake_fd, 1) < 0) {
        /* the counter is full: a wake-up is pending anyway */
    }
}

/* With the BQL: vCPUs waiting on the links they saw look again */
static void proxy_halt_wait_kick_all(void)
{
    CPUState *cpu;

    CPU_FOREACH(cpu) {
        proxy_halt_kick(cpu);
    }
}

static const CPUHaltWaitOps proxy_halt_wait_ops = {
    .wait = proxy_halt_wait,
    .kick = proxy_halt_kick,
};

/* With the BQL: let halted vCPUs receive @link's notifications */
void proxy_halt_wait_add(ProxyLink *link)
{
    assert(bql_locked() && link->fd >= 0);
    if (halt_links && g_ptr_array_find(halt_links, link, NULL)) {
        return;
    }
    if (!halt_links) {
        MachineState *ms = MACHINE(qdev_get_machine());

        halt_links = g_ptr_array_new();
        nr_halt_waiters = ms->smp.max_cpus;
        halt_waiters = g_new0(ProxyHaltWaiter *, nr_halt_waiters);
        cpus_set_halt_wait_ops(&proxy_halt_wait_ops);
    }
    g_ptr_array_add(halt_links, link);
    halt_links_gen++;
    proxy_halt_wait_kick_all();
}

/*
 * With the BQL, when @link's socket closes: before, or while the BQL is
 * still held since (a waiting vCPU needs it to look at the link again)
 */
void proxy_halt_wait_remove(ProxyLink *link)
{
    assert(bql_locked());
    if (halt_links && g_ptr_array_remove(halt_links, link)) {
        halt_links_gen++;
        proxy_halt_wait_kick_all();
    }
}
