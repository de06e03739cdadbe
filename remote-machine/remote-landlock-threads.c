/*
 * Every thread of a sandboxed remote process enters the Landlock domain, not
 * only the one that sets the sandbox up: Landlock restricts its caller alone.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/rcu.h"
#include "qemu/thread.h"
#include "system/system.h"
#include "qom/object.h"
#include "block/aio.h"
#include "block/aio-wait.h"
#include "block/thread-pool.h"
#include "system/iothread.h"
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include "remote.h"
#include "trace.h"

/*
 * How long the thread-pool workers that started before the sandbox may take
 * to leave. They leave as soon as they are woken, so this is only a bound.
 */
#define REMOTE_LANDLOCK_LEAVE_MS 5000

typedef struct RemoteLandlockThreads {
    int ruleset;
    QemuMutex lock;
    GHashTable *inside;     /* the thread ids in the domain */
    int error;              /* errno of the first thread that could not enter */
    struct rcu_head rcu;
} RemoteLandlockThreads;

/* The calling thread enters the domain (no_new_privs is per thread too) */
static void remote_landlock_enter_here(RemoteLandlockThreads *s)
{
    int tid = qemu_get_thread_id();
    int error = 0;

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        syscall(__NR_landlock_restrict_self, s->ruleset, 0) < 0) {
        error = errno;
    }
    trace_remote_landlock_thread(tid, error);
    qemu_mutex_lock(&s->lock);
    if (error) {
        s->error = s->error ?: error;
    } else {
        g_hash_table_add(s->inside, GINT_TO_POINTER(tid));
    }
    qemu_mutex_unlock(&s->lock);
}

static void remote_landlock_enter_rcu(struct rcu_head *head)
{
    remote_landlock_enter_here(container_of(head, RemoteLandlockThreads, rcu));
}

static void remote_landlock_enter_bh(void *opaque)
{
    remote_landlock_enter_here(opaque);
}

/* The process's IOThreads, the monitor's (in the internal root) included */
static int remote_landlock_find_iothread(Object *obj, void *opaque)
{
    IOThread *iothread = (IOThread *)object_dynamic_cast(obj, TYPE_IOTHREAD);

    if (iothread) {
        g_ptr_array_add(opaque, iothread);
    }
    return 0;
}

static GPtrArray *remote_landlock_iothreads(void)
{
    GPtrArray *iothreads = g_ptr_array_new();

    object_child_foreach_recursive(object_get_root(),
                                   remote_landlock_find_iothread, iothreads);
    object_child_foreach_recursive(object_get_internal_root(),
                                   remote_landlock_find_iothread, iothreads);
    return iothreads;
}

/*
 * A thread pool's size, while its workers leave: a worker of a pool with no
 * room leaves as soon as it wakes, and resizing wakes them. Nothing submits
 * work meanwhile: no proxy is served yet. Later workers are started by
 * threads in the domain, so they are in it.
 */
typedef struct RemoteLandlockPool {
    AioContext *ctx;
    int min;
    int max;
} RemoteLandlockPool;

static void remote_landlock_size_pool(AioContext *ctx, int min, int max)
{
    ctx->thread_pool_min = min;
    ctx->thread_pool_max = max;
    thread_pool_update_params(ctx->thread_pool, ctx);
}

static void remote_landlock_empty_pool(GArray *pools, AioContext *ctx)
{
    RemoteLandlockPool pool = {
        .ctx = ctx,
        .min = ctx->thread_pool_min,
        .max = ctx->thread_pool_max,
    };

    if (ctx->thread_pool) {
        g_array_append_val(pools, pool);
        remote_landlock_size_pool(ctx, 0, 0);
    }
}

static void remote_landlock_refill_pools(GArray *pools)
{
    for (guint i = 0; i < pools->len; i++) {
        RemoteLandlockPool *pool = &g_array_index(pools, RemoteLandlockPool, i);

        remote_landlock_size_pool(pool->ctx, pool->min, pool->max);
    }
}

