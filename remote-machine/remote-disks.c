/*
 * Disk images a remote device lets go of when its VM migrates away, and
 * takes back only when that VM runs here again: one process may serve others.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "block/block.h"
#include "block/block_int-common.h"
#include "block/graph-lock.h"
#include "system/block-backend.h"
#include "remote.h"
#include "trace.h"

/* A block node a device released (by name: it may be deleted meanwhile) */
typedef struct RemoteReleasedDisk {
    char *device_path;      /* the PCI device's QOM path */
    char *node_name;
} RemoteReleasedDisk;

static GSList *remote_released_disks;

static bool remote_disks_device_contains(DeviceState *top, DeviceState *dev)
{
    for (; dev; dev = dev->parent_bus ? dev->parent_bus->parent : NULL) {
        if (dev == top) {
            return true;
        }
    }
    return false;
}

/*
 * Let go of the images of @pdev and the devices below it (a scsi-hd behind
 * an LSI): another process, the destination's, takes them over.
 */
bool remote_disks_release(PCIDevice *pdev, Error **errp)
{
    g_autofree char *path = object_get_canonical_path(OBJECT(pdev));
    BlockBackend *blk;

    for (blk = blk_all_next(NULL); blk; blk = blk_all_next(blk)) {
        BlockDriverState *bs = blk_bs(blk);
        RemoteReleasedDisk *disk;

        if (!bs ||
            !remote_disks_device_contains(DEVICE(pdev),
                                          blk_get_attached_dev(blk))) {
            continue;
        }
        if (bdrv_inactivate(bs, errp) < 0) {
            error_prepend(errp, "cannot release disk image %s of %s: ",
                          bdrv_get_node_name(bs), pdev->name);
            return false;
        }
        trace_remote_disks_released(pdev->name, bdrv_get_node_name(bs));
        disk = g_new0(RemoteReleasedDisk, 1);
        disk->device_path = g_strdup(path);
        disk->node_name = g_strdup(bdrv_get_node_name(bs));
        remote_released_disks = g_slist_prepend(remote_released_disks, disk);
    }
    return true;
}

static int remote_disks_activate_node(BlockDriverState *bs, Error **errp)
{
    GRAPH_RDLOCK_GUARD_MAINLOOP();

    return bdrv_activate(bs, errp);
}

/* The VM of @pdev runs here again (its migration failed): take its images */
bool remote_disks_take(PCIDevice *pdev, Error **errp)
{
    g_autofree char *path = object_get_canonical_path(OBJECT(pdev));
    GSList *l = remote_released_disks;

    while (l) {
        RemoteReleasedDisk *disk = l->data;
        GSList *next = l->next;

        if (!strcmp(disk->device_path, path)) {
            BlockDriverState *bs = bdrv_find_node(disk->node_name);

            if (bs && remote_disks_activate_node(bs, errp) < 0) {
                error_prepend(errp, "cannot take disk image %s of %s back: ",
                              disk->node_name, pdev->name);
                return false;
            }
            trace_remote_disks_taken(pdev->name, disk->node_name);
            g_free(disk->device_path);
            g_free(disk->node_name);
            g_free(disk);
            remote_released_disks = g_slist_delete_link(remote_released_disks,
                                                        l);
        }
        l = next;
    }
    return true;
}

static bool GRAPH_RDLOCK remote_disks_node_below(BlockDriverState *top,
                                                 BlockDriverState *bs)
{
    BdrvChild *child;

    if (top == bs) {
        return true;
    }
    QLIST_FOREACH(child, &top->children, next) {
        if (remote_disks_node_below(child->bs, bs)) {
            return true;
        }
    }
    return false;
}

static bool GRAPH_RDLOCK remote_disks_node_released(BlockDriverState *bs)
{
    for (GSList *l = remote_released_disks; l; l = l->next) {
        RemoteReleasedDisk *disk = l->data;
        BlockDriverState *released = bdrv_find_node(disk->node_name);

        if (released && remote_disks_node_below(released, bs)) {
            return true;
        }
    }
    return false;
}

/*
 * The process's devices run: take every image that is not held released
 * for a VM that migrated away (all of them in a process started for a
 * migration's destination, which opened them without taking them).
 */
bool remote_disks_activate(Error **errp)
{
    ERRP_GUARD();
    BlockDriverState *bs;
    BdrvNextIterator it;

    if (!remote_released_disks) {
        bdrv_activate_all(errp);
        return !*errp;
    }
    GRAPH_RDLOCK_GUARD_MAINLOOP();
    for (bs = bdrv_first(&it); bs; bs = bdrv_next(&it)) {
        if (!remote_disks_node_released(bs) && bdrv_activate(bs, errp) < 0) {
            bdrv_next_cleanup(&it);
            return false;
        }
    }
    return true;
}
