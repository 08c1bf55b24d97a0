/*
 * store_open.c - opening the store's database file: checks, pragmas, quick_check, schema
 * migration, and recovery from a corrupt file by moving it aside; and closing it.
 *
 * Open. Directory and file permissions are checked first (SQLite would silently open a
 * read-only file read-only). Then locking_mode, a probe read, journal_mode=WAL, quick_check
 * and migration (PRAGMA user_version, store_schema.c). A file that is not a database,
 * corrupt, or unreadable is renamed with its -wal/-shm to mqlite.db.corrupt-YYYYmmddTHHMMSS
 * (UTC) and a fresh store is created: the broker starts empty rather than not at all. A
 * file from a newer mqlite (user_version above ours) is an error, not corruption: moving it
 * aside would throw away a good store on a downgrade.
 *
 * Flash. The database is opened with locking_mode=EXCLUSIVE before WAL is entered, so the
 * WAL index lives in heap memory: there is no mmap()ed -shm file whose dirty pages the
 * kernel would write back behind our back (and a second broker on the same directory is
 * refused instead of sharing the file). Automatic checkpoints are replaced by the store
 * thread's own (a wal hook records the WAL's size; store.c checkpoints after the batch's
 * callbacks): the WAL may grow to ckpt_pages (1024 pages = 4 MiB, at most an eighth of
 * store_max_bytes) and journal_size_limit keeps the WAL file at about that size afterwards
 * (reused, not regrown). The page cache is 256 KiB, temp_store is memory.
 *
 * Locking: none. Opening runs on the caller's thread of mql_store_open before the store
 * thread exists; mql_store_close_db runs when it has ended. Performance: once per start;
 * quick_check reads the whole file (a few seconds for hundreds of MB on SD cards).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "platform/log.h"
#include "storage/store_int.h"

#define CACHE_KIB 256       /* page cache */
#define CKPT_PAGES_MAX 1024 /* WAL pages before we checkpoint */
#define CKPT_PAGES_MIN 64
#define STORE_PAGE_SIZE 1024 /* for new stores, see open_wal */
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

void mql_store_seterr(char *buf, size_t len, const char *fmt, ...)
{
    if (buf == NULL || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

/* SQLite's word that the file is not a usable database: moved aside, not refused. */
static bool rc_corrupt(int rc)
{
    int primary = rc & 0xff;
    return primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB || rc == SQLITE_IOERR_READ ||
           rc == SQLITE_IOERR_SHORT_READ;
}

/* In place of wal_autocheckpoint: remember the WAL's size for the store thread, which
 * checkpoints (store_commit.c). */
static int wal_hook_cb(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    ((mql_store *)arg)->wal_frames = frames;
    return SQLITE_OK;
}

/* What opening found: a usable store, a corrupt file (move it aside), or an error. */
enum open_result { DB_OK, DB_CORRUPT, DB_ERROR };

void mql_store_close_db(mql_store *st)
{
    mql_store_schema_finalize(st);
    if (st->db != NULL) {
        int rc = sqlite3_close(st->db);
        if (rc != SQLITE_OK)
            mql_warning("store.close", "store %s: close failed: %s", st->path, sqlite3_errstr(rc));
        st->db = NULL;
    }
}

/* Classify rc of a step of open_db and describe it in why. */
static enum open_result open_fail(mql_store *st, int rc, const char *step, char *why, size_t len)
{
    const char *m = st->db != NULL ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc);
    if (rc_corrupt(rc)) {
        snprintf(why, len, "%s (%s)", m, step);
        return DB_CORRUPT;
    }
    if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
        snprintf(why, len,
                 "store file %s is in use by another process (is another mqlite "
                 "running with the same persistence_location?)",
                 st->path);
        return DB_ERROR;
    }
    int sys = st->db != NULL ? sqlite3_system_errno(st->db) : 0;
    if (sys != 0)
        snprintf(why, len, "store file %s: %s: %s (%s)", st->path, step, m, strerror(sys));
    else
        snprintf(why, len, "store file %s: %s: %s", st->path, step, m);
    return DB_ERROR;
}

