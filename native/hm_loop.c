/* The request loop's workers: see hm_loop.h and docs/native.md, "Workers and their buffers".
 *
 * Why not fuse_session_loop_mt: each of its workers gets a receive buffer of the kernel's largest
 * request (1 MiB + 4 KiB) on its first request and keeps it, and the kernel hands requests to the
 * waiting readers in turn, so after a burst of large writes every worker holds 1 MiB, idle or
 * not. Retiring idle workers (its max_idle) frees them but starts and stops threads in every
 * burst. Here a worker keeps its thread and its buffer, and gives the buffer's pages back once
 * it has been idle HM_LOOP_IDLE_MS.
 *
 * Only the owning thread touches its buffer, and never while a read may be filling it. An idle
 * worker waits in the session's read, as libfuse's do (one wakeup per request, from the kernel,
 * nothing added to the path of a request); the serve thread, which has nothing else to do, looks
 * at the idle workers with touched pages every HM_LOOP_TICK_MS and interrupts the read of those
 * idle long enough with a signal of their own (HM_LOOP_SIGNAL's handler does nothing; installed
 * without SA_RESTART, the read ends with EINTR). The worker, out of the read, trims and reads
 * again. A signal sent while the worker is already out of the read (a request just came) ends
 * nothing: the worker then serves its request and keeps its pages.
 */
#define _GNU_SOURCE
#include "hm_loop.h"

#include <errno.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* fuse_session_receive_buf reads up to the session's bufsize into the buffer it is given:
 * libfuse 3.14-3.16 start it at FUSE_MAX_MAX_PAGES (256) pages + FUSE_BUFFER_HEADER_SIZE (4 KiB)
 * (lib/fuse_i.h) and only lower it at INIT. A guard page follows the buffer all the same. */
#if FUSE_MAJOR_VERSION != 3 || FUSE_MINOR_VERSION > 16
#error "check hm_loop.c's buffer size against this libfuse's se->bufsize"
#endif
#define HM_LOOP_MAX_PAGES 256
#define HM_LOOP_HEADER 4096
#define HM_LOOP_TICK_MS 500

#define HM_LOOP_SIGNAL (SIGRTMIN + 5)

struct worker {
    struct worker *prev, *next;
    struct hm_loop *loop;
    pthread_t thread;
    char *mem;              /* the receive buffer, HM_LOOP_MAX_PAGES + 1 pages + a guard page */
    int reading;            /* waiting in the session's read (the serve thread may interrupt it) */
    int dirty;              /* pages past the first touched since the last trim */
    int trim;               /* interrupted to trim */
    int done;               /* out of its loop: to be joined */
    struct timespec since;  /* reading since */
};

struct hm_loop {
    struct fuse_session *se;
    pthread_mutex_t lock;
    sem_t wake;             /* the serve thread's: a worker ended, or the first one got dirty */
    struct worker list;     /* the workers not retired */
    unsigned workers, available, max_threads, max_idle, dirty;
    int sleeping;           /* the serve thread waits without a timeout */
    int exit;
    int error;
    size_t page, size;      /* buffer bytes (without the guard page) */
};

static void interrupted(int sig)
{
    (void)sig;
}

static long ms_since(const struct timespec *then, const struct timespec *now)
{
    return (now->tv_sec - then->tv_sec) * 1000 + (now->tv_nsec - then->tv_nsec) / 1000000;
}

/* Give back the buffer's pages past the first (the header and small requests live there) and
 * the stack's below this frame: this thread's own, between requests. */
static void trim(struct worker *w)
{
    madvise(w->mem + w->loop->page, w->loop->size - w->loop->page, MADV_DONTNEED);
    pthread_attr_t attr;
    void *low;
    size_t size;
    if (pthread_getattr_np(pthread_self(), &attr) != 0)
        return;
    if (pthread_attr_getstack(&attr, &low, &size) == 0) {
        uintptr_t here = (uintptr_t)__builtin_frame_address(0), page = w->loop->page;
        uintptr_t top = (here - 4 * page) & ~(page - 1);   /* well below this frame and its callees */
        if (top > (uintptr_t)low)
            madvise(low, top - (uintptr_t)low, MADV_DONTNEED);
    }
    pthread_attr_destroy(&attr);
}

