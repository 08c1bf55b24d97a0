/*
 * auth_file.c - what the password file and the ACL file share: reading a whole file with a
 * size limit, splitting it into lines, formatting the one error message of a failed load,
 * and the byte order user names are sorted in.
 *
 * Pure helpers below auth_passwd.c and auth_acl.c. Locking: none; no global state.
 * Performance: a file is read once per load (start-up and SIGHUP) into one buffer grown by
 * doubling, at most MQL_AUTHFILE_MAX_BYTES; the buffer is wiped before it is freed on error
 * (it may hold password hashes).
 */
#include "auth_file.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/platform_util.h>

void mql_authfile_seterr(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (errbuf == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

mql_err mql_authfile_read(const char *path, char **out, size_t *len, char *errbuf, size_t errlen)
{
    mql_err rc = MQL_E_IO;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        mql_authfile_seterr(errbuf, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    for (;;) {
        if (cap - n < 4096) {
            size_t ncap = cap == 0 ? 8192 : cap * 2;
            if (ncap > MQL_AUTHFILE_MAX_BYTES + 1)
                ncap = MQL_AUTHFILE_MAX_BYTES + 1;
            if (ncap <= n + 1) {
                mql_authfile_seterr(errbuf, errlen, "%s: larger than %u bytes", path,
                                    MQL_AUTHFILE_MAX_BYTES);
                rc = MQL_E_CONFIG;
                goto fail;
            }
            char *nbuf = realloc(buf, ncap);
            if (nbuf == NULL) {
                mql_authfile_seterr(errbuf, errlen, "%s: out of memory", path);
                rc = MQL_E_NOMEM;
                goto fail;
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                mql_authfile_seterr(errbuf, errlen, "%s: %s", path, strerror(errno));
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return MQL_OK;
fail:
    if (f != NULL)
        fclose(f);
    if (buf != NULL) {
        mbedtls_platform_zeroize(buf, cap);
        free(buf);
    }
    return rc;
}

bool mql_authfile_next_line(const char *text, size_t len, size_t *pos, const char **line,
                            size_t *line_len)
{
    if (*pos >= len)
        return false;
    const char *start = text + *pos;
    const char *nl = memchr(start, '\n', len - *pos);
    size_t l = nl != NULL ? (size_t)(nl - start) : len - *pos;
    *line = start;
    *line_len = l;
    *pos += l + (nl != NULL ? 1 : 0);
    return true;
}

int mql_authfile_name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}
