/*
 * auth_file.h - helpers shared by the password file (auth_passwd.c) and the ACL file
 * (auth_acl.c): whole-file reading, line splitting, error messages, name order. Private to
 * those two files; the interface of authentication is auth.h.
 */
#ifndef MQL_AUTH_FILE_H
#define MQL_AUTH_FILE_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

/* MQL_AUTHFILE_MAX_BYTES: larger password and ACL files are refused. */
#define MQL_AUTHFILE_MAX_BYTES (64u * 1024u * 1024u)
/* MQL_AUTHFILE_QUOTE_MAX: bytes of a user name or word quoted in an error message. */
#define MQL_AUTHFILE_QUOTE_MAX 64

/* mql_authfile_seterr: format a message into errbuf (errlen bytes, truncated, always
 * NUL-terminated); does nothing when errbuf is NULL or errlen is 0. */
void mql_authfile_seterr(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* mql_authfile_is_space: true for the white space a line may carry around its words
 * (space, tab, and the CR of CRLF files). */
static inline bool mql_authfile_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/*
 * mql_authfile_read: read the whole file at path into a NUL-terminated heap buffer.
 * Returns MQL_OK, MQL_E_IO ("FILE: strerror" in errbuf), MQL_E_CONFIG (larger than
 * MQL_AUTHFILE_MAX_BYTES) or MQL_E_NOMEM. OUT: *out (the caller frees it) and *len on
 * success; nothing is left allocated on error.
 */
MQL_MUST_CHECK mql_err mql_authfile_read(const char *path, char **out, size_t *len, char *errbuf,
                                         size_t errlen);

/* mql_authfile_next_line: iterate the lines of text (len bytes): *pos starts at 0; *line
 * is set to the next line without its '\n' (borrowed from text). Returns false at the end.
 * A final line without '\n' counts; an empty text has no lines. */
bool mql_authfile_next_line(const char *text, size_t len, size_t *pos, const char **line,
                            size_t *line_len);

/* mql_authfile_name_cmp: order of user names: bytes first, then length (a prefix sorts
 * first). Returns <0, 0 or >0 like memcmp. */
int mql_authfile_name_cmp(const char *a, size_t alen, const char *b, size_t blen);

#endif
