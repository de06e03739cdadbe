/*
 * Dirty tracking of the guest RAM the remote device writes by DMA: while
 * the VM migrates, each sync of the dirty log asks the remote what it wrote.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/memfd.h"
#include "qemu/bswap.h"
#include "exec/memory.h"
#include "proxy.h"
#include "trace.h"

static void proxy_dirty_forget_stale(ProxyMemory *mem)
{
    proxy_memory_unref_sections(mem->dirty_stale);
}

/*
 * The remote tracks the pages its device writes from now on. Called by the
 * migration's start (memory_global_dirty_log_start) and, when logging is
 * already on, by the proxy's connection.
 */
bool proxy_dirty_start(ProxyMemory *mem, Error **errp)
{
    MPQemuMsg req, reply;

    if (mem->dirty_logging) {
        return true;
    }
    mem->dirty_lost = false;
    if (!mem->dirty_supported) {
        error_setg(errp, "x-pci-proxy-dev %s: its remote process cannot "
                   "track the guest RAM the device writes", mem->owner_id);
        return false;
    }
    mem->dirty_fd = qemu_memfd_create("mpqemu-dirty-bitmap", 0, false, 0, 0,
                                      errp);
    if (mem->dirty_fd < 0) {
        return false;
    }
    mpqemu_msg_init(&req, MPQEMU_CMD_DIRTY_LOG, 0, 0, sizeof(MPQemuDirtyLog));
    req.u.dirty_log.op = cpu_to_le32(MPQEMU_DIRTY_START);
    if (!proxy_link_call(mem->link, &req, &reply, errp)) {
        error_prepend(errp, "x-pci-proxy-dev %s cannot track what its "
                      "device writes to guest RAM: ", mem->owner_id);
        close(mem->dirty_fd);
        mem->dirty_fd = -1;
        return false;
    }
    mem->dirty_logging = true;
    trace_proxy_dirty_log(mem->owner_id, true);
    return true;
}

void proxy_dirty_stop(ProxyMemory *mem)
{
    MPQemuMsg req, reply;
    Error *err = NULL;

    if (!mem->dirty_logging) {
        return;
    }
    mem->dirty_logging = false;
    proxy_dirty_forget_stale(mem);
    close(mem->dirty_fd);
    mem->dirty_fd = -1;
    trace_proxy_dirty_log(mem->owner_id, false);
    if (mem->link->dead) {
        return;
    }
    mpqemu_msg_init(&req, MPQEMU_CMD_DIRTY_LOG, 0, 0, sizeof(MPQemuDirtyLog));
    req.u.dirty_log.op = cpu_to_le32(MPQEMU_DIRTY_STOP);
    if (!proxy_link_call(mem->link, &req, &reply, &err)) {
        /* the remote merely tracks for nothing */
        warn_report_err(err);
    }
}

/* The map changes under the log: what the remote wrote there is resent */
void proxy_dirty_map_changed(ProxyMemory *mem, GArray *old)
{
    if (!mem->dirty_logging) {
        return;
    }
    for (guint i = 0; i < old->len; i++) {
        ProxyMemorySection *s = &g_array_index(old, ProxyMemorySection, i);

        memory_region_ref(s->mr);
        g_array_append_val(mem->dirty_stale, *s);
    }
}

static void proxy_dirty_set(ProxyMemorySection *s, uint64_t first,
                            uint64_t pages)
{
    memory_region_set_dirty(s->mr, s->mr_offset +
                            first * MPQEMU_DIRTY_PAGE_SIZE,
                            pages * MPQEMU_DIRTY_PAGE_SIZE);
}

/* Marks the runs of pages set in @bitmap (host order) dirty in @s */
static uint64_t proxy_dirty_merge(ProxyMemorySection *s,
                                  const uint64_t *bitmap)
{
    uint64_t pages = s->size / MPQEMU_DIRTY_PAGE_SIZE;
    uint64_t dirty = 0;
    uint64_t p = 0;

    while (p < pages) {
        uint64_t start;

        if (!(bitmap[p / 64] >> (p % 64) & 1)) {
            p++;
            continue;
        }
        start = p;
        while (p < pages && (bitmap[p / 64] >> (p % 64) & 1)) {
            p++;
        }
        proxy_dirty_set(s, start, p - start);
        dirty += p - start;
    }
    return dirty;
}

