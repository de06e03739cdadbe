/*
 * Run state of a remote process: its devices run only while the VMs of
 * the proxies connected to it run. A proxy whose VM stops holds it stopped.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/main-loop.h"
#include "system/runstate.h"
#include "remote.h"
#include "trace.h"

static unsigned remote_stop_holds;
/* The process was running when the first hold stopped it */
static bool remote_stopped_by_proxies;

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

/* With the BQL: a proxy's VM runs again, or the proxy has gone */
void remote_runstate_release(void)
{
    assert(bql_locked() && remote_stop_holds);
    trace_remote_runstate_release(remote_stop_holds - 1);
    if (--remote_stop_holds == 0 && remote_stopped_by_proxies) {
        remote_stopped_by_proxies = false;
        /* unless someone stopped it otherwise meanwhile (its monitor) */
        if (runstate_check(RUN_STATE_PAUSED)) {
            vm_start();
        }
    }
}