static int exec_sql(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* Run a PRAGMA that returns one text row into out. */
static int pragma_text(sqlite3 *db, const char *sql, char *out, size_t len)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        goto fail;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(s, 0);
        snprintf(out, len, "%s", t != NULL ? (const char *)t : "");
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        out[0] = '\0';
        rc = SQLITE_OK;
    }
fail:
    (void)sqlite3_finalize(s); /* repeats the step's error, already in rc */
    return rc;
}

static int pragma_int(sqlite3 *db, const char *sql, int64_t *out)
{
    char buf[32];
    int rc = pragma_text(db, sql, buf, sizeof(buf));
    if (rc == SQLITE_OK)
        *out = strtoll(buf, NULL, 10);
    return rc;
}

/* Open st->path and enter WAL mode with the WAL index in memory. */
static enum open_result open_wal(mql_store *st, char *why, size_t len)
{
    const char *step = "open";
    char text[64];
    int rc = sqlite3_open_v2(st->path, &st->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             st->vfs.name);
    if (rc != SQLITE_OK)
        goto fail;
    if ((rc = sqlite3_extended_result_codes(st->db, 1)) != SQLITE_OK)
        goto fail;
    if (sqlite3_db_readonly(st->db, "main") == 1) {
        snprintf(why, len, "store file %s: opened read-only (check its permissions)", st->path);
        return DB_ERROR;
    }
    /* Before the first access: WAL index in heap memory, no -shm (see the header). */
    step = "locking_mode";
    if ((rc = exec_sql(st->db, "PRAGMA locking_mode = EXCLUSIVE")) != SQLITE_OK)
        goto fail;
    /* A new store gets 1 KiB pages (SQLite's default is 4 KiB): every commit rewrites the
     * last leaf of each b-tree it appends to, so the page size is what a commit costs in
     * WAL bytes. Measured at 1,000 QoS 1 msg/s (tests/bench/compare.sh persist-rate): 995
     * instead of 1,656 bytes written per message, and a third of the file size, with the
     * same store throughput. No effect on an existing store (its page size is fixed). */
    step = "page_size";
    if ((rc = exec_sql(st->db, "PRAGMA page_size = " STRINGIFY(STORE_PAGE_SIZE))) != SQLITE_OK)
        goto fail;
    step = "read";
    if ((rc = exec_sql(st->db, "SELECT count(*) FROM sqlite_schema")) != SQLITE_OK)
        goto fail;
    step = "journal_mode";
    if ((rc = pragma_text(st->db, "PRAGMA journal_mode = WAL", text, sizeof(text))) != SQLITE_OK)
        goto fail;
    if (strcmp(text, "wal") != 0) {
        snprintf(why, len, "store file %s: cannot enter WAL mode (journal_mode is %s)", st->path,
                 text);
        return DB_ERROR;
    }
    return DB_OK;

fail:
    return open_fail(st, rc, step, why, len);
}

