/*
 * A proxied device runs only while its guest runs: the VM's run state is
 * passed on to the remote process, where stop quiesces the device.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/bswap.h"
#include "system/runstate.h"
#include "proxy.h"
#include "trace.h"

/*
 * Tell the remote whether the VM runs. When this returns for a stopped VM,
 * the device has finished its I/O: no DMA, no interrupt until it runs.
 */
bool proxy_runstate_send(PCIProxyDev *dev, bool running, Error **errp)
{
    MPQemuMsg req, reply;

    if (!(dev->features & MPQEMU_FEATURE_RUN_STATE)) {
        return true;
    }
    trace_proxy_run_state(dev->remote_devid, running);
    mpqemu_msg_init(&req, MPQEMU_CMD_RUN_STATE, 0, 0, sizeof(MPQemuRunState));
    req.u.run_state.running = cpu_to_le32(running);
    return proxy_link_call(&dev->link, &req, &reply, errp);
}

static void proxy_runstate_changed(void *opaque, bool running, RunState state)
{
    PCIProxyDev *dev = opaque;
    Error *err = NULL;

    if (!proxy_is_connected(dev)) {
        return;     /* a failed device is quiet; reattach tells it */
    }
    if (!proxy_runstate_send(dev, running, &err)) {
        if (dev->failed) {
            error_free(err);    /* reported as the device's failure */
        } else {
            warn_report_err(err);
        }
    }
}

void proxy_runstate_init(PCIProxyDev *dev)
{
    dev->runstate_entry =
        qemu_add_vm_change_state_handler(proxy_runstate_changed, dev);
}

void proxy_runstate_cleanup(PCIProxyDev *dev)
{
    if (dev->runstate_entry) {
        qemu_del_vm_change_state_handler(dev->runstate_entry);
        dev->runstate_entry = NULL;
    }
}
