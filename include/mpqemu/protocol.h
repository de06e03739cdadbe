/*
 * mpqemu wire protocol: the messages the proxy and the remote exchange.
 * docs/protocol.md is the specification; this header is its C rendering.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef MPQEMU_PROTOCOL_H
#define MPQEMU_PROTOCOL_H

/* "MPQ1" read as a little-endian 32-bit number */
#define MPQEMU_MAGIC            0x3151504dU
#define MPQEMU_VERSION          1

/* Largest payload and largest number of descriptors one message carries */
#define MPQEMU_MAX_PAYLOAD      512
#define MPQEMU_MAX_FDS          8

/* Header flags */
#define MPQEMU_FLAG_REPLY       (1u << 0)  /* answers the request with this id */
#define MPQEMU_FLAG_ERROR       (1u << 1)  /* reply payload is MPQemuError */
#define MPQEMU_FLAGS_ALL        (MPQEMU_FLAG_REPLY | MPQEMU_FLAG_ERROR)

typedef enum MPQemuCmd {
    MPQEMU_CMD_HELLO        = 1,    /* proxy -> remote, request */
    MPQEMU_CMD_DEVICE_INFO  = 2,    /* proxy -> remote, request */
    MPQEMU_CMD_CONFIG_READ  = 3,    /* proxy -> remote, request */
    MPQEMU_CMD_CONFIG_WRITE = 4,    /* proxy -> remote, request */
    MPQEMU_CMD_BAR_READ     = 5,    /* proxy -> remote, request */
    MPQEMU_CMD_BAR_WRITE    = 6,    /* proxy -> remote, request */
    MPQEMU_CMD_MEMORY_MAP   = 7,    /* proxy -> remote, request, carries fds */
    MPQEMU_CMD_RESET        = 8,    /* proxy -> remote, request */
    MPQEMU_CMD_SET_IRQ      = 9,    /* remote -> proxy, notification */
    MPQEMU_CMD_MSI          = 10,   /* remote -> proxy, notification */
    MPQEMU_CMD_RING_SETUP   = 11,   /* proxy -> remote, request, carries fds */
    MPQEMU_CMD_ACCESS_HINTS = 12,   /* proxy -> remote, request */
    MPQEMU_CMD_IOEVENTFD    = 13,   /* remote -> proxy, notification, fd */
    MPQEMU_CMD_RUN_STATE    = 14,   /* proxy -> remote, request */
    MPQEMU_CMD_DEVICE_STATE = 15,   /* proxy -> remote, request, carries fd */
    MPQEMU_CMD_DIRTY_LOG    = 16,   /* proxy -> remote, request, SYNC: fd */
    MPQEMU_CMD__MAX,
} MPQemuCmd;

/* Every message starts with this header; all fields are little-endian. */
typedef struct QEMU_PACKED MPQemuHeader {
    uint32_t magic;
    uint16_t cmd;
    uint16_t flags;
    uint64_t id;            /* request id, echoed by the reply; 0: notification */
    uint32_t size;          /* payload bytes that follow the header */
    uint32_t num_fds;       /* descriptors sent along with the header */
} MPQemuHeader;

/* MPQEMU_CMD_HELLO request and reply */
#define MPQEMU_DEVID_MAX        64
typedef struct QEMU_PACKED MPQemuHello {
    uint32_t version;
    uint32_t reserved;
    uint64_t features;      /* MPQEMU_FEATURE_* bits; none defined in version 1 */
    char devid[MPQEMU_DEVID_MAX];   /* reply: the remote's device id, NUL-padded */
} MPQemuHello;

/*
 * BAR accesses through a shared-memory ring (see mpqemu/ring.h). Bit 0 was
 * an earlier layout of the ring, with one pair of sequence numbers for all
 * its entries; nobody offers it any more.
 */
#define MPQEMU_FEATURE_RING     (1ULL << 7)
/* With the ring: memory writes the device does not mark are posted */
#define MPQEMU_FEATURE_POSTED_WRITES (1ULL << 1)
/* With the ring: side-effect-free registers are read from a shared copy */
#define MPQEMU_FEATURE_SHADOW   (1ULL << 2)
/* With the ring: doorbells the device wants as eventfds are signalled directly */
#define MPQEMU_FEATURE_IOEVENTFD (1ULL << 3)
/* The remote's devices run only while the proxy's VM runs: RUN_STATE */
#define MPQEMU_FEATURE_RUN_STATE (1ULL << 4)
/* The device migrates: DEVICE_STATE and DIRTY_LOG */
#define MPQEMU_FEATURE_MIGRATION (1ULL << 5)
/*
 * With the ring: the answer to a waited-for access carries the INTx level the
 * device set while serving it, instead of a SET_IRQ on the socket
 */
