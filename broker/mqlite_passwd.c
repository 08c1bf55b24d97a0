/*
 * mqlite_passwd.c - mqlite-passwd, the tool that writes mqlite password files.
 *
 * Purpose: create and edit the password file the broker loads with mql_passwd_load (format
 * in broker/auth_passwd.h), with the flags, messages and exit codes of mosquitto_passwd:
 *
 *     mqlite-passwd [-I iterations] [-c | -D] passwordfile username
 *     mqlite-passwd [-I iterations] [-c] -b passwordfile username password
 *
 * -c creates (overwrites) the file, -b takes the password from the command line, -D deletes
 * the user. Without -b the password is asked twice on the terminal with echo off; when
 * stdin is not a terminal, two lines are read from it (so `printf 'pw\npw\n' | mqlite-passwd
 * -c f u` works, as with mosquitto_passwd). Exit status 0 on success, 1 on any error (the
 * message is on stderr; a missing user for -D is a "Warning:" and also exits 1).
 *
 * Design notes:
 * - Every other line of an existing file is parsed with mql_passwd_parse_line (a corrupt
 *   file is refused with FILE:LINE, never rewritten) and copied verbatim; the user's line is
 *   replaced in place (a duplicate of it is dropped), or appended.
 * - The file is written atomically: a temporary file in the same directory (mkstemp, mode
 *   0600), fsync, rename over the target, fsync of the directory. A symlink is followed
 *   (the file it points to is replaced). When run as root on an existing file, the new file
 *   keeps the old owner and group, so a broker that dropped privileges can still read it.
 * - Salts come from an mbedtls CTR-DRBG seeded from mbedtls_entropy (the only random state,
 *   local to one call). Passwords are read with read(2) byte by byte (no stdio buffer keeps
 *   a copy), never printed, and wiped (mbedtls_platform_zeroize) before exit; a password
 *   given with -b is also wiped from argv.
 * - The one global: the saved terminal settings, so SIGINT/SIGTERM while echo is off
 *   restore the terminal. Locking: none (one thread).
 * - Performance: one PBKDF2 per run (the cost the file's iteration count sets); main() is a
 *   list of short steps: flags, operands, password, path, other lines, new line, write.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/platform_util.h>

#include "broker/auth_passwd.h"

#define PW_CAP (MQL_PASSWD_PASS_MAX + 1) /* one more byte to detect a too long password */

static struct termios saved_term;
static volatile sig_atomic_t term_saved;

static void on_signal(int sig)
{
    (void)sig;
    if (term_saved)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_term);
    ssize_t r = write(STDERR_FILENO, "\n", 1);
    (void)r;
    _exit(1);
}

static void print_usage(void)
{
    printf("mqlite-passwd is a tool for managing password files for mqlite.\n\n");
    printf("Usage: mqlite-passwd [-I iterations] [-c | -D] passwordfile username\n");
    printf("       mqlite-passwd [-I iterations] [-c] -b passwordfile username password\n");
    printf(" -b : run in batch mode to allow passing passwords on the command line.\n");
    printf(" -c : create a new password file. This will overwrite existing files.\n");
    printf(" -D : delete the username rather than adding/updating its password.\n");
    printf(" -I : PBKDF2 iterations for new hashes (default %u).\n", MQL_PASSWD_DEFAULT_ITERATIONS);
    printf("\nPasswords are stored as salted PBKDF2-SHA512 hashes; the file is mode 0600.\n");
}

/*
 * Print prompt on stdout and read one line from stdin into buf (at most PW_CAP bytes, no
 * NUL added), with echo off when stdin is a terminal. Returns 0 and *len, or 1 after
 * printing an error (empty, too long, read error).
 */