/* A thread of the process, listed in @tasks, that is not in the domain */
static int remote_landlock_first_outside(RemoteLandlockThreads *s, DIR *tasks)
{
    struct dirent *entry;
    int tid;

    rewinddir(tasks);
    while ((entry = readdir(tasks))) {
        if (qemu_strtoi(entry->d_name, NULL, 10, &tid) == 0 &&
            !g_hash_table_contains(s->inside, GINT_TO_POINTER(tid))) {
            return tid;
        }
    }
    return 0;
}

/* Wait until every thread is in the domain: the workers have left */
static bool remote_landlock_all_inside(RemoteLandlockThreads *s, DIR *tasks,
                                       Error **errp)
{
    int64_t deadline = g_get_monotonic_time() +
                       REMOTE_LANDLOCK_LEAVE_MS * G_TIME_SPAN_MILLISECOND;
    int outside;

    while ((outside = remote_landlock_first_outside(s, tasks))) {
        if (g_get_monotonic_time() > deadline) {
            error_setg(errp, "thread %d of the process is not in the Landlock "
                       "domain", outside);
            return false;
        }
        g_usleep(1000);
    }
    trace_remote_landlock_all_inside(g_hash_table_size(s->inside));
    return true;
}

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>

/*
 * Each thread is in a Landlock domain of its own, and none may trace
 * another: LeakSanitizer cannot stop the other threads at exit, nor read
 * their stacks. What the RCU thread is freeing then looks leaked. So the
 * check runs here, at exit (the process has cleaned up), once the RCU
 * thread is idle: the callbacks it runs may queue more, hence the rounds.
 * Later exit notifiers free only what is still reachable now.
 */
static void remote_landlock_exit(Notifier *notifier, void *data)
{
    for (int round = 0; round < 4; round++) {
        drain_call_rcu();
    }
    __lsan_do_leak_check();
}

static Notifier remote_landlock_exit_notifier = {
    .notify = remote_landlock_exit,
};
#endif

/*
 * Enforce @ruleset on every thread of the process and the threads they
 * create, and close it. Threads that cannot run code on request (the thread
 * pools' workers) leave instead.
 */
bool remote_landlock_enforce(int ruleset, Error **errp)
{
    RemoteLandlockThreads s = { .ruleset = ruleset };
    g_autoptr(GPtrArray) iothreads = NULL;
    g_autoptr(GArray) pools = NULL;
    DIR *tasks;
    bool ok;

    if (ruleset < 0) {
        return true;
    }
    /* listed while this thread may still open it */
    tasks = opendir("/proc/self/task");
    if (!tasks) {
        error_setg_errno(errp, errno, "cannot list the threads of the process");
        close(ruleset);
        return false;
    }
    qemu_mutex_init(&s.lock);
    s.inside = g_hash_table_new(NULL, NULL);

    remote_landlock_enter_here(&s);
    call_rcu1(&s.rcu, remote_landlock_enter_rcu);
    drain_call_rcu();
    iothreads = remote_landlock_iothreads();
    for (guint i = 0; i < iothreads->len; i++) {
        aio_wait_bh_oneshot(iothread_get_aio_context(iothreads->pdata[i]),
                            remote_landlock_enter_bh, &s);
    }

    pools = g_array_new(false, false, sizeof(RemoteLandlockPool));
    remote_landlock_empty_pool(pools, qemu_get_aio_context());
    for (guint i = 0; i < iothreads->len; i++) {
        remote_landlock_empty_pool(pools,
                                   iothread_get_aio_context(iothreads->pdata[i]));
    }
    if (s.error) {
        error_setg_errno(errp, s.error, "cannot enforce the Landlock ruleset");
        ok = false;
    } else {
        ok = remote_landlock_all_inside(&s, tasks, errp);
    }
    remote_landlock_refill_pools(pools);
#ifdef __SANITIZE_ADDRESS__
    qemu_add_exit_notifier(&remote_landlock_exit_notifier);
#endif

    g_hash_table_destroy(s.inside);
    qemu_mutex_destroy(&s.lock);
    closedir(tasks);
    close(ruleset);
    return ok;
}