static bool proxy_dirty_fetch(ProxyMemory *mem, uint64_t *dirty, Error **errp)
{
    GArray *map = mem->current;
    g_autofree uint64_t *bitmap = NULL;
    MPQemuMsg req, reply;
    size_t words = 0, w = 0;

    for (guint i = 0; i < map->len; i++) {
        ProxyMemorySection *s = &g_array_index(map, ProxyMemorySection, i);

        words += DIV_ROUND_UP(s->size / MPQEMU_DIRTY_PAGE_SIZE, 64);
    }
    mpqemu_msg_init(&req, MPQEMU_CMD_DIRTY_LOG, 0, 0, sizeof(MPQemuDirtyLog));
    req.u.dirty_log.op = cpu_to_le32(MPQEMU_DIRTY_SYNC);
    req.hdr.num_fds = 1;
    req.fds[0] = mem->dirty_fd;
    if (!proxy_link_call(mem->link, &req, &reply, errp)) {
        return false;
    }
    if (le32_to_cpu(reply.u.dirty_log.nr_sections) != map->len ||
        le64_to_cpu(reply.u.dirty_log.size) != words * sizeof(uint64_t)) {
        error_setg(errp, "the remote reports a dirty bitmap of %u sections "
                   "and %" PRIu64 " bytes; its memory map has %u sections "
                   "and takes %zu", le32_to_cpu(reply.u.dirty_log.nr_sections),
                   (uint64_t)le64_to_cpu(reply.u.dirty_log.size), map->len,
                   words * sizeof(uint64_t));
        return false;
    }
    bitmap = g_new(uint64_t, words ?: 1);
    if (!mpqemu_file_read(mem->dirty_fd, bitmap, words * sizeof(uint64_t),
                          errp)) {
        error_prepend(errp, "dirty bitmap: ");
        return false;
    }
    for (size_t i = 0; i < words; i++) {
        bitmap[i] = le64_to_cpu(bitmap[i]);
    }
    for (guint i = 0; i < map->len; i++) {
        ProxyMemorySection *s = &g_array_index(map, ProxyMemorySection, i);

        *dirty += proxy_dirty_merge(s, bitmap + w);
        w += DIV_ROUND_UP(s->size / MPQEMU_DIRTY_PAGE_SIZE, 64);
    }
    return true;
}

/*
 * Marks what the remote wrote since the last sync dirty in the main QEMU's
 * log, and all of the RAM that left the map since logging started (what
 * the remote wrote there before it let go is not known any more). If the
 * remote cannot say, everything it could have written is marked, and the
 * migration fails.
 */
void proxy_dirty_sync(ProxyMemory *mem, bool last_stage)
{
    Error *err = NULL;
    uint64_t dirty = 0;

    if (!mem->dirty_logging) {
        return;
    }
    for (guint i = 0; i < mem->dirty_stale->len; i++) {
        ProxyMemorySection *s = &g_array_index(mem->dirty_stale,
                                               ProxyMemorySection, i);

        proxy_dirty_set(s, 0, s->size / MPQEMU_DIRTY_PAGE_SIZE);
    }
    if (!mem->dirty_lost && proxy_dirty_fetch(mem, &dirty, &err)) {
        trace_proxy_dirty_sync(mem->owner_id, last_stage, dirty);
        return;
    }
    if (err) {
        error_report("x-pci-proxy-dev %s: what the device wrote to guest "
                     "RAM is not known, so the VM cannot migrate: %s",
                     mem->owner_id, error_get_pretty(err));
        error_free(err);
    }
    mem->dirty_lost = true;
    proxy_migration_abort(mem->owner_id, "what the device wrote to guest RAM "
                          "is not known");
    for (guint i = 0; i < mem->current->len; i++) {
        ProxyMemorySection *s = &g_array_index(mem->current,
                                               ProxyMemorySection, i);

        proxy_dirty_set(s, 0, s->size / MPQEMU_DIRTY_PAGE_SIZE);
    }
}
