/*
 * Guest RAM for a remote device's DMA: follows the guest memory map with a
 * MemoryListener and sends the remote every shareable RAM section.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "exec/address-spaces.h"
#include "exec/ramblock.h"
#include "system/hostmem.h"
#include "qemu/bswap.h"
#include "proxy.h"
#include "trace.h"

static bool section_is_guest_ram(MemoryRegion *mr)
{
    return object_dynamic_cast(memory_region_owner(mr), TYPE_MEMORY_BACKEND);
}

static void proxy_memory_collect(MemoryListener *listener,
                                 MemoryRegionSection *section)
{
    ProxyMemory *mem = container_of(listener, ProxyMemory, listener);
    MemoryRegion *mr = section->mr;
    uint64_t page = qemu_real_host_page_size();
    ProxyMemorySection s;

    /* compared whole by same_map() */
    memset(&s, 0, sizeof(s));
    if (!memory_region_is_ram(mr) || memory_region_is_ram_device(mr) ||
        mr->readonly) {
        return;
    }
    if (memory_region_get_fd(mr) < 0 || !qemu_ram_is_shared(mr->ram_block)) {
        if (section_is_guest_ram(mr) && !mem->unshareable) {
            mem->unshareable = g_strdup(memory_region_name(mr));
            if (mem->started) {
                /* added at runtime: it cannot be refused any more */
                warn_report("guest RAM '%s' cannot be shared with the remote "
                            "process of x-pci-proxy-dev %s: DMA by that "
                            "device to this memory will fail; use a shared "
                            "memory backend (memory-backend-memfd)",
                            memory_region_name(mr), mem->owner_id);
            }
        }
        trace_proxy_memory_skip(mem->owner_id, memory_region_name(mr),
                                "not backed by a shared descriptor");
        return;
    }

    s.gpa = section->offset_within_address_space;
    s.size = int128_get64(section->size);
    s.offset = mr->ram_block->fd_offset + section->offset_within_region;
    s.fd = memory_region_get_fd(mr);
    s.mr = mr;
    s.mr_offset = section->offset_within_region;
    if ((s.gpa | s.size | s.offset) & (page - 1)) {
        trace_proxy_memory_skip(mem->owner_id, memory_region_name(mr),
                                "not page aligned");
        return;
    }
    memory_region_ref(mr);
    trace_proxy_memory_section(mem->owner_id, s.gpa, s.size, s.offset,
                               memory_region_name(mr));
    g_array_append_val(mem->pending, s);
}

void proxy_memory_unref_sections(GArray *map)
{
    for (guint i = 0; i < map->len; i++) {
        memory_region_unref(g_array_index(map, ProxyMemorySection, i).mr);
    }
    g_array_set_size(map, 0);
}

static void proxy_memory_begin(MemoryListener *listener)
{
    ProxyMemory *mem = container_of(listener, ProxyMemory, listener);

    proxy_memory_unref_sections(mem->pending);
}

static bool proxy_memory_send(ProxyMemory *mem, GArray *map, Error **errp)
{
    unsigned int n = map->len;
    unsigned int i = 0;

    trace_proxy_memory_sync(mem->owner_id, n);
    do {
        unsigned int batch = MIN(n - i, MPQEMU_MAX_SECTIONS);
        MPQemuMsg req, reply;
        uint32_t flags = 0;

        mpqemu_msg_init(&req, MPQEMU_CMD_MEMORY_MAP, 0, 0,
                        offsetof(MPQemuMemoryMap, section) +
                        batch * sizeof(MPQemuMemorySection));
        if (i == 0) {
            flags |= MPQEMU_MEMORY_FIRST;
        }
        if (i + batch == n) {
            flags |= MPQEMU_MEMORY_LAST;
        }
        req.u.memory.flags = cpu_to_le32(flags);
        req.u.memory.nr_sections = cpu_to_le32(batch);
        req.hdr.num_fds = batch;
        for (unsigned int j = 0; j < batch; j++) {
            ProxyMemorySection *s = &g_array_index(map, ProxyMemorySection,
                                                   i + j);

            req.u.memory.section[j] = (MPQemuMemorySection) {
                .gpa = cpu_to_le64(s->gpa),
                .size = cpu_to_le64(s->size),
                .offset = cpu_to_le64(s->offset),
            };
            req.fds[j] = s->fd;
        }
        if (!proxy_link_call(mem->link, &req, &reply, errp)) {
            return false;
        }
        i += batch;
    } while (i < n);
    return true;
}

