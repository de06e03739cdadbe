/*
 * mpqemu fuzzing: the input format shared by the fuzz targets, a script of
 * bytes (with descriptors) a hostile peer sends and actions of the side under test.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef MPQEMU_FUZZ_INPUT_H
#define MPQEMU_FUZZ_INPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * An input is a sequence of records, each an opcode byte and its operands
 * (little-endian). fuzz/gen-corpus.py writes the same format. A record cut
 * short by the end of the input is dropped; unknown opcodes are skipped.
 */
enum {
    /*
     * u16 len, u8 fds, then len bytes: sent by the hostile peer in one
     * sendmsg(). fds: low nibble = how many descriptors ride along (at most
     * FUZZ_MAX_FDS_PER_CHUNK), high nibble = their kind (FUZZ_FDS_*).
     */
    FUZZ_OP_DATA = 0,
    /* u8 what, u8 arg: the side under test acts (sends a request, ...) */
    FUZZ_OP_CALL = 1,
    /* the side under test reads what has arrived, without waiting */
    FUZZ_OP_POLL = 2,
    /* u8 what, then 16 bytes: the hostile peer's view of the shared ring */
    FUZZ_OP_RING = 3,
    /* the hostile peer closes its sending side */
    FUZZ_OP_EOF = 4,
};

#define FUZZ_RING_OPERANDS      16

/* Kinds of descriptors a chunk carries */
enum {
    FUZZ_FDS_RING = 0,      /* a memfd, then eventfds: what RING_SETUP takes */
    FUZZ_FDS_MEMFD = 1,     /* sealed 1 MiB memfds: MEMORY_MAP sections */
    FUZZ_FDS_EVENTFD = 2,   /* eventfds: IOEVENTFD */
    FUZZ_FDS_PIPE = 3,      /* the read end of a pipe */
    FUZZ_FDS_DEVNULL = 4,   /* /dev/null, opened read-write */
    FUZZ_FDS_UNSEALED = 5,  /* a 4 KiB memfd that may still shrink */
};

#define FUZZ_MAX_FDS_PER_CHUNK  12      /* a few more than a message takes */
#define FUZZ_MAX_FDS_PER_INPUT  64
#define FUZZ_MEMFD_SIZE         (1024 * 1024)

typedef struct FuzzRecord {
    uint8_t op;
    /* FUZZ_OP_DATA */
    const uint8_t *data;
    size_t len;
    unsigned nfds;
    unsigned fd_kind;
    /* FUZZ_OP_CALL, FUZZ_OP_RING */
    uint8_t what;
    uint8_t arg;
    const uint8_t *operands;    /* FUZZ_RING_OPERANDS bytes */
} FuzzRecord;

typedef struct FuzzInput {
    const uint8_t *p;
    size_t left;
    unsigned fds_used;
} FuzzInput;

void fuzz_input_init(FuzzInput *in, const uint8_t *data, size_t size);
/* The next complete record, false at the end */
bool fuzz_input_next(FuzzInput *in, FuzzRecord *rec);

/*
 * Send a FUZZ_OP_DATA record on @fd with the descriptors it asks for
 * (created here and closed again once sent). Waits at most @timeout_ms for
 * room in the socket. Returns false if the peer is gone or it timed out.
 */
bool fuzz_send_chunk(FuzzInput *in, int fd, const FuzzRecord *rec,
                     int timeout_ms);

/* How many descriptors this process has open (to catch leaks) */
int fuzz_count_fds(void);

uint16_t fuzz_le16(const uint8_t *p);
uint32_t fuzz_le32(const uint8_t *p);
uint64_t fuzz_le64(const uint8_t *p);

#endif
