/* The request loop's inode table: see hm_inodes.h. */
#include "hm_inodes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 4096   /* a loop in the names (never made here) ends as ELOOP, not a hang */

static size_t bucket_of(const struct hm_table *t, dev_t dev, ino_t ino)
{
    uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)dev * 0xC2B2AE3D27D4EB4Full;
    return (size_t)(h >> 17) & (t->nbuckets - 1);
}

int hm_table_init(struct hm_table *t, const struct stat *root)
{
    memset(t, 0, sizeof(*t));
    t->nbuckets = 1024;
    t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
    if (t->buckets == NULL)
        return -ENOMEM;
    t->root.dev = root->st_dev;
    t->root.ino = root->st_ino;
    t->root.nlookup = 1;
    pthread_mutex_init(&t->lock, NULL);
    return 0;
}

static struct hm_inode *node_of(struct hm_table *t, uint64_t nodeid)
{
    return nodeid == HM_ROOT_ID ? &t->root : (struct hm_inode *)(uintptr_t)nodeid;
}

uint64_t hm_nodeid(struct hm_table *t, struct hm_inode *inode)
{
    return inode == &t->root ? HM_ROOT_ID : (uint64_t)(uintptr_t)inode;
}

static struct hm_inode *find(struct hm_table *t, dev_t dev, ino_t ino)
{
    if (dev == t->root.dev && ino == t->root.ino)
        return &t->root;
    for (struct hm_inode *i = t->buckets[bucket_of(t, dev, ino)]; i != NULL; i = i->hnext)
        if (i->dev == dev && i->ino == ino)
            return i;
    return NULL;
}

static void grow(struct hm_table *t)
{
    size_t n = t->nbuckets * 2;
    struct hm_inode **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return;   /* longer chains, still correct */
    struct hm_inode **old = t->buckets;
    size_t oldn = t->nbuckets;
    t->buckets = b;
    t->nbuckets = n;
    for (size_t k = 0; k < oldn; k++) {
        struct hm_inode *i = old[k];
        while (i != NULL) {
            struct hm_inode *next = i->hnext;
            size_t h = bucket_of(t, i->dev, i->ino);
            i->hnext = b[h];
            b[h] = i;
            i = next;
        }
    }
    free(old);
}

static void unhash(struct hm_table *t, struct hm_inode *inode)
{
    struct hm_inode **p = &t->buckets[bucket_of(t, inode->dev, inode->ino)];
    while (*p != NULL && *p != inode)
        p = &(*p)->hnext;
    if (*p == inode)
        *p = inode->hnext;
}

static void release_if_unused(struct hm_table *t, struct hm_inode *inode);

static void drop_name(struct hm_table *t, struct hm_name *n)
{
    struct hm_inode *parent = n->parent;
    free(n);
    parent->refs--;
    release_if_unused(t, parent);
}

/* Free a node nobody references any more, and the parents that frees in turn (recursion as
 * deep as the path: a name keeps its parent, so no parent still named below is freed). */
static void release_if_unused(struct hm_table *t, struct hm_inode *inode)
{
    if (inode == &t->root || inode->nlookup != 0 || inode->refs != 0)
        return;
    unhash(t, inode);
    t->count--;
    struct hm_name *n = inode->names;
    free(inode->hint);
    free(inode);
    while (n != NULL) {
        struct hm_name *after = n->next;
        drop_name(t, n);
        n = after;
    }
}

static int remove_name(struct hm_table *t, struct hm_inode *inode, struct hm_inode *parent, const char *name)
{
    for (struct hm_name **p = &inode->names; *p != NULL; p = &(*p)->next) {
        if ((*p)->parent == parent && strcmp((*p)->name, name) == 0) {
            struct hm_name *n = *p;
            *p = n->next;
            drop_name(t, n);
            return 1;
        }
    }
    return 0;
}

static int add_name(struct hm_inode *inode, struct hm_inode *parent, const char *name)
{
    struct hm_name **p = &inode->names;
    for (; *p != NULL; p = &(*p)->next) {
        if ((*p)->parent == parent && strcmp((*p)->name, name) == 0) {
            struct hm_name *n = *p;   /* known: it becomes the newest */
            *p = n->next;
            n->next = inode->names;
            inode->names = n;
            return 0;
        }
    }
    size_t len = strlen(name) + 1;
    struct hm_name *n = malloc(sizeof(*n) + len);
    if (n == NULL)
        return -ENOMEM;
    memcpy(n->name, name, len);
    n->parent = parent;
    parent->refs++;
    n->next = inode->names;
    inode->names = n;
    free(inode->hint);   /* a known name again: no need for the one found by a search */
    inode->hint = NULL;
    return 0;
}