#define MPQEMU_FEATURE_RING_INTX (1ULL << 6)
/* With posted writes: the device may mark registers SERIAL_WRITE */
#define MPQEMU_FEATURE_SERIAL_WRITES (1ULL << 8)
/*
 * With the ring: the proxy may hand RING_SETUP an eventfd the remote signals
 * after the notifications it sends, unless a halted vCPU of the proxy takes
 * them from the socket itself (see mpqemu/ring.h)
 */
#define MPQEMU_FEATURE_NOTIFY_EVENTFD (1ULL << 9)
#define MPQEMU_FEATURES_KNOWN   (MPQEMU_FEATURE_RING | \
                                 MPQEMU_FEATURE_POSTED_WRITES | \
                                 MPQEMU_FEATURE_SHADOW | \
                                 MPQEMU_FEATURE_IOEVENTFD | \
                                 MPQEMU_FEATURE_RUN_STATE | \
                                 MPQEMU_FEATURE_MIGRATION | \
                                 MPQEMU_FEATURE_RING_INTX | \
                                 MPQEMU_FEATURE_SERIAL_WRITES | \
                                 MPQEMU_FEATURE_NOTIFY_EVENTFD)
/* The features that only work on top of the ring */
#define MPQEMU_FEATURES_RING_BASED (MPQEMU_FEATURE_POSTED_WRITES | \
                                    MPQEMU_FEATURE_SHADOW | \
                                    MPQEMU_FEATURE_IOEVENTFD | \
                                    MPQEMU_FEATURE_RING_INTX | \
                                    MPQEMU_FEATURE_SERIAL_WRITES | \
                                    MPQEMU_FEATURE_NOTIFY_EVENTFD)

/* MPQEMU_CMD_DEVICE_INFO reply: what the proxy needs to impersonate the device */
#define MPQEMU_NUM_REGIONS      7   /* six BARs and the expansion ROM */
#define MPQEMU_REGION_IO        (1u << 0)
#define MPQEMU_REGION_MEM64     (1u << 1)
#define MPQEMU_REGION_PREFETCH  (1u << 2)
#define MPQEMU_REGION_FLAGS_ALL (MPQEMU_REGION_IO | MPQEMU_REGION_MEM64 | \
                                 MPQEMU_REGION_PREFETCH)
typedef struct QEMU_PACKED MPQemuRegionInfo {
    uint64_t size;          /* 0: not implemented; else a power of two */
    uint32_t flags;
    uint32_t reserved;
} MPQemuRegionInfo;

typedef struct QEMU_PACKED MPQemuDeviceInfo {
    uint32_t config_size;   /* 256 (conventional) or 4096 (express) */
    uint32_t reserved;
    MPQemuRegionInfo region[MPQEMU_NUM_REGIONS];
} MPQemuDeviceInfo;

/* MPQEMU_CMD_CONFIG_READ request (reply: MPQemuValue) */
typedef struct QEMU_PACKED MPQemuConfigAccess {
    uint32_t offset;        /* within config space */
    uint32_t len;           /* 1, 2 or 4, not crossing config_size */
    uint32_t value;         /* CONFIG_WRITE only */
    uint32_t reserved;
} MPQemuConfigAccess;

/* MPQEMU_CMD_BAR_READ / BAR_WRITE request (BAR_READ reply: MPQemuValue) */
typedef struct QEMU_PACKED MPQemuBarAccess {
    uint64_t offset;        /* within the region */
    uint64_t value;         /* BAR_WRITE only */
    uint8_t region;         /* 0-5: BAR, 6: expansion ROM */
    uint8_t size;           /* 1, 2, 4 or 8, not crossing the region's end */
    uint8_t reserved[6];
} MPQemuBarAccess;

typedef struct QEMU_PACKED MPQemuValue {
    uint64_t value;
} MPQemuValue;

/*
 * MPQEMU_CMD_MEMORY_MAP: guest RAM the remote may DMA to. A map is sent as
 * one or more messages; the first has MPQEMU_MEMORY_FIRST, the last
 * MPQEMU_MEMORY_LAST, and the remote switches to the new map atomically when
 * it has the last one. Section i is backed by descriptor i of the message.
 */
