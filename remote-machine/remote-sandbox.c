/*
 * The remote process's sandbox, entered once its backends are open: another
 * user, no new privileges, Landlock, and seccomp against exec, fork and more.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "system/system.h"
#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <seccomp.h>
#include "remote.h"
#include "trace.h"

/*
 * System calls a device model never makes. Any of them kills the process
 * (all its threads): the main QEMU sees its device fail, as for a crash.
 */
static const int remote_sandbox_forbidden[] = {
    /* running other programs, or making processes to run them in */
    SCMP_SYS(execve), SCMP_SYS(execveat), SCMP_SYS(fork), SCMP_SYS(vfork),
    /* other processes' memory */
#ifndef __SANITIZE_ADDRESS__
    SCMP_SYS(ptrace),   /* (LeakSanitizer's exit check stops threads with it) */
#endif
    SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev),
    SCMP_SYS(kcmp), SCMP_SYS(pidfd_getfd),
    /* changing who it is */
    SCMP_SYS(setuid), SCMP_SYS(setgid), SCMP_SYS(setreuid),
    SCMP_SYS(setregid), SCMP_SYS(setresuid), SCMP_SYS(setresgid),
    SCMP_SYS(setfsuid), SCMP_SYS(setfsgid), SCMP_SYS(setgroups),
    SCMP_SYS(capset),
    /* changing what it sees of the system */
    SCMP_SYS(mount), SCMP_SYS(umount2), SCMP_SYS(pivot_root),
    SCMP_SYS(chroot), SCMP_SYS(unshare), SCMP_SYS(setns),
    SCMP_SYS(fsopen), SCMP_SYS(fsmount), SCMP_SYS(move_mount),
    SCMP_SYS(open_tree),
    /* changing the system itself */
    SCMP_SYS(init_module), SCMP_SYS(finit_module), SCMP_SYS(delete_module),
    SCMP_SYS(kexec_load), SCMP_SYS(kexec_file_load), SCMP_SYS(reboot),
    SCMP_SYS(swapon), SCMP_SYS(swapoff), SCMP_SYS(acct),
    SCMP_SYS(settimeofday), SCMP_SYS(clock_settime), SCMP_SYS(clock_adjtime),
    SCMP_SYS(adjtimex), SCMP_SYS(sethostname), SCMP_SYS(setdomainname),
    SCMP_SYS(iopl), SCMP_SYS(ioperm), SCMP_SYS(bpf), SCMP_SYS(perf_event_open),
    SCMP_SYS(userfaultfd), SCMP_SYS(add_key), SCMP_SYS(request_key),
    SCMP_SYS(keyctl), SCMP_SYS(quotactl), SCMP_SYS(nfsservctl),
    SCMP_SYS(personality), SCMP_SYS(uselib), SCMP_SYS(lookup_dcookie),
    SCMP_SYS(vhangup),
};

static bool remote_sandbox_drop_user(const char *user, Error **errp)
{
    struct passwd *pw;

    if (geteuid() != 0) {
        error_setg(errp, "user=%s needs the process to start as root", user);
        return false;
    }
    errno = 0;
    pw = getpwnam(user);
    if (!pw) {
        error_setg(errp, "no user %s%s%s", user, errno ? ": " : "",
                   errno ? strerror(errno) : "");
        return false;
    }
    if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
        setuid(pw->pw_uid) < 0) {
        error_setg_errno(errp, errno, "cannot become user %s", user);
        return false;
    }
    /* and no way back */
    if (setuid(0) == 0) {
        error_setg(errp, "user %s can become root again", user);
        return false;
    }
    trace_remote_sandbox_user(user, pw->pw_uid, pw->pw_gid);
    return true;
}

static bool remote_sandbox_load_filter(Error **errp)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    int ret = -EINVAL;

    if (!ctx) {
        error_setg(errp, "cannot set up a seccomp filter");
        return false;
    }
    /* for every thread of the process, those that run already included */
    ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    for (size_t i = 0; !ret && i < ARRAY_SIZE(remote_sandbox_forbidden); i++) {
        ret = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS,
                               remote_sandbox_forbidden[i], 0);
    }
    /* clone() makes threads only; clone3() hides its flags from a filter */
#ifndef __SANITIZE_ADDRESS__
    /* (LeakSanitizer's exit check clones a tracer process) */
    if (!ret) {
        ret = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(clone), 1,
                               SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
    }
#endif
    if (!ret) {
        ret = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3),
                               0);
    }
    /* no_new_privs, and the filter */
    if (!ret) {
        ret = seccomp_load(ctx);
    }
    seccomp_release(ctx);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "cannot load the seccomp filter");
        return false;
    }
    return true;
}

/*
 * Enter the sandbox: after the backends named on the command line are
 * open (machine creation is done), before any proxy is served.
 */
bool remote_sandbox_enter(bool enabled, const char *user,
                          strList *allow_paths, Error **errp)
{
    int ruleset;

    if (!enabled && (user || allow_paths)) {
        error_setg(errp, "user= and allow-paths= are part of the sandbox; "
                   "they cannot go with sandbox=off");
        return false;
    }
    if (!enabled) {
        warn_report("x-remote: running WITHOUT a sandbox (sandbox=off): a "
                    "compromised device model can do whatever this process "
                    "can; use it for debugging only");
        return true;
    }
    /* the paths are looked up while the process may still reach them */
    ruleset = remote_landlock_prepare(allow_paths, errp);
    if (ruleset == REMOTE_LANDLOCK_FAILED) {
        return false;
    }
    if (user && !remote_sandbox_drop_user(user, errp)) {
        goto fail;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        error_setg_errno(errp, errno, "cannot set no_new_privs");
        goto fail;
    }
    /* (closes the ruleset) */
    if (!remote_landlock_enforce(ruleset, errp) ||
        !remote_sandbox_load_filter(errp)) {
        return false;
    }
    trace_remote_sandbox_entered(user ?: "");
    return true;

fail:
    if (ruleset >= 0) {
        close(ruleset);
    }
    return false;
}
