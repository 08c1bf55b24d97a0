/*
 * test_auth.c - unit tests of broker/auth.c and end-to-end tests of the mqlite-passwd tool.
 *
 * Purpose:
 * - passwd: PBKDF2-SHA512 against a published vector, a mosquitto-2.0-style `$7$` line made
 *   by Python's hashlib, loading good files (comments, blank lines, CRLF, several iteration
 *   counts), every kind of bad line with its exact "FILE:LINE: " prefix, right / wrong /
 *   unknown / anonymous checks, binary passwords, and that an unknown user costs about
 *   the same time as a wrong password.
 * - acl: anonymous rules, user sections, patterns with %u and %c (and their hardening),
 *   deny precedence in any line order, '+' and '#', `$SYS`, the SUBSCRIBE coverage rules
 *   documented in auth.h, shared subscriptions, malformed lines with FILE:LINE.
 * - ratelimit: allows, blocks after N failures, the growing delay and its cap, the window,
 *   recovery, forgetting, success, and the table-full eviction order.
 * - tool: the built mqlite-passwd (path in $MQLITE_PASSWD, set by meson): -c, -b, -D, -I,
 *   password from a pipe and from a pseudo-terminal (no echo), mode 0600, atomic replace,
 *   symlinks, exit codes and messages, and that the broker side verifies what it wrote.
 *
 * Files are written into a fresh mkdtemp() directory per test, removed by the fini hook.
 * Tests that run the tool use -I 1000 to stay fast, except the one that checks the default.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pty.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "broker/auth.h"

static char dir[64];
static char err[512];

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void setup(void)
{
    strcpy(dir, "/tmp/mql-auth-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    memset(err, 'x', sizeof(err) - 1);
    err[sizeof(err) - 1] = '\0';
}

static void teardown(void)
{
    nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

/* dir/name, in a static rotating buffer. */
static const char *path_of(const char *name)
{
    static char bufs[4][128];
    static int k;
    char *b = bufs[k++ % 4];
    snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
    return b;
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(text, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

static char *read_file(const char *path)
{
    static char buf[65536];
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static mql_bytes B(const char *s)
{
    return (mql_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static const uint8_t fixed_salt[MQL_PASSWD_SALT_LEN] = {1, 2,  3,  4,  5,  6,  7,  8,
                                                        9, 10, 11, 12, 13, 14, 15, 16};

/* A password-file line for user/pass with a fixed salt. */
static const char *make_line(const char *user, const char *pass, uint32_t iterations)
{
    static char bufs[4][512];
    static int k;
    char *b = bufs[k++ % 4];
    const char *why = "?";
    mql_err rc =
        mql_passwd_format_line(b, sizeof(bufs[0]), user, (const uint8_t *)pass, strlen(pass),
                               iterations, fixed_salt, sizeof(fixed_salt), &why);
    cr_assert_eq(rc, MQL_OK, "format_line(%s): %s", user, why);
    return b;
}

static bool check(const mql_passwd *pw, const char *user, const char *pass)
{
    return mql_passwd_check(pw, user, (const uint8_t *)pass, strlen(pass));
}

/* ======================================================================================== */
/* Password file                                                                            */
/* ======================================================================================== */

TestSuite(passwd, .init = setup, .fini = teardown);

Test(passwd, pbkdf2_sha512_vector)
{
    /* PBKDF2-HMAC-SHA512("password", "salt", 1, 64): the widely published test vector. */
    static const uint8_t want[64] = {
        0x86, 0x7f, 0x70, 0xcf, 0x1a, 0xde, 0x02, 0xcf, 0xf3, 0x75, 0x25, 0x99, 0xa3,
        0xa5, 0x3d, 0xc4, 0xaf, 0x34, 0xc7, 0xa6, 0x69, 0x81, 0x5a, 0xe5, 0xd5, 0x13,
        0x55, 0x4e, 0x1c, 0x8c, 0xf2, 0x52, 0xc0, 0x2d, 0x47, 0x0a, 0x28, 0x5a, 0x05,
        0x01, 0xba, 0xd9, 0x99, 0xbf, 0xe9, 0x43, 0xc0, 0x8f, 0x05, 0x02, 0x35, 0xd7,
        0xd6, 0x8b, 0x1d, 0xa5, 0x5e, 0x63, 0xf7, 0x3b, 0x60, 0xa5, 0x7f, 0xce};
    uint8_t out[64];
    cr_assert_eq(
        mql_passwd_hash(out, (const uint8_t *)"password", 8, (const uint8_t *)"salt", 4, 1),
        MQL_OK);
    cr_assert_arr_eq(out, want, 64);
    cr_assert_eq(mql_passwd_hash(out, (const uint8_t *)"p", 1, (const uint8_t *)"s", 1, 0),
                 MQL_E_INTERNAL);
    cr_assert_eq(mql_passwd_hash(out, (const uint8_t *)"p", 1, (const uint8_t *)"s", 0, 1),
                 MQL_E_INTERNAL);
}

Test(passwd, format_and_parse_round_trip)
{
    const char *line = make_line("alice", "wonderland", 1234);
    cr_assert(strncmp(line, "alice:$7$1234$AQIDBAUGBwgJCgsMDQ4PEA==$", 39) == 0, "%s", line);
    cr_assert_eq(strlen(line), 39 + 88, "%s", line);
    mql_passwd_entry e;
    const char *why = NULL;
    cr_assert_eq(mql_passwd_parse_line(line, strlen(line), &e, &why), MQL_OK, "%s", why);
    cr_assert_eq(e.user, line);
    cr_assert_eq(e.user_len, 5);
    cr_assert_eq(e.iterations, 1234);
    cr_assert_eq(e.salt_len, 16);
    cr_assert_arr_eq(e.salt, fixed_salt, 16);
    uint8_t h[64];
    cr_assert_eq(mql_passwd_hash(h, (const uint8_t *)"wonderland", 10, fixed_salt, 16, 1234),
                 MQL_OK);
    cr_assert_arr_eq(e.hash, h, 64);

    /* blank and comment lines */
    cr_assert_eq(mql_passwd_parse_line("", 0, &e, &why), MQL_OK);
    cr_assert_null(e.user);
    cr_assert_eq(mql_passwd_parse_line("   \t\r", 5, &e, &why), MQL_OK);
    cr_assert_null(e.user);
    cr_assert_eq(mql_passwd_parse_line("  # note", 8, &e, &why), MQL_OK);
    cr_assert_null(e.user);
}

Test(passwd, format_refuses_bad_input)
{
    char buf[512];
    const char *why = NULL;
    const uint8_t *pw = (const uint8_t *)"x";
    cr_assert_eq(mql_passwd_format_line(buf, sizeof(buf), "a:b", pw, 1, 10, fixed_salt, 16, &why),
                 MQL_E_CONFIG);
    cr_assert_str_eq(why, "user name contains ':'");
    cr_assert_eq(mql_passwd_format_line(buf, sizeof(buf), "", pw, 1, 10, fixed_salt, 16, &why),
                 MQL_E_CONFIG);
    cr_assert_eq(mql_passwd_format_line(buf, sizeof(buf), "a", pw, 1, 0, fixed_salt, 16, &why),
                 MQL_E_CONFIG);
    cr_assert_eq(mql_passwd_format_line(buf, sizeof(buf), "a", pw, 1, MQL_PASSWD_MAX_ITERATIONS + 1,
                                        fixed_salt, 16, &why),
                 MQL_E_CONFIG);
    cr_assert_eq(mql_passwd_format_line(buf, sizeof(buf), "a", pw, 1, 10, fixed_salt, 0, &why),
                 MQL_E_CONFIG);
    cr_assert_eq(mql_passwd_format_line(buf, 50, "a", pw, 1, 10, fixed_salt, 16, &why),
                 MQL_E_TOO_LARGE);
    cr_assert_eq(buf[0], '\0');
}

Test(passwd, user_name_rules)
{
    const char *why;
    cr_assert(mql_passwd_user_valid("alice", 5, &why));
    cr_assert(mql_passwd_user_valid("J\xc3\xbcrgen M", 9, &why)); /* UTF-8, inner space */
    cr_assert_not(mql_passwd_user_valid("", 0, &why));
    cr_assert_not(mql_passwd_user_valid("a:b", 3, &why));
    cr_assert_not(mql_passwd_user_valid(" a", 2, &why));
    cr_assert_not(mql_passwd_user_valid("a ", 2, &why));
    cr_assert_not(mql_passwd_user_valid("#a", 2, &why));
    cr_assert_not(mql_passwd_user_valid("a\tb", 3, &why));
    cr_assert_str_eq(why, "user name contains a control character");
    cr_assert_not(mql_passwd_user_valid("a\x7f", 2, &why));
    cr_assert_not(mql_passwd_user_valid("\xc3\x28", 2, &why));
    cr_assert_str_eq(why, "user name is not valid UTF-8");
}

Test(passwd, load_good_file_and_check)
{
    char text[4096];
    snprintf(text, sizeof(text),
             "# mqlite password file\n"
             "\n"
             "%s\n"
             "%s\r\n"  /* CRLF */
             "   \n"   /* white space only */
             "%s  \n", /* trailing blanks */
             make_line("alice", "wonderland", 1000), make_line("bob", "builder", 2000),
             make_line("J\xc3\xbcrgen M", "p\xc3\xa4ss word", 1000));
    const char *p = path_of("passwd");
    write_file(p, text, strlen(text));
    mql_passwd *pw = NULL;
    cr_assert_eq(mql_passwd_load(&pw, p, err, sizeof(err)), MQL_OK, "%s", err);
    cr_assert_str_empty(err);
    cr_assert_eq(mql_passwd_count(pw), 3);
    cr_assert(check(pw, "alice", "wonderland"));
    cr_assert(check(pw, "bob", "builder"));
    cr_assert(check(pw, "J\xc3\xbcrgen M", "p\xc3\xa4ss word"));
    cr_assert_not(check(pw, "alice", "builder"));
    cr_assert_not(check(pw, "alice", "wonderlan"));
    cr_assert_not(check(pw, "alice", "wonderland "));
    cr_assert_not(check(pw, "alice", ""));
    cr_assert_not(check(pw, "Alice", "wonderland"));
    cr_assert_not(check(pw, "carol", "wonderland"));
    cr_assert_not(check(pw, NULL, "wonderland"));
    cr_assert_not(mql_passwd_check(NULL, "alice", (const uint8_t *)"wonderland", 10));
    static uint8_t big[MQL_PASSWD_PASS_MAX + 1];
    cr_assert_not(mql_passwd_check(pw, "alice", big, sizeof(big)));
    mql_passwd_free(pw);
    mql_passwd_free(NULL);
}

Test(passwd, mosquitto_2_0_line_verifies)
{
    /* Made with Python: salt bytes 0..11, hashlib.pbkdf2_hmac('sha512', b'mosquitto-pw',
     * salt, 101), standard base64 - the layout mosquitto_passwd 2.0 writes. */
    const char *line = "m2user:$7$101$AAECAwQFBgcICQoL$TLH+W1FRJGDC+kRRI2LzE32B4sg8Fd6Y9CrRHt"
                       "IszJCfLbo/5hTPrdwcC0mD4KzLA8jBbKXV3poBUTTgwV1qNw==\n";
    const char *p = path_of("m2");
    write_file(p, line, strlen(line));
    mql_passwd *pw = NULL;
    cr_assert_eq(mql_passwd_load(&pw, p, err, sizeof(err)), MQL_OK, "%s", err);
    cr_assert(check(pw, "m2user", "mosquitto-pw"));
    cr_assert_not(check(pw, "m2user", "mosquitto-PW"));
    mql_passwd_free(pw);
}

Test(passwd, binary_password)
{
    static const uint8_t pass[] = {'a', 0, 'b', 0xff, 0};
    char line[512];
    const char *why;
    cr_assert_eq(mql_passwd_format_line(line, sizeof(line), "bin", pass, sizeof(pass), 100,
                                        fixed_salt, 16, &why),
                 MQL_OK);
    strcat(line, "\n");
    const char *p = path_of("bin");
    write_file(p, line, strlen(line));
    mql_passwd *pw = NULL;
    cr_assert_eq(mql_passwd_load(&pw, p, err, sizeof(err)), MQL_OK, "%s", err);
    cr_assert(mql_passwd_check(pw, "bin", pass, sizeof(pass)));
    cr_assert_not(mql_passwd_check(pw, "bin", pass, 1)); /* stops at the NUL: different */
    mql_passwd_free(pw);
}

Test(passwd, empty_file_has_no_users)
{
    const char *p = path_of("empty");
    write_file(p, "# nobody\n", 9);
    mql_passwd *pw = NULL;
    cr_assert_eq(mql_passwd_load(&pw, p, err, sizeof(err)), MQL_OK, "%s", err);
    cr_assert_eq(mql_passwd_count(pw), 0);
    cr_assert_not(check(pw, "alice", "x"));
    mql_passwd_free(pw);
}

Test(passwd, missing_file)
{
    mql_passwd *pw = (mql_passwd *)1;
    const char *p = path_of("nope");
    cr_assert_eq(mql_passwd_load(&pw, p, err, sizeof(err)), MQL_E_IO);
    cr_assert_null(pw);
    char want[256];
    snprintf(want, sizeof(want), "%s: No such file or directory", p);
    cr_assert_str_eq(err, want);
}

/* Load a file whose line 3 is `bad` (two good lines before it) and expect MQL_E_CONFIG with
 * the message "FILE:3: why". */
static void expect_bad_line(const char *bad, const char *why)
{
    char text[2048];
    snprintf(text, sizeof(text), "# header\n%s\n%s\n%s\n", make_line("ok", "pw", 10), bad,
             make_line("ok2", "pw", 10));
    const char *p = path_of("bad");
    write_file(p, text, strlen(text));
    mql_passwd *pw = (mql_passwd *)1;
    mql_err rc = mql_passwd_load(&pw, p, err, sizeof(err));
    cr_assert_eq(rc, MQL_E_CONFIG, "line '%s' was accepted", bad);
    cr_assert_null(pw);
    char want[1024];
    snprintf(want, sizeof(want), "%s:3: %s", p, why);
    cr_assert_str_eq(err, want);
}

Test(passwd, bad_lines_name_file_and_line)
{
    char good[256];
    strcpy(good, make_line("u", "pw", 10));          /* make_line's buffers are reused */
    const char *dollar_salt = strchr(good + 6, '$'); /* "$SALT$HASH" */
    char buf[512];

    expect_bad_line("alice", "expected USER:$7$ITERATIONS$SALT$HASH (no ':')");
    expect_bad_line("alice:secret", "not a hashed password (plaintext is not accepted: use "
                                    "mqlite-passwd)");
    expect_bad_line("alice:$6$abc$def", "unsupported hash type (expected $7$ PBKDF2-SHA512 as "
                                        "written by mqlite-passwd)");
    snprintf(buf, sizeof(buf), ":$7$10%s", dollar_salt);
    expect_bad_line(buf, "user name is empty");
    snprintf(buf, sizeof(buf), "  alice:$7$10%s", dollar_salt);
    expect_bad_line(buf, "user name has leading or trailing white space");
    snprintf(buf, sizeof(buf), "al\x01ice:$7$10%s", dollar_salt);
    expect_bad_line(buf, "user name contains a control character");
    snprintf(buf, sizeof(buf), "alice:$7$0%s", dollar_salt);
    expect_bad_line(buf, "iterations must be 1 to 10000000");
    snprintf(buf, sizeof(buf), "alice:$7$10000001%s", dollar_salt);
    expect_bad_line(buf, "iterations must be 1 to 10000000");
    snprintf(buf, sizeof(buf), "alice:$7$99999999999999999999%s", dollar_salt);
    expect_bad_line(buf, "iterations must be 1 to 10000000");
    snprintf(buf, sizeof(buf), "alice:$7$1x%s", dollar_salt);
    expect_bad_line(buf, "expected $7$ITERATIONS$SALT$HASH with ITERATIONS a decimal number");
    snprintf(buf, sizeof(buf), "alice:$7$%s", dollar_salt);
    expect_bad_line(buf, "expected $7$ITERATIONS$SALT$HASH with ITERATIONS a decimal number");
    expect_bad_line("alice:$7$10$AAAA", "expected $7$ITERATIONS$SALT$HASH (no '$' after the "
                                        "salt)");
    expect_bad_line("alice:$7$10$!!!!$AAAA", "salt is not 1 to 64 bytes of base64");
    expect_bad_line("alice:$7$10$$AAAA", "salt is not 1 to 64 bytes of base64");
    expect_bad_line("alice:$7$10$AAAA$AAAA", "hash is not 64 bytes of base64 (PBKDF2-SHA512)");
    snprintf(buf, sizeof(buf), "%s$x", good);
    expect_bad_line(buf, "hash is not 64 bytes of base64 (PBKDF2-SHA512)");
    snprintf(buf, sizeof(buf), "%sA", good);
    expect_bad_line(buf, "hash is not 64 bytes of base64 (PBKDF2-SHA512)");
}

Test(passwd, nul_byte_and_duplicates)
{
    const char *p = path_of("nul");
    char text[1024];
    int n = snprintf(text, sizeof(text), "%s\nbad\n", make_line("a", "b", 10));
    text[n - 3] = '\0'; /* "b\0d" on line 2 */
    write_file(p, text, (size_t)n);
    mql_passwd *pw = NULL;
    cr_assert_eq(mql_passwd_load(&pw, p, err, sizeof(err)), MQL_E_CONFIG);
    char want[256];
    snprintf(want, sizeof(want), "%s:2: line contains a NUL byte", p);
    cr_assert_str_eq(err, want);

    snprintf(text, sizeof(text), "%s\n%s\n# x\n%s\n", make_line("bob", "1", 10),
             make_line("alice", "2", 10), make_line("bob", "3", 10));
    write_file(p, text, strlen(text));
    cr_assert_eq(mql_passwd_load(&pw, p, err, sizeof(err)), MQL_E_CONFIG);
    snprintf(want, sizeof(want), "%s:4: user \"bob\" is already defined at line 1", p);
    cr_assert_str_eq(err, want);
}

static double now_s(void)
{
    struct timespec ts;
    /* CPU time of this thread: what the hash costs, not how busy the machine is */
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The fastest of 5 checks, in seconds. */
static double time_check(const mql_passwd *pw, const char *user, const char *pass)
{
    double best = 1e9;
    for (int i = 0; i < 5; i++) {
        double t0 = now_s();
        (void)check(pw, user, pass);
        double t = now_s() - t0;
        if (t < best)
            best = t;
    }
    return best;
}

Test(passwd, unknown_user_costs_a_pbkdf2)
{
    char text[1024];
    snprintf(text, sizeof(text), "%s\n%s\n%s\n", make_line("a", "x", 20000),
             make_line("b", "x", 20000), make_line("c", "x", 100));
    const char *p = path_of("timing");
    write_file(p, text, strlen(text));
    mql_passwd *pw = NULL;
    cr_assert_eq(mql_passwd_load(&pw, p, err, sizeof(err)), MQL_OK, "%s", err);
    double wrong = time_check(pw, "a", "wrong");
    double unknown = time_check(pw, "nobody", "wrong");
    double anon = time_check(pw, NULL, "wrong");
    /* The dummy uses the most common iteration count (20000): the same order of CPU time.
     * Skipping the hash would cost microseconds, 1000 times less: the bounds are wide. */
    cr_assert(unknown > wrong * 0.25 && unknown < wrong * 4.0, "wrong %.4fs unknown %.4fs", wrong,
              unknown);
    cr_assert(anon > wrong * 0.25 && anon < wrong * 4.0, "wrong %.4fs anon %.4fs", wrong, anon);
    mql_passwd_free(pw);
}

/* ======================================================================================== */
/* ACL                                                                                      */
/* ======================================================================================== */

TestSuite(acl, .init = setup, .fini = teardown);

static mql_acl *acl_of(const char *text)
{
    mql_acl *a = NULL;
    mql_err rc = mql_acl_parse(&a, text, strlen(text), "t.acl", err, sizeof(err));
    cr_assert_eq(rc, MQL_OK, "parse failed: %s", err);
    cr_assert_str_empty(err);
    return a;
}

#define R(acl, user, cid, topic) mql_acl_can_read(acl, user, cid, B(topic))
#define W(acl, user, cid, topic) mql_acl_can_write(acl, user, cid, B(topic))
#define S(acl, user, cid, filter) mql_acl_can_subscribe(acl, user, cid, B(filter))

Test(acl, no_acl_allows_everything)
{
    cr_assert(R(NULL, NULL, "c", "a/b"));
    cr_assert(W(NULL, "u", "c", "$SYS/x"));
    cr_assert(S(NULL, NULL, "c", "#"));
    cr_assert_not(S(NULL, NULL, "c", "a/#/b")); /* invalid filter */
    cr_assert_not(R(NULL, NULL, "c", "a/+"));   /* not a topic name */
    cr_assert_not(W(NULL, NULL, "c", ""));
    cr_assert_eq(mql_acl_rule_count(NULL), 0);
    mql_acl_free(NULL);
}

Test(acl, anonymous_and_user_sections)
{
    mql_acl *a = acl_of("# anonymous clients\n"
                        "topic read public/#\n"
                        "topic write public/inbox\n"
                        "\n"
                        "user alice\n"
                        "topic readwrite alice/#\n"
                        "topic read sensors/+/temp\n"
                        "user bob smith\n" /* names are the rest of the line */
                        "topic bob/#\n"    /* no access word: readwrite */
                        "user alice\n"     /* a second section for alice */
                        "topic write cmd/alice\n");
    cr_assert_eq(mql_acl_rule_count(a), 6);
    /* anonymous */
    cr_assert(R(a, NULL, "c1", "public/news"));
    cr_assert(R(a, NULL, "c1", "public"));
    cr_assert_not(W(a, NULL, "c1", "public/news"));
    cr_assert(W(a, NULL, "c1", "public/inbox"));
    cr_assert(R(a, NULL, "c1", "public/inbox/x")); /* read via public/# */
    cr_assert_not(R(a, NULL, "c1", "alice/x"));
    /* alice: her sections only, not the anonymous rules */
    cr_assert(R(a, "alice", "c2", "alice/x"));
    cr_assert(W(a, "alice", "c2", "alice/x/y"));
    cr_assert(R(a, "alice", "c2", "sensors/kitchen/temp"));
    cr_assert_not(W(a, "alice", "c2", "sensors/kitchen/temp"));
    cr_assert(W(a, "alice", "c2", "cmd/alice"));
    cr_assert_not(R(a, "alice", "c2", "cmd/alice"));
    cr_assert_not(R(a, "alice", "c2", "public/news"));
    /* "bob smith" */
    cr_assert(R(a, "bob smith", "c3", "bob/1"));
    cr_assert(W(a, "bob smith", "c3", "bob/1"));
    cr_assert_not(R(a, "bob", "c3", "bob/1"));
    /* a user without a section gets nothing */
    cr_assert_not(R(a, "carol", "c4", "public/news"));
    cr_assert_not(W(a, "carol", "c4", "public/inbox"));
    mql_acl_free(a);
}

Test(acl, wildcards_in_rules)
{
    mql_acl *a = acl_of("topic read a/+/c\n"
                        "topic read d/#\n"
                        "topic read +/x\n"
                        "topic write e/+\n");
    cr_assert(R(a, NULL, "c", "a/b/c"));
    cr_assert(R(a, NULL, "c", "a//c")); /* '+' matches an empty level */
    cr_assert_not(R(a, NULL, "c", "a/b/c/d"));
    cr_assert_not(R(a, NULL, "c", "a/c"));
    cr_assert(R(a, NULL, "c", "d")); /* '#' includes the parent */
    cr_assert(R(a, NULL, "c", "d/e/f/g"));
    cr_assert(R(a, NULL, "c", "d/"));
    cr_assert_not(R(a, NULL, "c", "dd"));
    cr_assert(R(a, NULL, "c", "q/x"));
    cr_assert(R(a, NULL, "c", "/x"));
    cr_assert_not(R(a, NULL, "c", "$q/x")); /* [MQTT-4.7.2-1] */
    cr_assert(W(a, NULL, "c", "e/1"));
    cr_assert_not(W(a, NULL, "c", "e"));
    cr_assert_not(W(a, NULL, "c", "e/1/2"));
    mql_acl_free(a);
}

Test(acl, sys_needs_an_explicit_rule)
{
    mql_acl *a = acl_of("topic readwrite #\n"
                        "topic read +/broker/#\n"
                        "user admin\n"
                        "topic read $SYS/#\n");
    cr_assert(R(a, NULL, "c", "x/y"));
    cr_assert_not(R(a, NULL, "c", "$SYS/broker/uptime"));
    cr_assert_not(S(a, NULL, "c", "$SYS/#"));
    cr_assert_not(S(a, NULL, "c", "$SYS/broker/uptime"));
    cr_assert(S(a, NULL, "c", "#")); /* does not reach $SYS, so no $SYS access is implied */
    cr_assert(R(a, "admin", "c", "$SYS/broker/uptime"));
    cr_assert(S(a, "admin", "c", "$SYS/#"));
    cr_assert(S(a, "admin", "c", "$SYS/broker/+"));
    cr_assert_not(W(a, "admin", "c", "$SYS/broker/uptime"));
    mql_acl_free(a);
}

Test(acl, deny_wins_in_any_order)
{
    const char *texts[] = {"topic readwrite #\ntopic deny secret/#\n",
                           "topic deny secret/#\ntopic readwrite #\n"};
    for (int i = 0; i < 2; i++) {
        mql_acl *a = acl_of(texts[i]);
        cr_assert(R(a, NULL, "c", "open/x"));
        cr_assert(W(a, NULL, "c", "open/x"));
        cr_assert_not(R(a, NULL, "c", "secret"));
        cr_assert_not(R(a, NULL, "c", "secret/x"));
        cr_assert_not(W(a, NULL, "c", "secret/x/y"));
        cr_assert(R(a, NULL, "c", "secretive"));
        mql_acl_free(a);
    }
    /* a deny in a user's section, and a deny pattern, override a pattern grant */
    mql_acl *a = acl_of("user u\n"
                        "topic deny dev/u/fw\n"
                        "pattern readwrite dev/%u/#\n"
                        "pattern deny dev/%u/keys/#\n");
    cr_assert(R(a, "u", "c", "dev/u/data"));
    cr_assert_not(W(a, "u", "c", "dev/u/fw"));
    cr_assert_not(R(a, "u", "c", "dev/u/keys/k1"));
    cr_assert(R(a, "v", "c", "dev/v/fw"));
    mql_acl_free(a);
}

Test(acl, patterns_substitute_user_and_client_id)
{
    mql_acl *a = acl_of("pattern read users/%u/#\n"
                        "pattern write clients/%c/out\n"
                        "pattern readwrite mix/%u-%c/x\n"
                        "pattern read pct/%d/%u\n" /* other '%' are literal */
                        "user alice\n"
                        "topic read extra\n");
    cr_assert_eq(mql_acl_rule_count(a), 5);
    cr_assert(R(a, "alice", "dev1", "users/alice/inbox"));
    cr_assert_not(R(a, "alice", "dev1", "users/bob/inbox"));
    cr_assert(W(a, "alice", "dev1", "clients/dev1/out"));
    cr_assert_not(W(a, "alice", "dev1", "clients/dev2/out"));
    cr_assert(W(a, "alice", "dev1", "mix/alice-dev1/x"));
    cr_assert(R(a, "alice", "dev1", "pct/%d/alice"));
    cr_assert(R(a, "alice", "dev1", "extra")); /* section rules and patterns together */
    /* anonymous: %u patterns are skipped, %c patterns apply */
    cr_assert_not(R(a, NULL, "dev1", "users//inbox"));
    cr_assert(W(a, NULL, "dev1", "clients/dev1/out"));
    cr_assert_not(W(a, NULL, "dev1", "mix/-dev1/x"));
    /* no client id: %c patterns are skipped */
    cr_assert_not(W(a, "alice", NULL, "clients//out"));
    mql_acl_free(a);
}

Test(acl, pattern_values_with_wildcards_or_slashes_grant_nothing)
{
    mql_acl *a = acl_of("pattern readwrite devices/%c/#\n"
                        "pattern read home/%u\n"
                        "pattern deny locked/%c/x\n"
                        "topic read locked/#\n");
    cr_assert(R(a, NULL, "plc", "devices/plc/a"));
    cr_assert_not(R(a, NULL, "#", "devices/a/b"));
    cr_assert_not(R(a, NULL, "+", "devices/a/b"));
    cr_assert_not(R(a, NULL, "plc/7", "devices/plc/7/a")); /* inside client "plc"'s tree */
    cr_assert_not(S(a, NULL, "#", "devices/#"));
    cr_assert_not(R(a, "a+b", "c", "home/a+b"));
    cr_assert_not(R(a, "a/b", "c", "home/a/b"));
    /* a deny pattern still applies, and a wildcard value widens it */
    cr_assert(R(a, NULL, "ok", "locked/other/x"));
    cr_assert_not(R(a, NULL, "ok", "locked/ok/x"));
    cr_assert_not(R(a, NULL, "+", "locked/other/x"));
    cr_assert_not(R(a, NULL, "a/b", "locked/a/b/x"));
    mql_acl_free(a);
}

Test(acl, long_substitution_uses_the_heap)
{
    char cid[1001];
    memset(cid, 'k', 1000);
    cid[1000] = '\0';
    char topic[1100];
    snprintf(topic, sizeof(topic), "devices/%s/out", cid);
    mql_acl *a = acl_of("pattern readwrite devices/%c/#\npattern deny devices/%c/out/secret\n");
    cr_assert(W(a, NULL, cid, topic));
    strcat(topic, "/secret");
    cr_assert_not(W(a, NULL, cid, topic));
    mql_acl_free(a);
}

/* The SUBSCRIBE table of auth.h: (rules, filter, allowed). */
Test(acl, subscribe_coverage)
{
    static const struct {
        const char *rules;
        const char *filter;
        bool ok;
    } cases[] = {
        {"topic read sensors/#", "sensors/+/temp", true},
        {"topic read sensors/#", "sensors/#", true},
        {"topic read sensors/#", "sensors", true},
        {"topic read sensors/#", "sensors/a/b/c", true},
        {"topic read sensors/#", "sensorsX/#", false},
        {"topic read sensors/#", "#", false},
        {"topic read sensors/#", "+/temp", false},
        {"topic read sensors/+/temp", "sensors/#", false},
        {"topic read sensors/+/temp", "sensors/+/temp", true},
        {"topic read sensors/+/temp", "sensors/k/temp", true},
        {"topic read sensors/+/temp", "sensors/+/+", false},
        {"topic read sensors/+/temp", "sensors/k/temp/#", false},
        {"topic read sensors/k/temp", "sensors/+/temp", false},
        {"topic read a/#", "a/+/#", true},
        {"topic read a/+/#", "a/#", false}, /* "a/#" also matches "a" */
        {"topic read a/+/#", "a/b/#", true},
        {"topic read a\ntopic read a/+/#", "a/#", false}, /* union: refused (documented) */
        {"topic read #", "#", true},
        {"topic read #", "+/x", true},
        {"topic read #", "$SYS/#", false},
        {"topic read +/#", "#", true},
        {"topic read +/#", "+", true},
        {"topic read +", "#", false},
        {"topic read +/+", "+/#", false},
        {"topic read $SYS/#", "$SYS/broker/uptime", true},
        {"topic read $SYS/#", "$SYS/#", true},
        {"topic read $SYS/#", "#", false},
        {"topic read +/broker", "$SYS/broker", false},
        {"topic write sensors/#", "sensors/x", false}, /* write does not allow reading */
        {"topic readwrite sensors/#", "sensors/x", true},
        {"topic sensors/#", "sensors/x", true},
        /* deny rules refuse any filter that could match a denied topic */
        {"topic read #\ntopic deny secret/#", "#", false},
        {"topic read #\ntopic deny secret/#", "secret/+", false},
        {"topic read #\ntopic deny secret/#", "+/x", false},
        {"topic read #\ntopic deny secret/#", "+", false}, /* "secret" itself */
        {"topic read #\ntopic deny secret/#", "sensors/#", true},
        {"topic read #\ntopic deny secret/#", "+/x/y", false},
        {"topic read #\ntopic deny a/+/c", "a/b/#", false},
        {"topic read #\ntopic deny a/+/c", "a/b/d", true},
        {"topic read #\ntopic deny a/+/c", "a/b", true},
        {"topic read #\ntopic deny #", "x", false},
        {"topic read #\ntopic read $SYS/#\ntopic deny #", "$SYS/x", true}, /* '#' skips $ */
        {"topic read $SYS/#\ntopic deny $SYS/secret", "$SYS/#", false},
        {"topic read $SYS/#\ntopic deny +/secret", "$SYS/#", true},
        /* shared subscriptions are checked on the inner filter */
        {"topic read sensors/#", "$share/g1/sensors/+/temp", true},
        {"topic read sensors/#", "$share/g1/#", false},
        {"topic read #", "$share/g1", false}, /* invalid */
        {"topic read #", "a/#/b", false},     /* invalid */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mql_acl *a = acl_of(cases[i].rules);
        bool got = S(a, NULL, "c", cases[i].filter);
        cr_expect_eq(got, cases[i].ok, "rules {%s} filter '%s': got %d", cases[i].rules,
                     cases[i].filter, got);
        mql_acl_free(a);
    }
}

Test(acl, subscribe_with_patterns)
{
    mql_acl *a = acl_of("pattern read devices/%c/#\n"
                        "pattern deny devices/%c/private\n"
                        "user ops\n"
                        "topic read devices/#\n");
    cr_assert(S(a, NULL, "plc1", "devices/plc1/#") == false); /* intersects the deny */
    cr_assert(S(a, NULL, "plc1", "devices/plc1/status"));
    cr_assert(S(a, NULL, "plc1", "devices/plc1/+/x"));
    cr_assert_not(S(a, NULL, "plc1", "devices/plc2/status"));
    cr_assert_not(S(a, NULL, "plc1", "devices/+/status"));
    cr_assert(S(a, "ops", "console", "devices/+/status"));
    cr_assert_not(S(a, "ops", "console", "devices/#")); /* devices/console/private */
    mql_acl_free(a);
}

/* Parse text whose last line is bad: expect MQL_E_CONFIG and "t.acl:LINE: why". */
static void expect_bad_acl(const char *text, int line, const char *why)
{
    mql_acl *a = (mql_acl *)1;
    mql_err rc = mql_acl_parse(&a, text, strlen(text), "t.acl", err, sizeof(err));
    cr_assert_eq(rc, MQL_E_CONFIG, "accepted: %s", text);
    cr_assert_null(a);
    char want[512];
    snprintf(want, sizeof(want), "t.acl:%d: %s", line, why);
    cr_assert_str_eq(err, want);
}

Test(acl, malformed_lines)
{
    expect_bad_acl("topic read a\nfoo bar\n", 2,
                   "unknown keyword 'foo' (allowed: user, topic, "
                   "pattern)");
    expect_bad_acl("# c\n\ntopic readonly a/b\n", 3,
                   "topic: unknown access 'readonly' (allowed: read, write, readwrite, deny)");
    expect_bad_acl("pattern rw a/%u\n", 1,
                   "pattern: unknown access 'rw' (allowed: read, write, readwrite, deny)");
    expect_bad_acl("topic read a/#/b\n", 1,
                   "topic: 'a/#/b' is not a valid topic filter ('+' and '#' must be whole "
                   "levels, '#' only last)");
    expect_bad_acl("user u\ntopic read a+\n", 2,
                   "topic: 'a+' is not a valid topic filter ('+' and '#' must be whole "
                   "levels, '#' only last)");
    expect_bad_acl("topic deny $share/g/a\n", 1,
                   "topic: '$share/g/a': rules apply to the filter inside a shared "
                   "subscription; write it without $share/GROUP/");
    expect_bad_acl("user\n", 1, "user: missing user name");
    expect_bad_acl("user   \t\n", 1, "user: missing user name");
    expect_bad_acl("topic\n", 1, "topic: missing topic filter");
    expect_bad_acl("pattern  \n", 1, "pattern: missing topic filter");
    static const char nul[] = "topic read a\ntopic read b\0c\n";
    mql_acl *a = (mql_acl *)1;
    cr_assert_eq(mql_acl_parse(&a, nul, sizeof(nul) - 1, "t.acl", err, sizeof(err)), MQL_E_CONFIG);
    cr_assert_null(a);
    cr_assert_str_eq(err, "t.acl:2: line contains a NUL byte");
    expect_bad_acl("Topic read a\n", 1,
                   "unknown keyword 'Topic' (allowed: user, topic, "
                   "pattern)");
}

Test(acl, mosquitto_quirks_and_white_space)
{
    /* `topic read` is the topic "read" with readwrite, as in mosquitto; lines may be
     * indented, use tabs and CRLF. */
    mql_acl *a = acl_of("  topic read\r\n"
                        "\ttopic\twrite\ta/b c\r\n" /* filter with a space */
                        "   # indented comment\n"
                        "user  alice \n");
    cr_assert(R(a, NULL, "c", "read"));
    cr_assert(W(a, NULL, "c", "read"));
    cr_assert(W(a, NULL, "c", "a/b c"));
    cr_assert_not(W(a, NULL, "c", "a/b"));
    mql_acl_free(a);
}

Test(acl, load_from_file)
{
    const char *p = path_of("acl");
    const char *text = "topic read pub/#\nuser u\ntopic write u/#\nbogus\n";
    write_file(p, text, strlen(text));
    mql_acl *a = (mql_acl *)1;
    cr_assert_eq(mql_acl_load(&a, p, err, sizeof(err)), MQL_E_CONFIG);
    cr_assert_null(a);
    char want[512];
    snprintf(want, sizeof(want), "%s:4: unknown keyword 'bogus' (allowed: user, topic, pattern)",
             p);
    cr_assert_str_eq(err, want);
    write_file(p, text, strlen(text) - 6);
    cr_assert_eq(mql_acl_load(&a, p, err, sizeof(err)), MQL_OK, "%s", err);
    cr_assert_str_empty(err);
    cr_assert(R(a, NULL, "c", "pub/x"));
    cr_assert(W(a, "u", "c", "u/x"));
    mql_acl_free(a);
    cr_assert_eq(mql_acl_load(&a, path_of("missing"), err, sizeof(err)), MQL_E_IO);
    cr_assert_null(a);
    cr_assert(strstr(err, "No such file or directory") != NULL, "%s", err);
}

Test(acl, many_users_sorted_lookup)
{
    static char text[200000];
    size_t n = 0;
    for (int i = 999; i >= 0; i--)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "user u%d\ntopic readwrite t/%d/#\n", i,
                              i);
    mql_acl *a = acl_of(text);
    char t[32];
    for (int i = 0; i < 1000; i += 37) {
        char u[16];
        snprintf(u, sizeof(u), "u%d", i);
        snprintf(t, sizeof(t), "t/%d/x", i);
        cr_assert(W(a, u, "c", t), "%s %s", u, t);
        snprintf(t, sizeof(t), "t/%d/x", i + 1);
        cr_assert_not(W(a, u, "c", t), "%s %s", u, t);
    }
    mql_acl_free(a);
}

/* ======================================================================================== */
/* Rate limiter                                                                             */
/* ======================================================================================== */

TestSuite(ratelimit);

static mql_ratelimit *rl_new(uint32_t slots)
{
    mql_ratelimit_cfg cfg;
    mql_ratelimit_defaults(&cfg);
    cfg.slots = slots;
    mql_ratelimit *rl = NULL;
    cr_assert_eq(mql_ratelimit_alloc(&rl, &cfg), MQL_OK);
    return rl;
}

Test(ratelimit, defaults_and_config_errors)
{
    mql_ratelimit_cfg c;
    mql_ratelimit_defaults(&c);
    cr_assert_eq(c.slots, 256);
    cr_assert_eq(c.max_failures, 5);
    cr_assert_eq(c.window_ms, 60000);
    mql_ratelimit *rl = NULL;
    cr_assert_eq(mql_ratelimit_alloc(&rl, NULL), MQL_OK);
    mql_ratelimit_free(rl);
    c.slots = 0;
    cr_assert_eq(mql_ratelimit_alloc(&rl, &c), MQL_E_CONFIG);
    cr_assert_null(rl);
    mql_ratelimit_defaults(&c);
    c.max_failures = 0;
    cr_assert_eq(mql_ratelimit_alloc(&rl, &c), MQL_E_CONFIG);
    mql_ratelimit_defaults(&c);
    c.max_delay_ms = c.base_delay_ms - 1;
    cr_assert_eq(mql_ratelimit_alloc(&rl, &c), MQL_E_CONFIG);
}

Test(ratelimit, blocks_after_five_failures_then_recovers)
{
    mql_ratelimit *rl = rl_new(16);
    uint64_t t = 1000000;
    cr_assert(mql_ratelimit_allow(rl, "10.0.0.8", t));
    for (int i = 0; i < 4; i++) {
        mql_ratelimit_fail(rl, "10.0.0.8", t + (uint64_t)i * 1000);
        cr_assert(mql_ratelimit_allow(rl, "10.0.0.8", t + (uint64_t)i * 1000));
    }
    mql_ratelimit_fail(rl, "10.0.0.8", t + 4000); /* 5th within 60 s */
    cr_assert_not(mql_ratelimit_allow(rl, "10.0.0.8", t + 4000));
    cr_assert_eq(mql_ratelimit_blocked_for(rl, "10.0.0.8", t + 4000), 10000);
    cr_assert(mql_ratelimit_allow(rl, "10.0.0.9", t + 4000)); /* other peers unaffected */
    cr_assert_not(mql_ratelimit_allow(rl, "10.0.0.8", t + 13999));
    cr_assert(mql_ratelimit_allow(rl, "10.0.0.8", t + 14000));

    /* the next block doubles: 20 s, then 40 s */
    uint64_t t2 = t + 20000;
    for (int i = 0; i < 5; i++)
        mql_ratelimit_fail(rl, "10.0.0.8", t2);
    cr_assert_eq(mql_ratelimit_blocked_for(rl, "10.0.0.8", t2), 20000);
    uint64_t t3 = t2 + 20000;
    for (int i = 0; i < 5; i++)
        mql_ratelimit_fail(rl, "10.0.0.8", t3);
    cr_assert_eq(mql_ratelimit_blocked_for(rl, "10.0.0.8", t3), 40000);
    mql_ratelimit_free(rl);
}

Test(ratelimit, failures_while_blocked_do_not_extend)
{
    mql_ratelimit *rl = rl_new(4);
    for (int i = 0; i < 5; i++)
        mql_ratelimit_fail(rl, "a", 100);
    for (int i = 0; i < 20; i++)
        mql_ratelimit_fail(rl, "a", 200);
    cr_assert_eq(mql_ratelimit_blocked_for(rl, "a", 200), 9900);
    mql_ratelimit_free(rl);
}

Test(ratelimit, delay_is_capped)
{
    mql_ratelimit_cfg cfg;
    mql_ratelimit_defaults(&cfg);
    cfg.max_failures = 1;
    cfg.base_delay_ms = 1000;
    cfg.max_delay_ms = 5000;
    mql_ratelimit *rl = NULL;
    cr_assert_eq(mql_ratelimit_alloc(&rl, &cfg), MQL_OK);
    uint64_t t = 0, want[] = {1000, 2000, 4000, 5000, 5000, 5000};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        mql_ratelimit_fail(rl, "x", t);
        cr_assert_eq(mql_ratelimit_blocked_for(rl, "x", t), want[i], "block %zu", i);
        t += want[i];
    }
    mql_ratelimit_free(rl);
}

Test(ratelimit, failures_outside_the_window_do_not_add_up)
{
    mql_ratelimit *rl = rl_new(4);
    for (int i = 0; i < 4; i++)
        mql_ratelimit_fail(rl, "p", 1000 + (uint64_t)i);
    for (int i = 0; i < 4; i++)
        mql_ratelimit_fail(rl, "p", 61000 + (uint64_t)i); /* a new window */
    cr_assert(mql_ratelimit_allow(rl, "p", 61010));
    mql_ratelimit_fail(rl, "p", 61010);
    cr_assert_not(mql_ratelimit_allow(rl, "p", 61010));
    mql_ratelimit_free(rl);
}

Test(ratelimit, doubling_is_forgotten)
{
    mql_ratelimit *rl = rl_new(4);
    for (int i = 0; i < 5; i++)
        mql_ratelimit_fail(rl, "p", 0);
    for (int i = 0; i < 5; i++)
        mql_ratelimit_fail(rl, "p", 10000);
    cr_assert_eq(mql_ratelimit_blocked_for(rl, "p", 10000), 20000);
    uint64_t later = 10000 + 3600000; /* forget_ms after the last failure */
    for (int i = 0; i < 5; i++)
        mql_ratelimit_fail(rl, "p", later);
    cr_assert_eq(mql_ratelimit_blocked_for(rl, "p", later), 10000);
    mql_ratelimit_free(rl);
}

Test(ratelimit, success_clears_failures)
{
    mql_ratelimit *rl = rl_new(4);
    for (int i = 0; i < 4; i++)
        mql_ratelimit_fail(rl, "p", 10);
    cr_assert_eq(mql_ratelimit_count(rl), 1);
    mql_ratelimit_ok(rl, "p");
    cr_assert_eq(mql_ratelimit_count(rl), 0); /* no history left: slot freed */
    for (int i = 0; i < 4; i++)
        mql_ratelimit_fail(rl, "p", 20);
    cr_assert(mql_ratelimit_allow(rl, "p", 20));
    mql_ratelimit_ok(rl, "never-seen");
    /* after a block the doubling survives a success */
    mql_ratelimit_fail(rl, "p", 20);
    cr_assert_not(mql_ratelimit_allow(rl, "p", 20));
    mql_ratelimit_ok(rl, "p");
    cr_assert_eq(mql_ratelimit_count(rl), 1);
    for (int i = 0; i < 5; i++)
        mql_ratelimit_fail(rl, "p", 20000);
    cr_assert_eq(mql_ratelimit_blocked_for(rl, "p", 20000), 20000);
    mql_ratelimit_free(rl);
    /* NULL limiter: everything allowed, nothing recorded */
    cr_assert(mql_ratelimit_allow(NULL, "p", 0));
    mql_ratelimit_fail(NULL, "p", 0);
    mql_ratelimit_ok(NULL, "p");
    cr_assert_eq(mql_ratelimit_count(NULL), 0);
}

Test(ratelimit, table_full_evicts_oldest_unblocked)
{
    mql_ratelimit *rl = rl_new(3);
    mql_ratelimit_fail(rl, "a", 100);
    mql_ratelimit_fail(rl, "b", 200);
    for (int i = 0; i < 5; i++)
        mql_ratelimit_fail(rl, "c", 50); /* blocked until 10050, oldest failure */
    cr_assert_eq(mql_ratelimit_count(rl), 3);
    mql_ratelimit_fail(rl, "d", 300); /* evicts "a": the oldest that is not blocked */
    cr_assert_eq(mql_ratelimit_count(rl), 3);
    cr_assert_not(mql_ratelimit_allow(rl, "c", 300)); /* the block survives */
    /* "a" starts again from zero: 4 failures do not block it */
    for (int i = 0; i < 4; i++)
        mql_ratelimit_fail(rl, "a", 400); /* evicts "b" */
    cr_assert(mql_ratelimit_allow(rl, "a", 400));
    cr_assert_eq(mql_ratelimit_count(rl), 3);
    mql_ratelimit_free(rl);
}

Test(ratelimit, table_full_of_blocks_evicts_the_one_ending_first)
{
    mql_ratelimit *rl = rl_new(2);
    for (int i = 0; i < 5; i++)
        mql_ratelimit_fail(rl, "a", 1000); /* until 11000 */
    for (int i = 0; i < 5; i++)
        mql_ratelimit_fail(rl, "b", 500); /* until 10500 */
    mql_ratelimit_fail(rl, "c", 2000);
    cr_assert_eq(mql_ratelimit_count(rl), 2);
    cr_assert(mql_ratelimit_allow(rl, "b", 2000)); /* evicted */
    cr_assert_not(mql_ratelimit_allow(rl, "a", 2000));
    mql_ratelimit_free(rl);
}

Test(ratelimit, long_addresses_are_cut_consistently)
{
    mql_ratelimit *rl = rl_new(4);
    char addr[200];
    memset(addr, '1', sizeof(addr) - 1);
    addr[sizeof(addr) - 1] = '\0';
    for (int i = 0; i < 5; i++)
        mql_ratelimit_fail(rl, addr, 0);
    cr_assert_not(mql_ratelimit_allow(rl, addr, 1));
    cr_assert_eq(mql_ratelimit_count(rl), 1);
    mql_ratelimit_free(rl);
}

/* ======================================================================================== */
/* mqlite-passwd, end to end                                                                */
/* ======================================================================================== */

TestSuite(tool, .init = setup, .fini = teardown);

static const char *tool_path(void)
{
    const char *p = getenv("MQLITE_PASSWD");
    cr_assert_not_null(p, "MQLITE_PASSWD is not set (run through meson test)");
    return p;
}

static char out_text[8192], err_text[8192];

/* Run mqlite-passwd with the NULL-terminated arguments, stdin_text on its stdin (a pipe),
 * stdout and stderr into out_text and err_text. Returns the exit status. */
static int run_tool(const char *stdin_text, ...)
{
    const char *argv[16];
    int argc = 0;
    argv[argc++] = "mqlite-passwd";
    va_list ap;
    va_start(ap, stdin_text);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && argc < 15)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;

    char outp[128], errp[128];
    snprintf(outp, sizeof(outp), "%s/.out", dir);
    snprintf(errp, sizeof(errp), "%s/.err", dir);
    int in[2];
    cr_assert_eq(pipe(in), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(in[0], 0);
        dup2(o, 1);
        dup2(e, 2);
        close(in[1]);
        execv(tool_path(), (char **)argv);
        _exit(127);
    }
    close(in[0]);
    if (stdin_text != NULL) {
        ssize_t w = write(in[1], stdin_text, strlen(stdin_text));
        cr_assert_eq(w, (ssize_t)strlen(stdin_text));
    }
    close(in[1]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    strcpy(out_text, read_file(outp));
    strcpy(err_text, read_file(errp));
    unlink(outp);
    unlink(errp);
    cr_assert(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void assert_verifies(const char *file, const char *user, const char *pass)
{
    mql_passwd *pw = NULL;
    cr_assert_eq(mql_passwd_load(&pw, file, err, sizeof(err)), MQL_OK, "%s", err);
    cr_assert(check(pw, user, pass), "%s does not verify", user);
    cr_assert_not(check(pw, user, "not-the-password"));
    mql_passwd_free(pw);
}

static void assert_mode_0600(const char *file)
{
    struct stat st;
    cr_assert_eq(stat(file, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0600, "mode %o", st.st_mode & 07777);
}

/* No file other than the expected ones in dir (no temporary file left). */
static int count_files(void)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ls -A %s | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    cr_assert_eq(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

Test(tool, batch_create_update_delete)
{
    const char *f = path_of("pw");
    cr_assert_eq(run_tool(NULL, "-I", "1000", "-c", "-b", f, "alice", "s3cret-A", NULL), 0, "%s",
                 err_text);
    cr_assert_str_empty(err_text);
    cr_assert(strstr(out_text, "s3cret") == NULL);
    assert_mode_0600(f);
    assert_verifies(f, "alice", "s3cret-A");
    cr_assert(strstr(read_file(f), "alice:$7$1000$") == read_file(f));

    /* add bob, a comment and carol; then change bob in place */
    cr_assert_eq(run_tool(NULL, "-I", "1000", "-b", f, "bob", "pw-bob-1", NULL), 0, "%s", err_text);
    FILE *a = fopen(f, "a");
    fputs("# keep me\n", a);
    fclose(a);
    cr_assert_eq(run_tool(NULL, "-I", "1000", "-b", f, "carol", "pw-carol", NULL), 0);
    char before[4096];
    strcpy(before, read_file(f));
    struct stat st1, st2;
    cr_assert_eq(stat(f, &st1), 0);
    cr_assert_eq(run_tool(NULL, "-I", "1000", "-b", f, "bob", "pw-bob-2", NULL), 0, "%s", err_text);
    cr_assert_eq(stat(f, &st2), 0);
    cr_assert_neq(st1.st_ino, st2.st_ino, "not replaced by rename");
    const char *after = read_file(f);
    /* same layout: alice, bob (new hash), comment, carol */
    cr_assert(strncmp(after, before, strchr(before, '\n') - before + 1) == 0);
    cr_assert(strstr(after, "\nbob:$7$1000$") != NULL);
    cr_assert(strstr(after, "\n# keep me\ncarol:") != NULL, "%s", after);
    cr_assert(strstr(before, strstr(after, "\n# keep me")) != NULL); /* tail unchanged */
    assert_verifies(f, "bob", "pw-bob-2");
    assert_verifies(f, "alice", "s3cret-A");
    assert_mode_0600(f);

    cr_assert_eq(run_tool(NULL, "-D", f, "bob", NULL), 0, "%s", err_text);
    cr_assert(strstr(read_file(f), "bob:") == NULL);
    assert_verifies(f, "carol", "pw-carol");
    cr_assert_eq(run_tool(NULL, "-D", f, "bob", NULL), 1);
    cr_assert_str_eq(err_text, "Warning: User bob not found in password file.\n");
    cr_assert_eq(count_files(), 1);
}

Test(tool, create_overwrites)
{
    const char *f = path_of("pw");
    cr_assert_eq(run_tool(NULL, "-I", "1000", "-c", "-b", f, "a", "x1", NULL), 0);
    cr_assert_eq(run_tool(NULL, "-I", "1000", "-c", "-b", f, "b", "x2", NULL), 0);
    mql_passwd *pw = NULL;
    cr_assert_eq(mql_passwd_load(&pw, f, err, sizeof(err)), MQL_OK, "%s", err);
    cr_assert_eq(mql_passwd_count(pw), 1);
    cr_assert(check(pw, "b", "x2"));
    cr_assert_not(check(pw, "a", "x1"));
    mql_passwd_free(pw);
}

Test(tool, default_iterations)
{
    const char *f = path_of("pw");
    cr_assert_eq(run_tool(NULL, "-c", "-b", f, "u", "p", NULL), 0, "%s", err_text);
    cr_assert(strncmp(read_file(f), "u:$7$10000$", 11) == 0, "%s", read_file(f));
    assert_verifies(f, "u", "p");
}

Test(tool, password_from_a_pipe)
{
    const char *f = path_of("pw");
    cr_assert_eq(run_tool("pipe-pw\npipe-pw\n", "-I", "1000", "-c", f, "u", NULL), 0, "%s",
                 err_text);
    cr_assert_str_eq(out_text, "Password: \nReenter password: \n");
    assert_verifies(f, "u", "pipe-pw");
    /* update through the pipe as well, CRLF input */
    cr_assert_eq(run_tool("new-pw\r\nnew-pw\r\n", "-I", "1000", f, "u", NULL), 0, "%s", err_text);
    assert_verifies(f, "u", "new-pw");

    cr_assert_eq(run_tool("one\ntwo\n", "-I", "1000", f, "u", NULL), 1);
    cr_assert_str_eq(err_text, "Error: Passwords do not match.\n");
    cr_assert_eq(run_tool("\n\n", "-I", "1000", f, "u", NULL), 1);
    cr_assert_str_eq(err_text, "Error: Empty password.\n");
    cr_assert_eq(run_tool("", "-I", "1000", f, "v", NULL), 1);
    cr_assert_str_eq(err_text, "Error: Empty password.\n");
    assert_verifies(f, "u", "new-pw"); /* unchanged by the failures */
    cr_assert_eq(count_files(), 1);
}

/* Read from the pty master until `want` appears, the tool exits (read fails) or 5 s pass;
 * appends to acc. */
static bool pty_wait(int master, const char *want, char *acc, size_t cap)
{
    size_t n = strlen(acc);
    for (int i = 0; i < 50 && strstr(acc, want) == NULL; i++) {
        struct pollfd p = {.fd = master, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(master, acc + n, cap - n - 1);
        if (r <= 0)
            break;
        n += (size_t)r;
        acc[n] = '\0';
    }
    return strstr(acc, want) != NULL;
}

Test(tool, password_from_a_terminal_without_echo)
{
    const char *f = path_of("pw");
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    if (pid < 0)
        cr_skip_test("no pseudo-terminal here: %s", strerror(errno));
    if (pid == 0) {
        execl(tool_path(), "mqlite-passwd", "-I", "1000", "-c", f, "tty-user", (char *)NULL);
        _exit(127);
    }
    static char acc[8192];
    acc[0] = '\0';
    cr_assert(pty_wait(master, "Password: ", acc, sizeof(acc)), "got '%s'", acc);
    cr_assert_eq(write(master, "TtyS3cret\n", 10), 10);
    cr_assert(pty_wait(master, "Reenter password: ", acc, sizeof(acc)), "got '%s'", acc);
    cr_assert_eq(write(master, "TtyS3cret\n", 10), 10);
    pty_wait(master, "\x01", acc, sizeof(acc)); /* never sent: reads until the tool exits */
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d: %s", st, acc);
    cr_assert(strstr(acc, "TtyS3cret") == NULL, "echoed: '%s'", acc);
    close(master);
    assert_verifies(f, "tty-user", "TtyS3cret");
    assert_mode_0600(f);
}

Test(tool, usage_and_argument_errors)
{
    const char *f = path_of("pw");
    cr_assert_eq(run_tool(NULL, NULL), 1);
    cr_assert(strstr(out_text, "Usage: mqlite-passwd") != NULL);
    cr_assert_eq(run_tool(NULL, "-c", "-D", f, "u", NULL), 1);
    cr_assert_str_eq(err_text, "Error: -c and -D cannot be used together.\n");
    cr_assert_eq(run_tool(NULL, "-b", "-D", f, "u", "p", NULL), 1);
    cr_assert_str_eq(err_text, "Error: -b and -D cannot be used together.\n");
    cr_assert_eq(run_tool(NULL, "-c", "-b", f, "u", NULL), 1);
    cr_assert_str_eq(err_text, "Error: -c argument given but password file, username, or password "
                               "missing.\n");
    cr_assert_eq(run_tool(NULL, "-c", f, NULL), 1);
    cr_assert_str_eq(err_text, "Error: -c argument given but password file or username "
                               "missing.\n");
    cr_assert_eq(run_tool(NULL, "-D", f, NULL), 1);
    cr_assert_str_eq(err_text, "Error: -D argument given but password file or username "
                               "missing.\n");
    cr_assert_eq(run_tool(NULL, "-x", f, "u", NULL), 1);
    cr_assert_str_eq(err_text, "Error: Unknown option '-x'.\n");
    cr_assert_eq(run_tool(NULL, "-U", f, NULL), 1);
    cr_assert_eq(run_tool(NULL, "-I", "0", "-c", "-b", f, "u", "p", NULL), 1);
    cr_assert_str_eq(err_text, "Error: Number of iterations must be 1 to 10000000.\n");
    cr_assert_eq(run_tool(NULL, "-c", "-b", f, "a:b", "p", NULL), 1);
    cr_assert_str_eq(err_text, "Error: Invalid username: user name contains ':'.\n");
    cr_assert_eq(run_tool(NULL, "-c", "-b", f, "u", "", NULL), 1);
    cr_assert_str_eq(err_text, "Error: Empty password.\n");
    cr_assert_eq(run_tool(NULL, "-b", f, "u", "p", NULL), 1); /* no file, no -c */
    char want[256];
    snprintf(want, sizeof(want),
             "Error: Unable to open password file %s. No such file or "
             "directory.\n",
             f);
    cr_assert_str_eq(err_text, want);
    cr_assert_eq(count_files(), 0);
}

Test(tool, corrupt_file_is_not_rewritten)
{
    const char *f = path_of("pw");
    char text[1024];
    snprintf(text, sizeof(text), "%s\nplain:text\n", make_line("a", "b", 10));
    write_file(f, text, strlen(text));
    cr_assert_eq(run_tool(NULL, "-b", f, "c", "d", NULL), 1);
    char want[512];
    snprintf(want, sizeof(want),
             "Error: Corrupt password file at %s:2: not a hashed password (plaintext is not "
             "accepted: use mqlite-passwd).\n",
             f);
    cr_assert_str_eq(err_text, want);
    cr_assert_str_eq(read_file(f), text);
}

Test(tool, symlink_is_followed)
{
    const char *target = path_of("real");
    const char *link = path_of("link");
    cr_assert_eq(run_tool(NULL, "-I", "1000", "-c", "-b", target, "a", "1", NULL), 0);
    cr_assert_eq(symlink(target, link), 0);
    cr_assert_eq(run_tool(NULL, "-I", "1000", "-b", link, "b", "2", NULL), 0, "%s", err_text);
    struct stat st;
    cr_assert_eq(lstat(link, &st), 0);
    cr_assert(S_ISLNK(st.st_mode));
    assert_verifies(target, "b", "2");
    assert_verifies(target, "a", "1");
    cr_assert_eq(count_files(), 2);
}

Test(tool, batch_password_is_never_printed)
{
    const char *f = path_of("pw");
    cr_assert_eq(run_tool(NULL, "-I", "1000", "-c", "-b", f, "u", "Visible?No", NULL), 0);
    cr_assert(strstr(out_text, "Visible") == NULL && strstr(err_text, "Visible") == NULL);
    cr_assert(strstr(read_file(f), "Visible") == NULL);
    cr_assert_eq(run_tool(NULL, "-b", f, "bad:user", "Visible?No", NULL), 1);
    cr_assert(strstr(err_text, "Visible") == NULL);
}
