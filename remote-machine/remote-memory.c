/*
 * Guest RAM in the remote: maps the sections a proxy sends into the DMA
 * address space of its device, switching to each new map atomically.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "exec/memory.h"
#include "remote.h"
#include "trace.h"

const char *remote_memory_name(RemoteMemory *mem)
{
    return object_get_canonical_path_component(mem->owner) ?: "?";
}

/*
 * Each section's RAM region is owned by an object of its own: the memory
 * core references the owner from every flat view that maps the region, so
 * the region outlives the RCU readers of a map it has been removed from.
 */
#define TYPE_REMOTE_GUEST_RAM "x-remote-guest-ram"
OBJECT_DECLARE_SIMPLE_TYPE(RemoteGuestRAM, REMOTE_GUEST_RAM)

struct RemoteGuestRAM {
    Object parent_obj;
    MemoryRegion mr;
};

static const TypeInfo remote_guest_ram_info = {
    .name = TYPE_REMOTE_GUEST_RAM,
    .parent = TYPE_OBJECT,
    .instance_size = sizeof(RemoteGuestRAM),
};

static void remote_guest_ram_register_types(void)
{
    type_register_static(&remote_guest_ram_info);
}

type_init(remote_guest_ram_register_types)

static void remote_memory_free_regions(GPtrArray *regions)
{
    for (guint i = 0; i < regions->len; i++) {
        MemoryRegion *mr = g_ptr_array_index(regions, i);

        object_unparent(memory_region_owner(mr));
    }
    g_ptr_array_set_size(regions, 0);
}

void remote_memory_init(RemoteMemory *mem, Object *owner, MemoryRegion *root)
{
    mem->owner = owner;
    mem->root = root;
    mem->current = g_ptr_array_new();
    mem->pending = g_ptr_array_new();
    mem->receiving = false;
}

static void remote_memory_switch(RemoteMemory *mem)
{
    GPtrArray *old = mem->current;

    memory_region_transaction_begin();
    for (guint i = 0; i < old->len; i++) {
        memory_region_del_subregion(mem->root, g_ptr_array_index(old, i));
    }
    for (guint i = 0; i < mem->pending->len; i++) {
        MemoryRegion *mr = g_ptr_array_index(mem->pending, i);

        memory_region_add_subregion(mem->root, mr->addr, mr);
    }
    memory_region_transaction_commit();

    mem->current = mem->pending;
    mem->pending = old;
    remote_memory_free_regions(mem->pending);
    trace_remote_memory_commit(remote_memory_name(mem), mem->current->len);
}

void remote_memory_clear(RemoteMemory *mem)
{
    if (!mem->current) {
        return;
    }
    remote_dirty_stop(mem);
    remote_memory_free_regions(mem->pending);
    remote_memory_switch(mem);
    mem->receiving = false;
}

void remote_memory_destroy(RemoteMemory *mem)
{
    remote_memory_clear(mem);
    if (mem->current) {
        g_ptr_array_free(mem->current, true);
        g_ptr_array_free(mem->pending, true);
        mem->current = mem->pending = NULL;
    }
}

static bool overlaps_pending(RemoteMemory *mem, uint64_t gpa, uint64_t size)
{
    for (guint i = 0; i < mem->pending->len; i++) {
        MemoryRegion *mr = g_ptr_array_index(mem->pending, i);

        if (gpa < mr->addr + memory_region_size(mr) && mr->addr < gpa + size) {
            return true;
        }
    }
    return false;
}

static bool remote_memory_add(RemoteMemory *mem,
                              const MPQemuMemorySection *section, int fd,
                              Error **errp)
{
    uint64_t gpa = le64_to_cpu(section->gpa);
    uint64_t size = le64_to_cpu(section->size);
    uint64_t offset = le64_to_cpu(section->offset);
    uint64_t page = qemu_real_host_page_size();
    g_autofree char *name = NULL;
    RemoteGuestRAM *ram;
    MemoryRegion *mr;
    struct stat st;

    if (!size || ((gpa | size | offset) & (page - 1)) ||
        gpa + size < gpa || offset + size < offset) {
        error_setg(errp, "section gpa 0x%" PRIx64 " size 0x%" PRIx64
                   " offset 0x%" PRIx64 " is empty, unaligned or wraps",
                   gpa, size, offset);
        return false;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        offset + size > st.st_size) {
        error_setg(errp, "section gpa 0x%" PRIx64 " is not backed by a "
                   "shareable memory file of at least 0x%" PRIx64 " bytes",
                   gpa, offset + size);
        return false;
    }
    if (overlaps_pending(mem, gpa, size)) {
        error_setg(errp, "section gpa 0x%" PRIx64 " size 0x%" PRIx64
                   " overlaps another section", gpa, size);
        return false;
    }
    if (mem->pending->len >= MPQEMU_MAX_MAP_SECTIONS) {
        error_setg(errp, "a memory map has at most %d sections",
                   MPQEMU_MAX_MAP_SECTIONS);
        return false;
    }

    ram = REMOTE_GUEST_RAM(object_new(TYPE_REMOTE_GUEST_RAM));
    object_property_add_child(mem->owner, "guest-ram[*]", OBJECT(ram));
    object_unref(OBJECT(ram));
    name = g_strdup_printf("guest-ram@0x%" PRIx64, gpa);
    if (!memory_region_init_ram_from_fd(&ram->mr, OBJECT(ram), name, size,
                                        RAM_SHARED, fd, offset, errp)) {
        object_unparent(OBJECT(ram));
        return false;
    }
    mr = &ram->mr;
    mr->addr = gpa;
    /* its pages are dirty-tracked while the proxy's VM migrates */
    qemu_ram_set_migratable(mr->ram_block);
    g_ptr_array_add(mem->pending, mr);
    trace_remote_memory_section(remote_memory_name(mem), gpa, size, offset);
    return true;
}

bool remote_memory_receive(RemoteMemory *mem, MPQemuMsg *msg, Error **errp)
{
    MPQemuMemoryMap *map = &msg->u.memory;
    uint32_t flags = le32_to_cpu(map->flags);
    uint32_t nr = le32_to_cpu(map->nr_sections);
    bool ok = true;

    if (flags & MPQEMU_MEMORY_FIRST) {
        remote_memory_free_regions(mem->pending);
        mem->receiving = true;
    } else if (!mem->receiving) {
        error_setg(errp, "MEMORY_MAP continuation without a first part");
        ok = false;
    }

    /* Descriptors the RAM blocks did not take are closed here */
    for (uint32_t i = 0; i < nr; i++) {
        if (ok && remote_memory_add(mem, &map->section[i], msg->fds[i],
                                    errp)) {
            continue;
        }
        if (ok) {
            ok = false;
        }
        close(msg->fds[i]);
    }
    msg->hdr.num_fds = 0;

    if (!ok) {
        /* A broken map is dropped whole; the previous one stays in force */
        remote_memory_free_regions(mem->pending);
        mem->receiving = false;
        return false;
    }
    if (flags & MPQEMU_MEMORY_LAST) {
        remote_memory_switch(mem);
        mem->receiving = false;
    }
    return true;
}
