/* FUSE_HANDLE_KILLPRIV_V2 on libfuse 3.14, which knows only v1 (docs/native.md, "Privileges on
 * write").
 *
 * Without it the kernel asks the daemon for security.capability (a GETXATTR round trip) before
 * every write(), to know whether the write must remove it. With it the kernel marks the
 * superblock SB_NOSEC, so an inode checked once is not checked again until its attributes are
 * refreshed, and it leaves the clearing of set-user-ID and set-group-ID to the file system: it
 * says in each WRITE, SETATTR (truncate) and OPEN (O_TRUNC) whether the caller lacks CAP_FSETID.
 *
 * libfuse 3.14 cannot negotiate the flag nor pass those per-request flags to the handlers, so
 * the session's reads and writes go through hm_killpriv_seen / hm_killpriv_writev
 * (fuse_session_custom_io): the INIT reply gets the flag when the kernel offered it, and each
 * request's kill flag is kept for the thread that serves it (every loop that uses
 * fuse_session_receive_buf reads a request and serves it on one thread, as fuse_loop_mt does).
 */
#ifndef HM_KILLPRIV_H
#define HM_KILLPRIV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define HM_KILL_SUIDGID 1u      /* the caller lacks CAP_FSETID: suid, and sgid with group exec, go */
#define HM_KILL_CAPABILITY 2u   /* the file has a security.capability */

struct fuse_session;

struct hm_killpriv {
    uint64_t init_unique;    /* the INIT request: its reply is the one to change (0 once sent) */
    uint32_t offered;        /* the INIT request's flags (the kernel's offer) */
    int active;              /* FUSE_HANDLE_KILLPRIV_V2 negotiated: the kills are ours */
};

/* Route a mounted session's reads and writes through the two functions below (0 or -errno). */
int hm_killpriv_install(struct fuse_session *se);

static inline int hm_killpriv_active(const struct hm_killpriv *k)
{
    return __atomic_load_n(&k->active, __ATOMIC_ACQUIRE);
}

/* The kill flags (HM_KILL_SUIDGID) of the request this thread serves; 0 unless active. */
extern __thread unsigned hm_kill_flags;

/* A raw request just read into buf[0..len): note INIT's offer, set hm_kill_flags. */
void hm_killpriv_seen(struct hm_killpriv *k, const void *buf, size_t len);

/* writev(fd, iov, count), with FUSE_HANDLE_KILLPRIV_V2 added to the INIT reply when offered. */
ssize_t hm_killpriv_writev(struct hm_killpriv *k, int fd, const struct iovec *iov, int count);

/* Does a write through ``fd`` have something to clear? HM_KILL_SUIDGID when ``flags`` asks for
 * it and the file has a set-ID bit, HM_KILL_CAPABILITY when it has a security.capability (the
 * VFS removes that for any writer). Python decides what exactly goes
 * (Interception.kill_privileges): this spares it a call on every write, for an fgetxattr. */
unsigned hm_killpriv_needed(int fd, unsigned flags);

#endif
