/*
 * Doorbells: the eventfds a device registers on its BARs (virtio queue
 * notifications, NVMe doorbells with ioeventfd=on) are handed to the proxy,
 * so that a guest write signals them without a round trip.
 *
 * The proxy does not get the device's own eventfd but a relay, which the
 * ring thread passes on once it has served every access queued before it:
 * a doorbell must not overtake the posted writes that prepared it.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "exec/memory.h"
#include "remote.h"
#include "trace.h"

typedef struct RemoteDoorbell {
    EventNotifier relay;        /* the proxy signals it */
    EventNotifier *device;      /* the device's own */
    uint32_t id;
    uint8_t region;
    uint8_t size;
    bool match_data;
    uint64_t offset;
    uint64_t data;
    QLIST_ENTRY(RemoteDoorbell) next;
} RemoteDoorbell;

typedef struct RemoteDoorbellListener {
    MemoryListener listener;
    RemoteDoorbells *owner;
    uint8_t region;
    bool registered;
} RemoteDoorbellListener;

struct RemoteDoorbells {
    RemoteObject *o;
    const char *devid;
    RemoteRing *ring;
    RemoteDoorbellListener listener[PCI_ROM_SLOT];
    QLIST_HEAD(, RemoteDoorbell) list;
    unsigned nr;
    uint32_t last_id;
};

static void remote_doorbell_tell(RemoteDoorbells *db, RemoteDoorbell *d,
                                 bool add)
{
    trace_remote_doorbell(db->devid, add, d->region, d->offset, d->size,
                          d->match_data, d->data);
    remote_object_send_doorbell(db->o, add, d->region, d->offset, d->size,
                                d->match_data, d->data,
                                add ? event_notifier_get_fd(&d->relay) : -1);
}

static void remote_doorbell_add(MemoryListener *listener,
                                MemoryRegionSection *section, bool match_data,
                                uint64_t data, EventNotifier *e)
{
    RemoteDoorbellListener *l = container_of(listener, RemoteDoorbellListener,
                                             listener);
    RemoteDoorbells *db = l->owner;
    RemoteDoorbell *d;

    /* Without a relay the write still reaches the device through the ring */
    if (db->nr >= MPQEMU_MAX_IOEVENTFDS) {
        warn_report_once("x-remote-object %s: more than %d doorbells; the "
                         "others are written through the ring", db->devid,
                         MPQEMU_MAX_IOEVENTFDS);
        return;
    }
    d = g_new0(RemoteDoorbell, 1);
    if (event_notifier_init(&d->relay, false) < 0) {
        g_free(d);
        return;
    }
    d->device = e;
    d->id = ++db->last_id;
    d->region = l->region;
    d->offset = section->offset_within_address_space;
    d->size = int128_get64(section->size);
    d->match_data = match_data;
    d->data = data;
    if (!remote_ring_watch(db->ring, event_notifier_get_fd(&d->relay),
                           d->id)) {
        event_notifier_cleanup(&d->relay);
        g_free(d);
        return;
    }
    QLIST_INSERT_HEAD(&db->list, d, next);
    db->nr++;
    remote_doorbell_tell(db, d, true);
}

static void remote_doorbell_free(RemoteDoorbells *db, RemoteDoorbell *d)
{
    remote_ring_unwatch(db->ring, event_notifier_get_fd(&d->relay));
    /* a ring the ring thread has not passed on yet is not lost */
    if (event_notifier_test_and_clear(&d->relay)) {
        event_notifier_set(d->device);
    }
    event_notifier_cleanup(&d->relay);
    QLIST_REMOVE(d, next);
    db->nr--;
    g_free(d);
}

static void remote_doorbell_del(MemoryListener *listener,
                                MemoryRegionSection *section, bool match_data,
                                uint64_t data, EventNotifier *e)
{
    RemoteDoorbellListener *l = container_of(listener, RemoteDoorbellListener,
                                             listener);
    RemoteDoorbells *db = l->owner;
    RemoteDoorbell *d;

    QLIST_FOREACH(d, &db->list, next) {
        if (d->device == e && d->region == l->region &&
            d->offset == section->offset_within_address_space &&
            d->match_data == match_data && d->data == data) {
            remote_doorbell_tell(db, d, false);
            remote_doorbell_free(db, d);
            return;
        }
    }
}

/* With the BQL, from the ring thread: the proxy rang doorbell @id */
void remote_doorbells_rang(RemoteDoorbells *db, uint32_t id)
{
    RemoteDoorbell *d;

    QLIST_FOREACH(d, &db->list, next) {
        if (d->id == id) {
            event_notifier_test_and_clear(&d->relay);
            event_notifier_set(d->device);
            return;
        }
    }
    /* removed meanwhile: remote_doorbell_free passed it on */
}

/*
 * With the BQL: hand the proxy the doorbells the device has on the BARs
 * seen through @as (one address space per BAR, NULL where there is none),
 * now and as they come and go.
 */
RemoteDoorbells *remote_doorbells_start(RemoteObject *o, const char *devid,
                                        RemoteRing *ring,
                                        AddressSpace *const *as)
{
    RemoteDoorbells *db = g_new0(RemoteDoorbells, 1);

    db->o = o;
    db->devid = devid;
    db->ring = ring;
    QLIST_INIT(&db->list);
    for (int i = 0; i < PCI_ROM_SLOT; i++) {
        RemoteDoorbellListener *l = &db->listener[i];

        if (!as[i]) {
            continue;
        }
        l->owner = db;
        l->region = i;
        l->listener = (MemoryListener) {
            .name = "mpqemu-doorbells",
            .eventfd_add = remote_doorbell_add,
            .eventfd_del = remote_doorbell_del,
            .priority = MEMORY_LISTENER_PRIORITY_DEV_BACKEND,
        };
        /* replays the doorbells that exist already */
        memory_listener_register(&l->listener, as[i]);
        l->registered = true;
    }
    return db;
}

/* With the BQL, before the ring stops: the proxy is gone or going */
void remote_doorbells_stop(RemoteDoorbells *db)
{
    RemoteDoorbell *d, *tmp;

    for (int i = 0; i < PCI_ROM_SLOT; i++) {
        if (db->listener[i].registered) {
            memory_listener_unregister(&db->listener[i].listener);
        }
    }
    QLIST_FOREACH_SAFE(d, &db->list, next, tmp) {
        remote_doorbell_free(db, d);
    }
    g_free(db);
}