#define MPQEMU_MEMORY_FIRST     (1u << 0)
#define MPQEMU_MEMORY_LAST      (1u << 1)
#define MPQEMU_MEMORY_FLAGS_ALL (MPQEMU_MEMORY_FIRST | MPQEMU_MEMORY_LAST)
#define MPQEMU_MAX_SECTIONS     MPQEMU_MAX_FDS
#define MPQEMU_MAX_MAP_SECTIONS 1024    /* sections in one whole map */

typedef struct QEMU_PACKED MPQemuMemorySection {
    uint64_t gpa;           /* guest physical address */
    uint64_t size;          /* bytes; multiple of the host page size */
    uint64_t offset;        /* offset of gpa's backing in the descriptor */
} MPQemuMemorySection;

typedef struct QEMU_PACKED MPQemuMemoryMap {
    uint32_t flags;
    uint32_t nr_sections;   /* equals the header's num_fds */
    MPQemuMemorySection section[MPQEMU_MAX_SECTIONS];
} MPQemuMemoryMap;

/*
 * MPQEMU_CMD_ACCESS_HINTS reply: how the device wants its registers treated
 * on the fast path. SYNC_WRITE: writes in the range wait for the device even
 * when writes are posted. SERIAL_WRITE: writes in the range are posted one
 * at a time: such a write waits until the device has served the previous
 * one, not for its own answer. SHADOW: reads in the range have no side
 * effects and may be served from the shadow copy (see mpqemu/ring.h); the
 * copy of the range starts @shadow_offset bytes into the shadow area and
 * holds what reads of @width bytes at each multiple of @width return.
 * Without MPQEMU_SHADOW_BYTES only such reads are served from it; with it,
 * the range behaves as memory and any read of @min_size to @max_size bytes
 * inside it is.
 */
#define MPQEMU_MAX_HINTS        16
#define MPQEMU_HINT_SYNC_WRITE  1
#define MPQEMU_HINT_SHADOW      2
#define MPQEMU_HINT_SERIAL_WRITE 3
#define MPQEMU_SHADOW_BYTES     (1u << 0)
#define MPQEMU_SHADOW_MAX       (16 * 4096)     /* bytes in the shadow area */
typedef struct QEMU_PACKED MPQemuAccessHint {
    uint64_t offset;        /* within the region */
    uint32_t size;          /* bytes */
    uint32_t shadow_offset; /* SHADOW: multiple of 8 */
    uint8_t region;         /* 0-5 */
    uint8_t kind;           /* MPQEMU_HINT_* */
    uint8_t width;          /* SHADOW: 1, 2, 4 or 8 */
    uint8_t flags;          /* SHADOW: MPQEMU_SHADOW_BYTES */
    uint8_t min_size;       /* SHADOW with MPQEMU_SHADOW_BYTES */
    uint8_t max_size;
    uint8_t reserved[2];
} MPQemuAccessHint;

typedef struct QEMU_PACKED MPQemuAccessHints {
    uint32_t nr_hints;
    uint32_t shadow_size;   /* bytes of shadow area the ring must carry */
    MPQemuAccessHint hint[MPQEMU_MAX_HINTS];
} MPQemuAccessHints;

/*
 * MPQEMU_CMD_RING_SETUP: descriptors 0, 1, 2 are the ring's memory (a memfd
 * of at least @size bytes: the ring page, then the shadow area), the kick
 * eventfd and the done eventfd. With MPQEMU_RING_SETUP_NOTIFY_FD (only if
 * NOTIFY_EVENTFD was negotiated), descriptor 3 is the notify eventfd.
 */
#define MPQEMU_RING_FDS         3
#define MPQEMU_RING_SETUP_NOTIFY_FD     (1u << 0)
#define MPQEMU_RING_SETUP_FLAGS_ALL     MPQEMU_RING_SETUP_NOTIFY_FD
typedef struct QEMU_PACKED MPQemuRingSetup {
    uint32_t size;
    uint32_t flags;         /* MPQEMU_RING_SETUP_*; reserved before them */
} MPQemuRingSetup;

/*
 * MPQEMU_CMD_IOEVENTFD notification: the device signals an eventfd for
 * writes to a doorbell instead of handling them as accesses. With
 * MPQEMU_IOEVENTFD_ADD it carries the eventfd, which the proxy signals for
 * each write of @size bytes (0: any size) at @offset of the region (and,
 * with MPQEMU_IOEVENTFD_DATAMATCH, of value @data); without, the proxy stops.
 */