static int read_password(const char *prompt, char *buf, size_t *len)
{
    struct termios t;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_term) == 0;
    size_t n = 0;
    bool too_long = false;
    int rc = 1;

    if (tty) { /* echo off before the prompt: nothing typed after it is ever shown */
        t = saved_term;
        t.c_lflag &= ~(tcflag_t)ECHO;
        term_saved = 1;
        if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) != 0) {
            term_saved = 0;
            fprintf(stderr, "Error: Unable to turn off terminal echo: %s.\n", strerror(errno));
            return 1;
        }
    }
    fputs(prompt, stdout);
    fflush(stdout);
    for (;;) {
        char c;
        ssize_t r = read(STDIN_FILENO, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fprintf(stderr, "\nError: Unable to read the password: %s.\n", strerror(errno));
            goto done;
        }
        if (r == 0 || c == '\n')
            break;
        if (n < PW_CAP)
            buf[n++] = c;
        else
            too_long = true;
        c = 0;
    }
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    printf("\n");
    if (too_long || n > MQL_PASSWD_PASS_MAX) {
        fprintf(stderr, "Error: Password must be less than 65536 characters long.\n");
        goto done;
    }
    if (n == 0) {
        fprintf(stderr, "Error: Empty password.\n");
        goto done;
    }
    *len = n;
    rc = 0;
done:
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_term);
        term_saved = 0;
    }
    if (rc != 0)
        mbedtls_platform_zeroize(buf, PW_CAP);
    return rc;
}

/* Ask for the password twice. Returns 0 with the password in pw (*len bytes), or 1. */
static int get_password(char *pw, size_t *len)
{
    static char again[PW_CAP];
    size_t len2 = 0;
    int rc = 1;
    if (read_password("Password: ", pw, len) != 0)
        return 1;
    if (read_password("Reenter password: ", again, &len2) != 0)
        goto done;
    if (len2 != *len || memcmp(pw, again, len2) != 0) {
        fprintf(stderr, "Error: Passwords do not match.\n");
        goto done;
    }
    rc = 0;
done:
    mbedtls_platform_zeroize(again, sizeof(again));
    if (rc != 0)
        mbedtls_platform_zeroize(pw, PW_CAP);
    return rc;
}

/* Fill salt with n random bytes from a freshly seeded CTR-DRBG. Returns 0 or 1. */
static int random_salt(uint8_t *salt, size_t n)
{
    static const char pers[] = "mqlite-passwd salt";
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    int rc = 1;
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, (const unsigned char *)pers,
                              sizeof(pers) - 1) != 0 ||
        mbedtls_ctr_drbg_random(&drbg, salt, n) != 0) {
        fprintf(stderr, "Error: Unable to get random bytes for the salt.\n");
        goto done;
    }
    rc = 0;
done:
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    return rc;
}

/* A growing output buffer. */
typedef struct outbuf {
    char *p;
    size_t n, cap;
} outbuf;