uint64_t hm_table_learn(struct hm_table *t, uint64_t parent, const char *name, const struct stat *st)
{
    uint64_t id = 0;
    pthread_mutex_lock(&t->lock);
    struct hm_inode *p = node_of(t, parent);
    struct hm_inode *i = find(t, st->st_dev, st->st_ino);
    if (i == NULL) {
        i = calloc(1, sizeof(*i));
        if (i == NULL)
            goto out;
        i->dev = st->st_dev;
        i->ino = st->st_ino;
        if (t->count >= t->nbuckets)
            grow(t);
        size_t h = bucket_of(t, i->dev, i->ino);
        i->hnext = t->buckets[h];
        t->buckets[h] = i;
        t->count++;
    }
    if (i != &t->root && add_name(i, p, name) != 0) {
        release_if_unused(t, i);
        goto out;
    }
    i->nlookup++;
    id = hm_nodeid(t, i);
out:
    pthread_mutex_unlock(&t->lock);
    return id;
}

void hm_table_forget(struct hm_table *t, uint64_t nodeid, uint64_t n)
{
    if (nodeid == HM_ROOT_ID)
        return;
    pthread_mutex_lock(&t->lock);
    struct hm_inode *i = node_of(t, nodeid);
    i->nlookup = n >= i->nlookup ? 0 : i->nlookup - n;
    release_if_unused(t, i);
    pthread_mutex_unlock(&t->lock);
}

/* Under the lock: "/a/b" into buf. */
static int path_locked(struct hm_table *t, struct hm_inode *i, char *buf, size_t size)
{
    size_t end = size - 1;   /* built from the end, then moved to the front */
    buf[end] = '\0';
    int depth = 0;
    while (i != &t->root) {
        struct hm_name *n = i->names;
        if (n == NULL)
            return -ENOENT;
        if (++depth > MAX_DEPTH)
            return -ELOOP;
        size_t len = strlen(n->name);
        if (len + 1 > end)
            return -ENAMETOOLONG;
        end -= len;
        memcpy(buf + end, n->name, len);
        buf[--end] = '/';
        i = n->parent;
    }
    if (end == size - 1) {
        buf[0] = '/';
        buf[1] = '\0';
        return 0;
    }
    memmove(buf, buf + end, size - end);
    return 0;
}

int hm_table_path(struct hm_table *t, uint64_t nodeid, char *buf, size_t size)
{
    pthread_mutex_lock(&t->lock);
    int r = path_locked(t, node_of(t, nodeid), buf, size);
    pthread_mutex_unlock(&t->lock);
    return r;
}

int hm_table_child_path(struct hm_table *t, uint64_t parent, const char *name, char *buf, size_t size)
{
    int r = hm_table_path(t, parent, buf, size);
    if (r != 0)
        return r;
    size_t len = strlen(buf), nlen = strlen(name);
    if (len == 1)
        len = 0;   /* "/" + name */
    if (len + 1 + nlen + 1 > size)
        return -ENAMETOOLONG;
    buf[len] = '/';
    memcpy(buf + len + 1, name, nlen + 1);
    return 0;
}

void hm_table_unlinked(struct hm_table *t, uint64_t parent, const char *name, dev_t dev, ino_t ino)
{
    pthread_mutex_lock(&t->lock);
    struct hm_inode *i = find(t, dev, ino);
    if (i != NULL && i != &t->root) {
        remove_name(t, i, node_of(t, parent), name);
        release_if_unused(t, i);
    }
    pthread_mutex_unlock(&t->lock);
}

/* Under the lock: ``i`` is now called (np, nname) instead of (op, oname). */
static void move_name(struct hm_table *t, struct hm_inode *i, struct hm_inode *op, const char *oname,
                      struct hm_inode *np, const char *nname)
{
    if (i == NULL || i == &t->root)
        return;
    i->refs++;   /* keep it while its last name changes */
    if (add_name(i, np, nname) == 0)
        remove_name(t, i, op, oname);
    i->refs--;
    release_if_unused(t, i);
}