static void *work(void *data);

/* A new worker (lock held); -1 when none could be started. */
static int start_worker(struct hm_loop *loop)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -1;
    w->loop = loop;
    w->mem = mmap(NULL, loop->size + loop->page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (w->mem == MAP_FAILED) {
        free(w);
        return -1;
    }
    mprotect(w->mem + loop->size, loop->page, PROT_NONE);
    /* As libfuse: the signals that end the process go to the other threads. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int r = pthread_create(&w->thread, NULL, work, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        munmap(w->mem, loop->size + loop->page);
        free(w);
        return -1;
    }
    w->next = &loop->list;
    w->prev = loop->list.prev;
    w->prev->next = w;
    loop->list.prev = w;
    loop->workers++;
    loop->available++;
    return 0;
}

static void free_worker(struct worker *w)
{
    munmap(w->mem, w->loop->size + w->loop->page);
    free(w);
}

static int is_forget(const struct fuse_buf *buf)
{
    const struct fuse_in_header *in = buf->mem;
    return !(buf->flags & FUSE_BUF_IS_FD) && (in->opcode == FUSE_FORGET || in->opcode == FUSE_BATCH_FORGET);
}

static void *work(void *data)
{
    struct worker *w = data;
    struct hm_loop *loop = w->loop;
    sigset_t mine;
    sigemptyset(&mine);
    sigaddset(&mine, HM_LOOP_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &mine, NULL);
    pthread_mutex_lock(&loop->lock);
    for (;;) {
        if (loop->exit || fuse_session_exited(loop->se))
            break;
        if (w->trim) {
            w->trim = 0;
            pthread_mutex_unlock(&loop->lock);
            trim(w);
            pthread_mutex_lock(&loop->lock);
            if (w->dirty) {
                w->dirty = 0;
                loop->dirty--;
            }
            continue;
        }
        w->reading = 1;
        if (w->dirty)
            clock_gettime(CLOCK_MONOTONIC, &w->since);
        pthread_mutex_unlock(&loop->lock);

        struct fuse_buf buf = {.mem = w->mem, .size = loop->size};
        int res = fuse_session_receive_buf(loop->se, &buf);

        pthread_mutex_lock(&loop->lock);
        w->reading = 0;
        if (res == -EINTR)
            continue;          /* to trim, or to end */
        w->trim = 0;
        if (res <= 0) {
            if (res < 0) {
                fuse_session_exit(loop->se);
                loop->error = res;
            }
            break;
        }
        if (loop->exit)
            break;
        if ((size_t)res > loop->page && !w->dirty) {
            w->dirty = 1;
            if (loop->dirty++ == 0 && loop->sleeping) {
                loop->sleeping = 0;
                sem_post(&loop->wake);   /* start looking at the idle workers */
            }
        }
        int forget = is_forget(&buf);
        if (!forget)
            loop->available--;
        if (loop->available == 0 && loop->workers < loop->max_threads)
            start_worker(loop);   /* none idle: a request blocked in Python must not starve the others */
        pthread_mutex_unlock(&loop->lock);

        fuse_session_process_buf(loop->se, &buf);

        pthread_mutex_lock(&loop->lock);
        if (!forget)
            loop->available++;
        if (loop->max_idle && loop->available > loop->max_idle && loop->workers > 1 && !loop->exit) {
            w->prev->next = w->next;   /* retired: more idle workers than asked for */
            w->next->prev = w->prev;
            loop->available--;
            loop->workers--;
            if (w->dirty)
                loop->dirty--;
            pthread_mutex_unlock(&loop->lock);
            pthread_detach(w->thread);
            free_worker(w);
            return NULL;
        }
    }
    w->done = 1;
    pthread_mutex_unlock(&loop->lock);
    sem_post(&loop->wake);
    return NULL;
}

/* Interrupt the read of the idle workers with touched pages idle long enough (lock held). */
static void ask_trims(struct hm_loop *loop)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    for (struct worker *w = loop->list.next; w != &loop->list; w = w->next)
        if (w->reading && w->dirty && !w->trim && ms_since(&w->since, &now) >= HM_LOOP_IDLE_MS) {
            w->trim = 1;
            pthread_kill(w->thread, HM_LOOP_SIGNAL);
        }
}