static int out_add(outbuf *o, const char *s, size_t n)
{
    if (o->cap - o->n < n + 1) {
        size_t ncap = o->cap == 0 ? 4096 : o->cap;
        while (ncap - o->n < n + 1)
            ncap *= 2;
        char *np = malloc(ncap);
        if (np == NULL) {
            fprintf(stderr, "Error: Out of memory.\n");
            return 1;
        }
        if (o->n > 0)
            memcpy(np, o->p, o->n);
        if (o->p != NULL) {
            mbedtls_platform_zeroize(o->p, o->cap);
            free(o->p);
        }
        o->p = np;
        o->cap = ncap;
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
    o->p[o->n] = '\0';
    return 0;
}

static void out_free(outbuf *o)
{
    if (o->p != NULL) {
        mbedtls_platform_zeroize(o->p, o->cap);
        free(o->p);
    }
    o->p = NULL;
    o->n = o->cap = 0;
}

/* Insert n bytes of s at offset at of o. Returns 0 or 1 (out of memory, printed). */
static int out_insert(outbuf *o, size_t at, const char *s, size_t n)
{
    size_t tail = o->n - at;
    if (out_add(o, s, n) != 0) /* grow by n (the bytes are moved into place below) */
        return 1;
    memmove(o->p + at + n, o->p + at, tail);
    memcpy(o->p + at, s, n);
    return 0;
}

/*
 * Copy the lines of the existing file at path into o, leaving out the lines of user.
 * OUT: *found says whether there were any, *at is the offset in o where the first one was.
 * Returns 0, or 1 after printing an error (cannot read, corrupt line).
 */
static int copy_others(const char *path, const char *user, outbuf *o, bool *found, size_t *at)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0, rc = 1;
    size_t ulen = strlen(user);
    mql_passwd_entry e;

    *found = false;
    if (f == NULL) {
        fprintf(stderr, "Error: Unable to open password file %s. %s.\n", path, strerror(errno));
        return 1;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        const char *why = NULL;
        lineno++;
        size_t len = (size_t)n;
        if (len > 0 && line[len - 1] == '\n')
            len--;
        if (mql_passwd_parse_line(line, len, &e, &why) != MQL_OK) {
            fprintf(stderr, "Error: Corrupt password file at %s:%d: %s.\n", path, lineno, why);
            goto done;
        }
        if (e.user != NULL && e.user_len == ulen && memcmp(e.user, user, ulen) == 0) {
            if (!*found)
                *at = o->n;
            *found = true;
            continue;
        }
        if (out_add(o, line, len) != 0 || out_add(o, "\n", 1) != 0)
            goto done;
    }
    if (ferror(f)) {
        fprintf(stderr, "Error: Unable to read password file %s. %s.\n", path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    mbedtls_platform_zeroize(&e, sizeof(e));
    if (line != NULL) {
        mbedtls_platform_zeroize(line, cap);
        free(line);
    }
    fclose(f);
    return rc;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/*
 * Replace the file at path with content, atomically, mode 0600. old: the stat of the file
 * being replaced, or NULL. Returns 0, or 1 after printing an error.
 */
static int write_atomic(const char *path, const char *content, size_t len, const struct stat *old)
{
    int rc = 1, fd = -1;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 8);
    char *dcopy = strdup(path);
    if (tmp == NULL || dcopy == NULL) {
        fprintf(stderr, "Error: Out of memory.\n");
        goto done;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".XXXXXX", 8);
    fd = mkstemp(tmp);
    if (fd < 0) {
        fprintf(stderr, "Error: Unable to open file %s for writing. %s.\n", path, strerror(errno));
        tmp[0] = '\0';
        goto done;
    }
    if (fchmod(fd, S_IRUSR | S_IWUSR) != 0) {
        fprintf(stderr, "Error: Unable to set mode 0600 on %s. %s.\n", tmp, strerror(errno));
        goto done;
    }
    if (old != NULL && geteuid() == 0 && (old->st_uid != 0 || old->st_gid != 0) &&
        fchown(fd, old->st_uid, old->st_gid) != 0) {
        fprintf(stderr, "Error: Unable to keep the owner of %s. %s.\n", path, strerror(errno));
        goto done;
    }
    if (write_all(fd, content, len) != 0 || fsync(fd) != 0) {
        fprintf(stderr, "Error: Unable to write %s. %s.\n", tmp, strerror(errno));
        goto done;
    }
    int cfd = fd;
    fd = -1;
    if (close(cfd) != 0) {
        fprintf(stderr, "Error: Unable to write %s. %s.\n", tmp, strerror(errno));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "Error: Unable to replace %s. %s.\n", path, strerror(errno));
        goto done;
    }
    tmp[0] = '\0'; /* renamed: nothing to remove */
    int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        (void)fsync(dfd); /* best effort: the rename is done either way */
        close(dfd);
    }
    rc = 0;
done:
    if (fd >= 0)
        close(fd);
    if (rc != 0 && tmp != NULL && tmp[0] != '\0')
        unlink(tmp);
    free(tmp);
    free(dcopy);
    return rc;
}

