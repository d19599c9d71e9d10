/* The request loop's workers (docs/native.md, "Workers and their buffers").
 *
 * What libfuse 3.14's fuse_session_loop_mt does (a new worker when none is idle, up to
 * max_threads; FORGETs do not count; idle workers above max_idle exit; the end on unmount or
 * fuse_session_exit), with buffers the workers own: a worker idle for HM_LOOP_IDLE_MS gives back
 * the pages of its receive buffer past the first, and of its stack below where it stands.
 * Requests go through the session's I/O (fuse_session_receive_buf / fuse_session_process_buf),
 * whatever hooks fuse_session_custom_io gave it.
 */
#ifndef HM_LOOP_H
#define HM_LOOP_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#define HM_LOOP_IDLE_MS 1000   /* a worker idle this long gives its pages back */

/* Serve ``se`` (mounted) until it exits: 0, or a negative errno (the device's read failed). */
int hm_loop_run(struct fuse_session *se, unsigned max_threads, unsigned max_idle);

#endif