/* PRAGMA quick_check: DB_CORRUPT with its first complaint in why unless it says "ok". */
static enum open_result quick_check(mql_store *st, char *why, size_t len)
{
    char text[512];
    int rc = pragma_text(st->db, "PRAGMA quick_check(1)", text, sizeof(text));
    if (rc != SQLITE_OK)
        return open_fail(st, rc, "quick_check", why, len);
    if (strcmp(text, "ok") != 0) {
        for (char *p = text; *p != '\0'; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        snprintf(why, len, "quick_check: %s", text);
        return DB_CORRUPT;
    }
    return DB_OK;
}

/* The per-connection pragmas, then the schema to the current version. */
static enum open_result bring_schema(mql_store *st, char *why, size_t len)
{
    const char *step = "pragmas";
    char text[512];
    int64_t v = 0;
    snprintf(text, sizeof(text),
             "PRAGMA synchronous = %s; PRAGMA cache_size = -%d; PRAGMA temp_store = MEMORY;",
             st->sync_full ? "FULL" : "NORMAL", CACHE_KIB);
    int rc = exec_sql(st->db, text);
    if (rc != SQLITE_OK)
        goto fail;
    step = "user_version";
    if ((rc = pragma_int(st->db, "PRAGMA user_version", &v)) != SQLITE_OK)
        goto fail;
    if (v > mql_store_schema_version() || v < 0) {
        snprintf(why, len,
                 "store file %s has schema version %lld, this mqlite knows up to %d (written "
                 "by a newer mqlite?)",
                 st->path, (long long)v, mql_store_schema_version());
        return DB_ERROR;
    }
    step = "migrate";
    if ((rc = mql_store_schema_migrate(st, (int)v)) != SQLITE_OK)
        goto fail;
    return DB_OK;

fail:
    return open_fail(st, rc, step, why, len);
}

/* The WAL budget, the sweep of unreferenced bodies, the statements and the wal hook. */
static enum open_result get_ready(mql_store *st, char *why, size_t len)
{
    const char *step = "page_size";
    char text[128];
    int rc = pragma_int(st->db, "PRAGMA page_size", &st->page_size);
    if (rc != SQLITE_OK)
        goto fail;
    /* WAL budget: ckpt_pages, at most 1/8 of max_bytes. journal_size_limit keeps the WAL
     * file at about that size after a checkpoint instead of regrowing it every time. */
    int64_t ck = CKPT_PAGES_MAX;
    if (st->max_bytes > 0 && st->max_bytes / 8 / (uint64_t)st->page_size < (uint64_t)ck)
        ck = (int64_t)(st->max_bytes / 8 / (uint64_t)st->page_size);
    st->ckpt_pages = (int)(ck < CKPT_PAGES_MIN ? CKPT_PAGES_MIN : ck);
    snprintf(text, sizeof(text), "PRAGMA journal_size_limit = %lld",
             (long long)(st->ckpt_pages + 16) * st->page_size);
    step = "journal_size_limit";
    if ((rc = exec_sql(st->db, text)) != SQLITE_OK)
        goto fail;
    /* Bodies put but never referenced (nothing is in flight now: see store_schema.c). */
    step = "sweep";
    if ((rc = mql_store_schema_sweep(st)) != SQLITE_OK)
        goto fail;
    step = "prepare";
    if ((rc = mql_store_schema_prepare(st)) != SQLITE_OK)
        goto fail;
    /* Replaces wal_autocheckpoint: store.c checkpoints after the callbacks. */
    (void)sqlite3_wal_hook(st->db, wal_hook_cb, st); /* returns the previous hook's arg */
    mql_store_schema_live(st);
    return DB_OK;

fail:
    return open_fail(st, rc, step, why, len);
}

/* Open st->path and bring it to a usable state. On DB_CORRUPT or DB_ERROR the reason is in
 * why and the connection is closed. */
static enum open_result open_db(mql_store *st, char *why, size_t len)
{
    enum open_result res = open_wal(st, why, len);
    if (res == DB_OK)
        res = quick_check(st, why, len);
    if (res == DB_OK)
        res = bring_schema(st, why, len);
    if (res == DB_OK)
        res = get_ready(st, why, len);
    if (res != DB_OK)
        mql_store_close_db(st);
    return res;
}

/* Rename path (and -wal, -shm) to path.corrupt-YYYYmmddTHHMMSS[.N]; aside gets the new
 * name. Returns 0 or an errno. The -wal must go too: a fresh database would otherwise
 * replay the old WAL's pages. */
static int move_aside(const char *path, char *aside, size_t len)
{
    char stamp[32], from[4096], to[4096];
    struct tm tm;
    time_t t = time(NULL);
    gmtime_r(&t, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%S", &tm);
    struct stat sb;
    for (int n = 0;; n++) {
        int w = n == 0 ? snprintf(aside, len, "%s.corrupt-%s", path, stamp)
                       : snprintf(aside, len, "%s.corrupt-%s.%d", path, stamp, n);
        if (w < 0 || (size_t)w >= len)
            return ENAMETOOLONG;
        if (lstat(aside, &sb) != 0 && errno == ENOENT)
            break;
        if (n == 1000)
            return EEXIST;
    }
    if (rename(path, aside) != 0)
        return errno;
    static const char *const sfx[] = {"-wal", "-shm"};
    for (size_t i = 0; i < 2; i++) {
        int w1 = snprintf(from, sizeof(from), "%s%s", path, sfx[i]);
        int w2 = snprintf(to, sizeof(to), "%s%s", aside, sfx[i]);
        if (w1 < 0 || (size_t)w1 >= sizeof(from) || w2 < 0 || (size_t)w2 >= sizeof(to))
            return ENAMETOOLONG;
        if (rename(from, to) != 0 && errno != ENOENT)
            return errno;
    }
    /* Make the renames durable before a fresh file takes the name. */
    int w = snprintf(from, sizeof(from), "%s", path);
    char *slash = strrchr(from, '/');
    if (w > 0 && (size_t)w < sizeof(from) && slash != NULL) {
        *slash = '\0';
        int fd = open(from[0] != '\0' ? from : "/", O_RDONLY | O_DIRECTORY);
        if (fd >= 0) {
            (void)fsync(fd); /* best effort: the renames themselves succeeded */
            close(fd);
        }
    }
    return 0;
}

/* Directory and file checks before SQLite sees the path (see the header). */
static mql_err check_paths(const char *dir, const char *path, char *errbuf, size_t errlen)
{
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        mql_store_seterr(errbuf, errlen, "persistence_location %s: %s", dir, strerror(errno));
        return MQL_E_STORE;
    }
    if (!S_ISDIR(sb.st_mode)) {
        mql_store_seterr(errbuf, errlen, "persistence_location %s: %s", dir, strerror(ENOTDIR));
        return MQL_E_STORE;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        mql_store_seterr(errbuf, errlen, "persistence_location %s: %s", dir, strerror(errno));
        return MQL_E_STORE;
    }
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT)
            return MQL_OK;
        mql_store_seterr(errbuf, errlen, "store file %s: %s", path, strerror(errno));
        return MQL_E_STORE;
    }
    if (!S_ISREG(sb.st_mode)) {
        mql_store_seterr(errbuf, errlen, "store file %s: not a regular file", path);
        return MQL_E_STORE;
    }
    if (access(path, R_OK | W_OK) != 0) {
        mql_store_seterr(errbuf, errlen, "store file %s: %s", path, strerror(errno));
        return MQL_E_STORE;
    }
    return MQL_OK;
}

