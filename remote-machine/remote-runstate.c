/*
 * Run state of a remote process: its devices run only while the VMs of
 * the proxies connected to it run. A proxy whose VM stops holds it stopped.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/main-loop.h"
#include "system/runstate.h"
#include "system/runstate-action.h"
#include "remote.h"
#include "trace.h"

static unsigned remote_stop_holds;
/* The process was running when the first hold stopped it */
static bool remote_stopped_by_proxies;
/* Its main loop has ended: it is closing its block nodes, then its objects */
static bool remote_exiting;

static void remote_runstate_shutdown(Notifier *notifier, void *data)
{
    remote_exiting = shutdown_action != SHUTDOWN_ACTION_PAUSE;
}

static Notifier remote_runstate_shutdown_notifier = {
    .notify = remote_runstate_shutdown,
};

void remote_runstate_init(void)
{
    qemu_register_shutdown_notifier(&remote_runstate_shutdown_notifier);
}

/*
 * With the BQL: a proxy's VM stopped. vm_stop() drains the devices' I/O
 * before it returns, so once the proxy has its answer, no DMA and no
 * interrupt follows until the VM runs again.
 */
void remote_runstate_hold(void)
{
    assert(bql_locked());
    trace_remote_runstate_hold(remote_stop_holds + 1);
    if (remote_stop_holds++ == 0 && runstate_is_running()) {
        remote_stopped_by_proxies = true;
        vm_stop(RUN_STATE_PAUSED);
    }
}

/*
 * Run the devices. Their disk images may not have been taken yet (this
 * process was started with -incoming for a migration's destination): take
 * them first, or stay stopped, since a device must not write to an image
 * another process may still write. Those of a device whose VM migrated
 * away stay with the destination (remote-disks.c).
 */
static bool remote_runstate_resume(Error **errp)
{
    ERRP_GUARD();

    /*
     * A proxy that goes as the process exits (its remote object is
     * finalized) resumes nothing: the block nodes are closed by then.
     */
    if (remote_exiting) {
        return true;
    }
    trace_remote_runstate_resume(runstate_check(RUN_STATE_INMIGRATE));
    if (!remote_disks_activate(errp)) {
        error_prepend(errp, "the remote process stays stopped: ");
        return false;
    }
    vm_start();
    return true;
}

/* With the BQL: a proxy's VM runs again, or the proxy has gone */
bool remote_runstate_release(Error **errp)
{
    assert(bql_locked() && remote_stop_holds);
    trace_remote_runstate_release(remote_stop_holds - 1);
    if (--remote_stop_holds) {
        return true;
    }
    if (runstate_check(RUN_STATE_INMIGRATE)) {
        return remote_runstate_resume(errp);
    }
    if (remote_stopped_by_proxies) {
        remote_stopped_by_proxies = false;
        /* unless someone stopped it otherwise meanwhile (its monitor) */
        if (runstate_check(RUN_STATE_PAUSED)) {
            return remote_runstate_resume(errp);
        }
    }
    return true;
}

/*
 * With the BQL: a proxy that holds nothing says its VM runs. A process
 * started for a migration's destination waits for that to start.
 */
bool remote_runstate_proxy_runs(Error **errp)
{
    assert(bql_locked());
    if (remote_stop_holds || !runstate_check(RUN_STATE_INMIGRATE)) {
        return true;
    }
    return remote_runstate_resume(errp);
}
