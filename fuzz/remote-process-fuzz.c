/*
 * libFuzzer target that plays a hostile proxy against a real remote
 * process (-machine x-remote serving an lsi53c895a) over its socket.
 *
 * The remote's dispatch (remote-machine/) needs a whole QEMU machine, so
 * it is not linked in: one remote process is started for the run and every
 * input is a connection to it. The input's FUZZ_OP_DATA records are sent
 * with their descriptors, then the sending side is closed and everything
 * the remote sends is read until it closes its side. The input fails (and
 * libFuzzer keeps it as a crash) when the remote dies (a sanitizer report
 * in a sanitized build, an assertion, a signal), does not close the
 * connection within FUZZ_REMOTE_TIMEOUT_MS, or sends something a proxy
 * must reject (broken framing, a malformed reply or notification).
 *
 * The remote is not instrumented for libFuzzer; what guides the search is
 * what comes back: each distinct (command, flags, error code, error text)
 * of a reply counts as new coverage, so inputs that reach new checks are
 * kept.
 *
 * Environment: FUZZ_REMOTE_QEMU (required) the qemu-system-x86_64 to run;
 * FUZZ_REMOTE_DIR where its socket and log go (default: a new directory in
 * /tmp). The remote's output for the last input is in remote.log there.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "mpqemu/channel.h"
#include "fuzz-input.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_REMOTE_TIMEOUT_MS  10000
#define FUZZ_START_TIMEOUT_MS   30000

/* libFuzzer takes these as coverage, reset before each input */
#define NR_COUNTERS 8192
__attribute__((section("__libfuzzer_extra_counters")))
static uint8_t counters[NR_COUNTERS];

static pid_t remote_pid;
static char *remote_dir;
static char *remote_sock;
static char *remote_log;
static int log_fd = -1;

static void remote_kill(void)
{
    if (remote_pid > 0) {
        kill(remote_pid, SIGKILL);
        waitpid(remote_pid, NULL, 0);
        remote_pid = 0;
    }
}

/* The remote's output so far, for the report of a failed input */
static void dump_log(void)
{
    g_autofree char *text = NULL;
    gsize len;

    if (g_file_get_contents(remote_log, &text, &len, NULL)) {
        fprintf(stderr, "---- remote.log (%s) ----\n%s\n---- end ----\n",
                remote_log, len > 65536 ? text + len - 65536 : text);
    }
}

static void G_NORETURN fail(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

static void fail(const char *fmt, ...)
{
    va_list ap;

    dump_log();
    va_start(ap, fmt);
    fprintf(stderr, "remote-process-fuzz: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    remote_kill();
    abort();
}

/* If the remote has ended, fail the input with how it ended */
static void check_remote_alive(void)
{
    int status;

    if (waitpid(remote_pid, &status, WNOHANG) != remote_pid) {
        return;
    }
    remote_pid = 0;
    if (WIFSIGNALED(status)) {
        fail("the remote process was killed by signal %d",
             WTERMSIG(status));
    }
    fail("the remote process exited with status %d", WEXITSTATUS(status));
}

static void remote_start(void)
{
    const char *qemu = getenv("FUZZ_REMOTE_QEMU");
    const char *argv[] = {
        qemu, "-machine", "x-remote", "-nodefaults", "-display", "none",
        "-blockdev", "driver=null-co,node-name=disk0,read-zeroes=on",
        "-device", "lsi53c895a,id=lsi0",
        "-device", "scsi-hd,drive=disk0,bus=lsi0.0",
        "-object", NULL, NULL,
    };
    g_autofree char *object = NULL;
    int64_t deadline;

    if (!qemu) {
        fprintf(stderr, "remote-process-fuzz: set FUZZ_REMOTE_QEMU to a "
                "qemu-system-x86_64 with the mpqemu modules\n");
        exit(1);
    }
    object = g_strdup_printf("x-remote-object,id=ro0,devid=lsi0,socket=%s",
                             remote_sock);
    argv[G_N_ELEMENTS(argv) - 2] = object;
    unlink(remote_sock);

    remote_pid = fork();
    if (remote_pid < 0) {
        perror("fork");
        exit(1);
    }
    if (remote_pid == 0) {
        int null = open("/dev/null", O_RDONLY);

        /* it goes when the fuzzer goes, however that ends */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(null, STDIN_FILENO);
        dup2(log_fd, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
        /* a sanitized remote stops at its first report */
        setenv("ASAN_OPTIONS", "halt_on_error=1:abort_on_error=1:"
               "detect_leaks=0", 1);
        setenv("UBSAN_OPTIONS", "halt_on_error=1:abort_on_error=1:"
               "print_stacktrace=1", 1);
        execv(qemu, (char **)argv);
        perror(qemu);
        _exit(127);
    }

    deadline = g_get_monotonic_time() + FUZZ_START_TIMEOUT_MS * 1000LL;
    while (!g_file_test(remote_sock, G_FILE_TEST_EXISTS)) {
        check_remote_alive();
        if (g_get_monotonic_time() > deadline) {
            fail("the remote process did not listen on %s", remote_sock);
        }
        g_usleep(10 * 1000);
    }
}

static void cleanup(void)
{
    remote_kill();
    if (remote_sock) {
        unlink(remote_sock);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("FUZZ_REMOTE_DIR");

    signal(SIGPIPE, SIG_IGN);
    if (dir) {
        g_mkdir_with_parents(dir, 0700);
        remote_dir = g_strdup(dir);
    } else {
        remote_dir = g_dir_make_tmp("mpqemu-fuzz-XXXXXX", NULL);
    }
    /* one socket per fuzzing process (libFuzzer -jobs) */
    remote_sock = g_strdup_printf("%s/remote-%d.sock", remote_dir, getpid());
    remote_log = g_strdup_printf("%s/remote-%d.log", remote_dir, getpid());
    log_fd = open(remote_log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND |
                  O_CLOEXEC, 0600);
    if (log_fd < 0) {
        perror(remote_log);
        exit(1);
    }
    atexit(cleanup);
    remote_start();
    return 0;
}

static int remote_connect(void)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int64_t deadline = g_get_monotonic_time() +
                       FUZZ_REMOTE_TIMEOUT_MS * 1000LL;

    g_strlcpy(addr.sun_path, remote_sock, sizeof(addr.sun_path));
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0) {
            fail("socket: %s", strerror(errno));
        }
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
            return fd;
        }
        close(fd);
        check_remote_alive();
        if (g_get_monotonic_time() > deadline) {
            fail("cannot connect to the remote process: %s",
                 strerror(errno));
        }
        g_usleep(1000);
    }
}