/* st->path is corrupt (why says how): move it aside and open a fresh store in its place. */
static mql_err recover(mql_store *st, char *why, size_t why_len, char *errbuf, size_t errlen)
{
    char aside[4096];
    int e = move_aside(st->path, aside, sizeof(aside));
    if (e != 0) {
        mql_store_seterr(errbuf, errlen,
                         "store file %s is corrupt (%s) and cannot be moved aside: %s", st->path,
                         why, strerror(e));
        return MQL_E_STORE;
    }
    mql_error("store.corrupt",
              "store file %s is corrupt or unreadable: %s; moved it aside to %s and started "
              "with an empty store",
              st->path, why, aside);
    enum open_result res = open_db(st, why, why_len);
    if (res == DB_CORRUPT) {
        mql_store_seterr(errbuf, errlen, "store file %s: fresh store reported corrupt: %s",
                         st->path, why);
        return MQL_E_STORE;
    }
    if (res != DB_OK) {
        mql_store_seterr(errbuf, errlen, "%s", why);
        return MQL_E_STORE;
    }
    return MQL_OK;
}

mql_err mql_store_open_db(mql_store *st, const char *dir, char *errbuf, size_t errlen)
{
    char why[1024];
    mql_err err = check_paths(dir, st->path, errbuf, errlen);
    if (err != MQL_OK)
        return err;
    if (mql_store_vfs_fault_control() != NULL)
        mql_warning("store.fault",
                    "store %s: fault injection is enabled (%s=%s): for tests only, never in "
                    "production",
                    st->path, MQL_STORE_FAULT_ENV, mql_store_vfs_fault_control());
    int rc = sqlite3_initialize();
    if (rc != SQLITE_OK || (rc = mql_store_vfs_register(&st->vfs)) != SQLITE_OK) {
        mql_store_seterr(errbuf, errlen, "store: SQLite initialisation failed: %s",
                         sqlite3_errstr(rc));
        return MQL_E_STORE;
    }
    enum open_result res = open_db(st, why, sizeof(why));
    if (res == DB_CORRUPT)
        return recover(st, why, sizeof(why), errbuf, errlen);
    if (res != DB_OK) {
        mql_store_seterr(errbuf, errlen, "%s", why);
        return MQL_E_STORE;
    }
    return MQL_OK;
}