/* The serve thread's wait: HM_LOOP_TICK_MS while a worker has pages to give back, else until a
 * worker posts (or a signal ends the wait, as fuse_set_signal_handlers' exit). */
static void wait_tick(struct hm_loop *loop, int timed)
{
    if (!timed) {
        sem_wait(&loop->wake);
        return;
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += HM_LOOP_TICK_MS * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    sem_timedwait(&loop->wake, &until);
}

/* The end: every worker out of its loop (those waiting in the read interrupted, again until they
 * are: one may be about to enter it), joined, its buffer unmapped. */
static void finish(struct hm_loop *loop)
{
    pthread_mutex_lock(&loop->lock);
    loop->exit = 1;
    for (;;) {
        int running = 0;
        for (struct worker *w = loop->list.next; w != &loop->list; w = w->next)
            if (!w->done) {
                running = 1;
                if (w->reading)
                    pthread_kill(w->thread, HM_LOOP_SIGNAL);
            }
        if (!running)
            break;
        pthread_mutex_unlock(&loop->lock);
        struct timespec pause = {0, 10 * 1000000L};
        nanosleep(&pause, NULL);
        pthread_mutex_lock(&loop->lock);
    }
    pthread_mutex_unlock(&loop->lock);
    while (loop->list.next != &loop->list) {
        struct worker *w = loop->list.next;
        pthread_join(w->thread, NULL);   /* its Python thread state goes with it (hm_fuse_py.c) */
        w->prev->next = w->next;
        w->next->prev = w->prev;
        free_worker(w);
    }
}

static int install_signal(void)
{
    struct sigaction action, old;
    memset(&action, 0, sizeof(action));
    action.sa_handler = interrupted;   /* no SA_RESTART: the read ends with EINTR */
    sigemptyset(&action.sa_mask);
    if (sigaction(HM_LOOP_SIGNAL, NULL, &old) != 0)
        return -1;
    if (old.sa_handler == interrupted)
        return 0;
    if (old.sa_handler != SIG_DFL || (old.sa_flags & SA_SIGINFO)) {
        /* someone else's: without it neither trims nor the end after fuse_session_exit work */
        fuse_log(FUSE_LOG_ERR, "hamirror: signal %d (SIGRTMIN+5) already has a handler: the loop needs it\n",
                 HM_LOOP_SIGNAL);
        return -1;
    }
    return sigaction(HM_LOOP_SIGNAL, &action, NULL);
}

int hm_loop_run(struct fuse_session *se, unsigned max_threads, unsigned max_idle)
{
    struct hm_loop loop;
    memset(&loop, 0, sizeof(loop));
    loop.se = se;
    loop.max_threads = max_threads ? max_threads : 1;
    loop.max_idle = max_idle;
    loop.page = (size_t)sysconf(_SC_PAGESIZE);
    loop.size = HM_LOOP_MAX_PAGES * loop.page + HM_LOOP_HEADER;
    loop.size = (loop.size + loop.page - 1) & ~(loop.page - 1);
    loop.list.prev = loop.list.next = &loop.list;
    if (install_signal() != 0)
        return -EBUSY;
    pthread_mutex_init(&loop.lock, NULL);
    sem_init(&loop.wake, 0, 0);
    pthread_mutex_lock(&loop.lock);
    int err = start_worker(&loop) == 0 ? 0 : -ENOMEM;
    while (err == 0 && !fuse_session_exited(se) && !loop.error) {
        int timed = loop.dirty > 0;
        loop.sleeping = !timed;
        pthread_mutex_unlock(&loop.lock);
        wait_tick(&loop, timed);
        pthread_mutex_lock(&loop.lock);
        loop.sleeping = 0;
        ask_trims(&loop);
    }
    pthread_mutex_unlock(&loop.lock);
    finish(&loop);
    if (err == 0)
        err = loop.error;
    pthread_mutex_destroy(&loop.lock);
    sem_destroy(&loop.wake);
    fuse_session_reset(se);
    return err;
}
