/*
 * Dirty tracking of the guest RAM a remote device writes by DMA, which the
 * main QEMU cannot see: harvested on each of the proxy's SYNC requests.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/error-report.h"
#include "exec/memory.h"
#include "remote.h"
#include "trace.h"

/* Devices of this process whose proxies track their DMA now */
static unsigned remote_dirty_users;

/*
 * Every write to guest RAM in this process goes through the memory API
 * (address_space_write, the unmap of a DMA mapping, the caches of virtio
 * rings), which marks the pages of RAM blocks that are migratable in the
 * migration bitmap while global dirty logging is on.
 */
static bool remote_dirty_start(RemoteMemory *mem, Error **errp)
{
    if (mem->dirty_logging) {
        return true;
    }
    if (remote_dirty_users == 0 &&
        !memory_global_dirty_log_start(GLOBAL_DIRTY_MIGRATION, errp)) {
        return false;
    }
    remote_dirty_users++;
    mem->dirty_logging = true;
    /* what was written before counts as sent: the first pass sends all */
    for (guint i = 0; i < mem->current->len; i++) {
        MemoryRegion *mr = g_ptr_array_index(mem->current, i);

        g_free(memory_region_snapshot_and_clear_dirty(
                   mr, 0, memory_region_size(mr), DIRTY_MEMORY_MIGRATION));
    }
    trace_remote_dirty_log(remote_memory_name(mem), true);
    return true;
}

void remote_dirty_stop(RemoteMemory *mem)
{
    if (!mem->dirty_logging) {
        return;
    }
    mem->dirty_logging = false;
    if (--remote_dirty_users == 0) {
        memory_global_dirty_log_stop(GLOBAL_DIRTY_MIGRATION);
    }
    trace_remote_dirty_log(remote_memory_name(mem), false);
}

/* The bitmap of the current map: what was written, now forgotten */
static uint64_t *remote_dirty_harvest(RemoteMemory *mem, size_t *bytes)
{
    size_t words = 0, w = 0;
    uint64_t *bitmap;

    for (guint i = 0; i < mem->current->len; i++) {
        MemoryRegion *mr = g_ptr_array_index(mem->current, i);

        words += DIV_ROUND_UP(memory_region_size(mr) / MPQEMU_DIRTY_PAGE_SIZE,
                              64);
    }
    bitmap = g_new0(uint64_t, words ?: 1);
    for (guint i = 0; i < mem->current->len; i++) {
        MemoryRegion *mr = g_ptr_array_index(mem->current, i);
        uint64_t size = memory_region_size(mr);
        uint64_t pages = size / MPQEMU_DIRTY_PAGE_SIZE;
        DirtyBitmapSnapshot *snap;

        snap = memory_region_snapshot_and_clear_dirty(mr, 0, size,
                                                      DIRTY_MEMORY_MIGRATION);
        for (uint64_t p = 0; p < pages; p++) {
            if (memory_region_snapshot_get_dirty(mr, snap,
                                                 p * MPQEMU_DIRTY_PAGE_SIZE,
                                                 MPQEMU_DIRTY_PAGE_SIZE)) {
                bitmap[w + p / 64] |= 1ULL << (p % 64);
            }
        }
        g_free(snap);
        w += DIV_ROUND_UP(pages, 64);
    }
    for (size_t i = 0; i < words; i++) {
        bitmap[i] = cpu_to_le64(bitmap[i]);
    }
    *bytes = words * sizeof(uint64_t);
    return bitmap;
}

static bool remote_dirty_sync(RemoteMemory *mem, int fd, uint64_t *size,
                              Error **errp)
{
    g_autofree uint64_t *bitmap = NULL;
    size_t bytes;
    uint64_t dirty = 0;

    if (!mem->dirty_logging) {
        error_setg(errp, "SYNC without START");
        return false;
    }
    bitmap = remote_dirty_harvest(mem, &bytes);
    if (!mpqemu_file_write(fd, bitmap, bytes, errp)) {
        error_prepend(errp, "dirty bitmap: ");
        return false;
    }
    for (size_t i = 0; i < bytes / sizeof(uint64_t); i++) {
        dirty += ctpop64(bitmap[i]);
    }
    trace_remote_dirty_sync(remote_memory_name(mem), mem->current->len, dirty);
    *size = bytes;
    return true;
}

void remote_dirty_handle(RemoteMemory *mem, MPQemuMsg *req, MPQemuMsg *reply)
{
    uint32_t op = le32_to_cpu(req->u.dirty_log.op);
    Error *err = NULL;
    uint64_t size = 0;
    bool ok;

    switch (op) {
    case MPQEMU_DIRTY_START:
        ok = remote_dirty_start(mem, &err);
        break;
    case MPQEMU_DIRTY_STOP:
        remote_dirty_stop(mem);
        ok = true;
        break;
    case MPQEMU_DIRTY_SYNC:
        ok = remote_dirty_sync(mem, req->fds[0], &size, &err);
        break;
    default:
        mpqemu_msg_init_error(reply, req, -EINVAL, "unknown DIRTY_LOG op %u",
                              op);
        return;
    }
    if (!ok) {
        mpqemu_msg_init_error(reply, req, -EINVAL, "%s",
                              error_get_pretty(err));
        error_free(err);
        return;
    }
    mpqemu_msg_init_reply(reply, req, sizeof(MPQemuDirtyLog));
    reply->u.dirty_log.op = cpu_to_le32(op);
    reply->u.dirty_log.nr_sections = cpu_to_le32(mem->current->len);
    reply->u.dirty_log.size = cpu_to_le64(size);
}