/* Count what the remote answered as coverage */
static void note(const MPQemuMsg *msg)
{
    uint32_t h = 2166136261u;
    const char *text = "";
    int32_t code = 0;

    if (msg->hdr.flags & MPQEMU_FLAG_ERROR &&
        msg->hdr.size == sizeof(MPQemuError)) {
        code = le32_to_cpu(msg->u.error.code);
        text = msg->u.error.message;
    }
#define MIX(v) (h = (h ^ (uint32_t)(v)) * 16777619u)
    MIX(msg->hdr.cmd);
    MIX(msg->hdr.flags);
    MIX(code);
    /* the wording says which check refused it; numbers in it do not */
    for (size_t i = 0; i < MPQEMU_ERROR_MSG_MAX && text[i]; i++) {
        if (!g_ascii_isdigit(text[i])) {
            MIX(text[i]);
        }
    }
#undef MIX
    /* seen or not: how often would only grow the corpus */
    counters[h % NR_COUNTERS] = 1;
}

/* Whether a proxy must accept @msg: anything but an answer to nonsense */
static bool must_be_valid(const MPQemuMsg *msg)
{
    unsigned cmd = msg->hdr.cmd;

    if (cmd == 0 || cmd >= MPQEMU_CMD__MAX) {
        return false;   /* the error reply to an unknown command */
    }
    if (mpqemu_cmd_is_notification(cmd)) {
        /* or the error reply to a "request" named like a notification */
        return !(msg->hdr.flags & MPQEMU_FLAG_REPLY);
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t deadline;
    FuzzInput in;
    FuzzRecord rec;
    int fd;

    if (ftruncate(log_fd, 0) < 0) {
        fail("cannot truncate %s", remote_log);
    }
    check_remote_alive();
    fd = remote_connect();

    fuzz_input_init(&in, data, size);
    while (fuzz_input_next(&in, &rec) && rec.op != FUZZ_OP_EOF) {
        if (rec.op == FUZZ_OP_DATA &&
            !fuzz_send_chunk(&in, fd, &rec, FUZZ_REMOTE_TIMEOUT_MS)) {
            break;      /* the remote closed the connection */
        }
    }
    shutdown(fd, SHUT_WR);

    deadline = g_get_monotonic_time() + FUZZ_REMOTE_TIMEOUT_MS * 1000LL;
    for (;;) {
        int left = (deadline - g_get_monotonic_time()) / 1000;
        Error *err = NULL;
        MPQemuMsg msg;
        int ret;

        ret = mpqemu_msg_recv(fd, &msg, MAX(left, 1), &err);
        if (ret == -EPIPE || ret == -ECONNRESET) {
            error_free(err);
            break;
        }
        if (ret == -ETIMEDOUT) {
            check_remote_alive();
            fail("the remote process did not close the connection within "
                 "%d ms", FUZZ_REMOTE_TIMEOUT_MS);
        }
        if (ret < 0) {
            check_remote_alive();
            fail("the remote process broke the framing: %s",
                 error_get_pretty(err));
        }
        note(&msg);
        if (must_be_valid(&msg) &&
            !mpqemu_msg_check(&msg, MPQEMU_PEER_PROXY, &err)) {
            fail("the remote process sent a malformed %s: %s",
                 mpqemu_cmd_name(msg.hdr.cmd), error_get_pretty(err));
        }
        error_free(err);
        mpqemu_msg_close_fds(&msg);
    }
    close(fd);
    check_remote_alive();
    return 0;
}