void hm_table_renamed(struct hm_table *t, uint64_t op, const char *oname, uint64_t np, const char *nname,
                      const struct stat *src, const struct stat *dst, int have_dst, int exchange)
{
    pthread_mutex_lock(&t->lock);
    struct hm_inode *o = node_of(t, op), *n = node_of(t, np);
    struct hm_inode *s = find(t, src->st_dev, src->st_ino);
    struct hm_inode *d = have_dst ? find(t, dst->st_dev, dst->st_ino) : NULL;
    if (s != NULL && s == d)
        goto out;   /* two names of one file: rename(2) does nothing, an exchange leaves both */
    if (s != NULL && d != NULL && s != d)
        d->refs++;   /* keep both while their names move */
    if (exchange) {
        /* Both names stay; each file takes the other's. */
        if (s != NULL && d != NULL && s != d) {
            s->refs++;
            remove_name(t, s, o, oname);
            remove_name(t, d, n, nname);
            add_name(s, n, nname);
            add_name(d, o, oname);
            s->refs--;
            release_if_unused(t, s);
        }
        else if (s != NULL)
            move_name(t, s, o, oname, n, nname);
        else if (d != NULL)
            move_name(t, d, n, nname, o, oname);
    } else {
        if (d != NULL && d != s)
            remove_name(t, d, n, nname);
        move_name(t, s, o, oname, n, nname);
    }
    if (s != NULL && d != NULL && s != d) {
        d->refs--;
        release_if_unused(t, d);
    }
out:
    pthread_mutex_unlock(&t->lock);
}

void hm_table_set_hint(struct hm_table *t, dev_t dev, ino_t ino, const char *path)
{
    pthread_mutex_lock(&t->lock);
    struct hm_inode *i = find(t, dev, ino);
    if (i != NULL && i != &t->root) {
        free(i->hint);
        i->hint = path != NULL ? strdup(path) : NULL;
    }
    pthread_mutex_unlock(&t->lock);
}

int hm_table_hint(struct hm_table *t, uint64_t nodeid, char *buf, size_t size, dev_t *dev, ino_t *ino)
{
    int r = -ENOENT;
    pthread_mutex_lock(&t->lock);
    struct hm_inode *i = node_of(t, nodeid);
    if (i->names == NULL && i->hint != NULL && strlen(i->hint) < size) {
        strcpy(buf, i->hint);
        *dev = i->dev;
        *ino = i->ino;
        r = 0;
    }
    pthread_mutex_unlock(&t->lock);
    return r;
}

int hm_table_nameless(struct hm_table *t, dev_t dev, ino_t ino)
{
    pthread_mutex_lock(&t->lock);
    struct hm_inode *i = find(t, dev, ino);
    int r = i != NULL && i != &t->root && i->names == NULL;
    pthread_mutex_unlock(&t->lock);
    return r;
}

void hm_table_defer_mtime(struct hm_table *t, uint64_t nodeid, const struct timespec *mtime)
{
    pthread_mutex_lock(&t->lock);
    struct hm_inode *i = node_of(t, nodeid);
    i->mtime = *mtime;
    i->deferred = 1;
    pthread_mutex_unlock(&t->lock);
}

int hm_table_take_mtime(struct hm_table *t, uint64_t nodeid, struct timespec *mtime)
{
    pthread_mutex_lock(&t->lock);
    struct hm_inode *i = node_of(t, nodeid);
    int r = i->deferred;
    if (r)
        *mtime = i->mtime;
    i->deferred = 0;
    pthread_mutex_unlock(&t->lock);
    return r;
}

size_t hm_table_count(struct hm_table *t)
{
    pthread_mutex_lock(&t->lock);
    size_t n = t->count;
    pthread_mutex_unlock(&t->lock);
    return n;
}

void hm_table_destroy(struct hm_table *t)
{
    for (size_t k = 0; k < t->nbuckets; k++) {
        struct hm_inode *i = t->buckets[k];
        while (i != NULL) {
            struct hm_inode *next = i->hnext;
            struct hm_name *n = i->names;
            while (n != NULL) {
                struct hm_name *after = n->next;
                free(n);
                n = after;
            }
            free(i->hint);
            free(i);
            i = next;
        }
    }
    free(t->buckets);
    t->buckets = NULL;
    pthread_mutex_destroy(&t->lock);
}