/* Parse -I's value. Returns 0 and *out, or 1 after printing an error. */
static int parse_iterations(const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v == 0 ||
        v > MQL_PASSWD_MAX_ITERATIONS) {
        fprintf(stderr, "Error: Number of iterations must be 1 to %u.\n",
                MQL_PASSWD_MAX_ITERATIONS);
        return 1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* The command line. */
typedef struct opts {
    bool batch, create, delete_user;
    uint32_t iterations;
    const char *file_arg, *username;
    int first; /* index of the first operand in argv */
} opts;

/* The flags before the operands into *o. Returns 0, or 1 after printing the error. */
static int parse_flags(int argc, char *argv[], opts *o)
{
    int idx;
    for (idx = 1; idx < argc; idx++) {
        if (strcmp(argv[idx], "-b") == 0) {
            o->batch = true;
        } else if (strcmp(argv[idx], "-c") == 0) {
            o->create = true;
        } else if (strcmp(argv[idx], "-D") == 0) {
            o->delete_user = true;
        } else if (strcmp(argv[idx], "-I") == 0) {
            if (idx + 1 == argc) {
                fprintf(stderr, "Error: -I argument given but not enough other arguments.\n");
                return 1;
            }
            if (parse_iterations(argv[++idx], &o->iterations) != 0)
                return 1;
        } else if (strcmp(argv[idx], "-U") == 0 || strcmp(argv[idx], "-H") == 0) {
            fprintf(stderr,
                    "Error: %s is not supported: mqlite-passwd only writes PBKDF2-SHA512 "
                    "hashes.\n",
                    argv[idx]);
            return 1;
        } else if (strcmp(argv[idx], "--") == 0) {
            idx++;
            break;
        } else if (argv[idx][0] == '-' && argv[idx][1] != '\0') {
            fprintf(stderr, "Error: Unknown option '%s'.\n", argv[idx]);
            return 1;
        } else {
            break;
        }
    }
    o->first = idx;
    return 0;
}

/* The flag combination and the number of operands (file, user, and the password with -b),
 * as mosquitto_passwd words its complaints. Returns 0, or 1 after printing the error. */
static int check_operands(int argc, const opts *o)
{
    if (o->create && o->delete_user) {
        fprintf(stderr, "Error: -c and -D cannot be used together.\n");
        return 1;
    }
    if (o->delete_user && o->batch) {
        fprintf(stderr, "Error: -b and -D cannot be used together.\n");
        return 1;
    }
    int nargs = argc - o->first, want = o->batch ? 3 : 2;
    if (nargs == want)
        return 0;
    if (o->create && nargs < want && o->batch)
        fprintf(stderr, "Error: -c argument given but password file, username, or password "
                        "missing.\n");
    else if (o->create && nargs < want)
        fprintf(stderr, "Error: -c argument given but password file or username missing.\n");
    else if (o->delete_user && nargs < want)
        fprintf(stderr, "Error: -D argument given but password file or username missing.\n");
    else
        print_usage();
    return 1;
}

/* -b: move the password from argv (arg, wiped so ps no longer shows it) into pw.
 * Returns 0, or 1 after printing the error. OUT: *len. */
static int take_batch_password(char *arg, char *pw, size_t *len)
{
    *len = strlen(arg);
    if (*len > MQL_PASSWD_PASS_MAX) {
        fprintf(stderr, "Error: Password must be less than 65536 characters long.\n");
        mbedtls_platform_zeroize(arg, *len);
        return 1;
    }
    memcpy(pw, arg, *len);
    mbedtls_platform_zeroize(arg, *len); /* hide it from ps from now on */
    if (*len == 0) {
        fprintf(stderr, "Error: Empty password.\n");
        return 1;
    }
    return 0;
}

/* The file to replace: a symlink is followed; a missing file is created under its name
 * (with -c only). Returns a heap string, or NULL after printing the error. */
static char *target_path(const char *file_arg, bool create)
{
    char *path = realpath(file_arg, NULL);
    if (path != NULL)
        return path;
    if (errno != ENOENT || !create) {
        fprintf(stderr, "Error: Unable to open password file %s. %s.\n", file_arg, strerror(errno));
        return NULL;
    }
    path = strdup(file_arg);
    if (path == NULL)
        fprintf(stderr, "Error: Out of memory.\n");
    return path;
}

/* Hash password (pass_len bytes) for o->username with a fresh salt and put its line into
 * out: at `at` in place of the old one when found, else at the end. The password, the salt
 * and the line are wiped. Returns 0, or 1 after printing the error. */
static int put_user_line(const opts *o, char *password, size_t pass_len, outbuf *out, bool found,
                         size_t at)
{
    int rc = 1;
    uint8_t salt[MQL_PASSWD_SALT_LEN];
    const char *why = NULL;
    size_t line_cap = MQL_PASSWD_LINE_MAX(strlen(o->username));
    char *line = malloc(line_cap);
    if (line == NULL) {
        fprintf(stderr, "Error: Out of memory.\n");
        goto fail;
    }
    if (random_salt(salt, sizeof(salt)) != 0)
        goto fail;
    if (mql_passwd_format_line(line, line_cap, o->username, (const uint8_t *)password, pass_len,
                               o->iterations, salt, sizeof(salt), &why) != MQL_OK) {
        fprintf(stderr, "Error: Unable to hash password: %s.\n", why);
        goto fail;
    }
    mbedtls_platform_zeroize(password, PW_CAP);
    size_t ll = strlen(line);
    line[ll] = '\n'; /* cap has room: MQL_PASSWD_LINE_MAX counts the NUL */
    if (out_insert(out, found ? at : out->n, line, ll + 1) != 0)
        goto fail;
    rc = 0;
fail:
    mbedtls_platform_zeroize(salt, sizeof(salt));
    if (line != NULL) {
        mbedtls_platform_zeroize(line, line_cap);
        free(line);
    }
    return rc;
}

int main(int argc, char *argv[])
{
    static char password[PW_CAP];
    size_t pass_len = 0, at = 0;
    bool found = false, have_old = false;
    opts o = {.iterations = MQL_PASSWD_DEFAULT_ITERATIONS};
    char *path = NULL;
    struct stat old;
    outbuf out = {0};
    const char *why = NULL;
    int rc = 1;

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (argc == 1) {
        print_usage();
        return 1;
    }
    if (parse_flags(argc, argv, &o) != 0 || check_operands(argc, &o) != 0)
        return 1;
    o.file_arg = argv[o.first];
    o.username = argv[o.first + 1];
    if (!mql_passwd_user_valid(o.username, strlen(o.username), &why)) {
        fprintf(stderr, "Error: Invalid username: %s.\n", why);
        return 1;
    }
    if (o.batch && take_batch_password(argv[o.first + 2], password, &pass_len) != 0)
        return 1;

    path = target_path(o.file_arg, o.create);
    if (path == NULL)
        goto fail;
    have_old = stat(path, &old) == 0;
    if (!o.create && copy_others(path, o.username, &out, &found, &at) != 0)
        goto fail;
    if (o.delete_user && !found) {
        fprintf(stderr, "Warning: User %s not found in password file.\n", o.username);
        goto fail;
    }
    if (!o.delete_user && !o.batch && get_password(password, &pass_len) != 0)
        goto fail;
    if (!o.delete_user && put_user_line(&o, password, pass_len, &out, found, at) != 0)
        goto fail;
    if (write_atomic(path, out.p != NULL ? out.p : "", out.n, have_old ? &old : NULL) != 0)
        goto fail;
    rc = 0;
fail:
    mbedtls_platform_zeroize(password, sizeof(password));
    out_free(&out);
    free(path);
    return rc;
}