#define MPQEMU_IOEVENTFD_ADD        (1u << 0)
#define MPQEMU_IOEVENTFD_DATAMATCH  (1u << 1)
#define MPQEMU_IOEVENTFD_FLAGS_ALL  (MPQEMU_IOEVENTFD_ADD | \
                                     MPQEMU_IOEVENTFD_DATAMATCH)
#define MPQEMU_MAX_IOEVENTFDS       256     /* per device */
typedef struct QEMU_PACKED MPQemuIoeventfd {
    uint64_t offset;
    uint64_t data;
    uint8_t region;
    uint8_t size;
    uint8_t flags;
    uint8_t reserved[5];
} MPQemuIoeventfd;

/*
 * MPQEMU_CMD_RUN_STATE request: whether the proxy's VM runs. The remote
 * answers once its devices are quiesced (no DMA, no interrupts after the
 * reply) or running again.
 */
typedef struct QEMU_PACKED MPQemuRunState {
    uint32_t running;       /* 0 or 1 */
    uint32_t reserved;
} MPQemuRunState;

/*
 * MPQEMU_CMD_DEVICE_STATE request, with one descriptor: a memory file the
 * proxy made. DESCRIBE and SAVE have the remote write into it, from offset
 * 0, what the device's state consists of (DESCRIBE) or that and the state
 * itself (SAVE); the reply says how many bytes. CHECK and LOAD give the
 * remote @size bytes written so by another remote: CHECK asks whether the
 * device could take such a state, LOAD has it take it. SAVE and LOAD only
 * while the device is stopped (RUN_STATE). The proxy treats the bytes as
 * opaque: only remotes read them.
 */
#define MPQEMU_STATE_DESCRIBE   1
#define MPQEMU_STATE_CHECK      2
#define MPQEMU_STATE_SAVE       3
#define MPQEMU_STATE_LOAD       4
/* SAVE: the VM moves elsewhere: the remote lets go of its disk images */
#define MPQEMU_STATE_RELEASE_DISKS  (1u << 0)
#define MPQEMU_STATE_FLAGS_ALL  MPQEMU_STATE_RELEASE_DISKS
#define MPQEMU_STATE_MAX        (64 * 1024 * 1024)  /* bytes */
typedef struct QEMU_PACKED MPQemuDeviceState {
    uint32_t op;            /* MPQEMU_STATE_* */
    uint32_t flags;
    uint64_t size;          /* CHECK, LOAD; reply of DESCRIBE, SAVE */
} MPQemuDeviceState;

/*
 * MPQEMU_CMD_DIRTY_LOG request: START has the remote track the guest RAM
 * the device writes, STOP ends that; SYNC, with one descriptor (a memory
 * file), has it write there which pages of the current memory map it wrote
 * since the previous SYNC (or START), and forget them. The bitmap holds,
 * for each section of the map in order, one bit for each page of
 * MPQEMU_DIRTY_PAGE_SIZE bytes, in little-endian 64-bit words; each section
 * starts on a new word. The reply gives the number of sections and bytes.
 */
#define MPQEMU_DIRTY_START      1
#define MPQEMU_DIRTY_STOP       2
#define MPQEMU_DIRTY_SYNC       3
#define MPQEMU_DIRTY_PAGE_SIZE  4096
typedef struct QEMU_PACKED MPQemuDirtyLog {
    uint32_t op;            /* MPQEMU_DIRTY_* */
    uint32_t nr_sections;   /* SYNC reply */
    uint64_t size;          /* SYNC reply: bitmap bytes */
} MPQemuDirtyLog;

/* MPQEMU_CMD_SET_IRQ notification */
typedef struct QEMU_PACKED MPQemuSetIrq {
    uint32_t level;         /* 0 or 1: the device's INTx line */
    uint32_t reserved;
} MPQemuSetIrq;

/* MPQEMU_CMD_MSI notification: a message the device signals (MSI or MSI-X) */
typedef struct QEMU_PACKED MPQemuMsi {
    uint64_t address;
    uint32_t data;
    uint32_t reserved;
} MPQemuMsi;

/* Payload of a reply with MPQEMU_FLAG_ERROR */
#define MPQEMU_ERROR_MSG_MAX    256
typedef struct QEMU_PACKED MPQemuError {
    int32_t code;           /* negative errno */
    uint32_t reserved;
    char message[MPQEMU_ERROR_MSG_MAX];  /* NUL-terminated */
} MPQemuError;

#endif