static bool same_map(GArray *a, GArray *b)
{
    /* an empty GArray may have no data at all: memcmp() takes no NULL */
    return a->len == b->len &&
           (!a->len ||
            !memcmp(a->data, b->data, a->len * sizeof(ProxyMemorySection)));
}

static void proxy_memory_commit(MemoryListener *listener)
{
    ProxyMemory *mem = container_of(listener, ProxyMemory, listener);
    Error *err = NULL;
    GArray *tmp;

    /* Replaying the map at registration is sent by proxy_memory_start() */
    if (!mem->started || same_map(mem->pending, mem->current)) {
        return;
    }
    if (mem->link->fd < 0) {
        return;     /* the proxy already reported the failure */
    }
    if (!proxy_memory_send(mem, mem->pending, &err)) {
        error_report_err(err);
        return;
    }
    proxy_dirty_map_changed(mem, mem->current);
    tmp = mem->current;
    mem->current = mem->pending;
    mem->pending = tmp;
}

/* Dirty logging starts: a migration, or a measurement of the dirty rate */
static bool proxy_memory_log_global_start(MemoryListener *listener,
                                          Error **errp)
{
    ProxyMemory *mem = container_of(listener, ProxyMemory, listener);

    if (!mem->started) {
        return true;    /* registering: proxy_memory_start() starts it */
    }
    return proxy_dirty_start(mem, errp);
}

static void proxy_memory_log_global_stop(MemoryListener *listener)
{
    proxy_dirty_stop(container_of(listener, ProxyMemory, listener));
}

static void proxy_memory_log_sync_global(MemoryListener *listener,
                                         bool last_stage)
{
    proxy_dirty_sync(container_of(listener, ProxyMemory, listener),
                     last_stage);
}

bool proxy_memory_start(ProxyMemory *mem, ProxyLink *link,
                        const char *owner_id, bool track_dirty, Error **errp)
{
    ERRP_GUARD();
    Error *err = NULL;

    mem->link = link;
    mem->owner_id = owner_id;
    mem->pending = g_array_new(false, false, sizeof(ProxyMemorySection));
    mem->current = g_array_new(false, false, sizeof(ProxyMemorySection));
    mem->dirty_stale = g_array_new(false, false, sizeof(ProxyMemorySection));
    mem->dirty_supported = track_dirty;
    mem->dirty_logging = false;
    mem->dirty_fd = -1;
    mem->listener = (MemoryListener) {
        .name = "x-pci-proxy-dev",
        .begin = proxy_memory_begin,
        .region_add = proxy_memory_collect,
        .region_nop = proxy_memory_collect,
        .commit = proxy_memory_commit,
        .log_global_start = proxy_memory_log_global_start,
        .log_global_stop = proxy_memory_log_global_stop,
        .log_sync_global = proxy_memory_log_sync_global,
        .priority = MEMORY_LISTENER_PRIORITY_DEV_BACKEND,
    };

    /* Registration replays the current map into mem->pending */
    memory_listener_register(&mem->listener, &address_space_memory);
    mem->started = true;
    if (mem->unshareable) {
        error_setg(errp, "guest RAM '%s' cannot be shared with the remote "
                   "process", mem->unshareable);
        error_append_hint(errp, "Back guest RAM with a shared memory backend,"
                          " e.g. -object memory-backend-memfd,id=mem,"
                          "size=<RAM size> -machine memory-backend=mem "
                          "(or -numa node,memdev=mem), or memory-backend-file"
                          " with share=on\n");
        proxy_memory_stop(mem);
        return false;
    }
    if (!proxy_memory_send(mem, mem->pending, errp)) {
        proxy_memory_stop(mem);
        return false;
    }
    /* the sections' references move to the current map */
    g_array_append_vals(mem->current, mem->pending->data, mem->pending->len);
    g_array_set_size(mem->pending, 0);
    /* connected while the VM migrates (a reattach): the log goes on */
    if (global_dirty_tracking && !proxy_dirty_start(mem, &err)) {
        warn_report_err(err);
        mem->dirty_lost = true;
        proxy_migration_abort(mem->owner_id, "what the device writes to "
                              "guest RAM cannot be logged");
    }
    return true;
}

void proxy_memory_stop(ProxyMemory *mem)
{
    if (!mem->started) {
        return;
    }
    memory_listener_unregister(&mem->listener);
    mem->started = false;
    proxy_dirty_stop(mem);
    proxy_memory_unref_sections(mem->pending);
    proxy_memory_unref_sections(mem->current);
    g_array_free(mem->pending, true);
    g_array_free(mem->current, true);
    g_array_free(mem->dirty_stale, true);
    g_clear_pointer(&mem->unshareable, g_free);
}
