/*
 * fuzz_config.c - libFuzzer target for the configuration file parser (broker/config.c).
 *
 * One input is one configuration file: written to a private temporary directory and read
 * with mql_config_load, the function mqlite -c and SIGHUP use (so getline, NUL bytes, the
 * byte order mark, CRLF and include_dir are all in play). Errors are fine; what must hold:
 *   - no crash, no leak, no undefined behaviour (the sanitizers);
 *   - an error has a message, and it names the file (or an include_dir line) first;
 *   - success leaves a configuration the broker can use: listener count in range, every
 *     text field NUL-terminated within its array, values within the documented ranges;
 *   - the parse is deterministic: loading the same file again gives the same result.
 *
 * Also linked with replay.c (gcc, no libFuzzer) as fuzz_config_replay, which the unit suite
 * runs on corpus/config.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_config: check failed at line %d: %s\n", __LINE__, #cond);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define TERMINATED(field) CHECK(memchr((field), '\0', sizeof(field)) != NULL)

static char dir[64];
static char path[128];

static void cleanup(void)
{
    unlink(path);
    rmdir(dir);
}

static void init_once(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof(dir), "%.40s/fuzz_config.XXXXXX", tmp);
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/in.conf", dir);
    atexit(cleanup);
}

static void check_config(const mql_config *cfg)
{
    CHECK(cfg->n_listeners >= 0 && cfg->n_listeners <= MQL_MAX_LISTENERS);
    for (int i = 0; i < cfg->n_listeners; i++) {
        const mql_listener_conf *l = &cfg->listeners[i];
        CHECK(l->port >= 1);
        CHECK(l->protocol == MQL_LISTENER_MQTT || l->protocol == MQL_LISTENER_WEBSOCKETS);
        TERMINATED(l->address);
        TERMINATED(l->certfile);
        TERMINATED(l->keyfile);
        TERMINATED(l->keyfile_password);
        TERMINATED(l->cafile);
        TERMINATED(l->websockets_path);
    }
    CHECK(cfg->max_qos <= 2);
    CHECK(cfg->max_packet_size == 0 || cfg->max_packet_size >= 20);
    CHECK(cfg->max_inflight_messages <= 65535);
    CHECK(cfg->max_connections >= -1);
    CHECK(cfg->sys_interval <= 86400);
    CHECK(cfg->store_commit_window_ms <= 10000);
    CHECK(cfg->n_log_files >= 0 && cfg->n_log_files <= MQL_MAX_LOG_FILES);
    for (int i = 0; i < cfg->n_log_files; i++) {
        TERMINATED(cfg->log_files[i].path);
        TERMINATED(cfg->log_files[i].where);
    }
    CHECK(cfg->client_id_conflict == MQL_CONFLICT_TAKEOVER ||
          cfg->client_id_conflict == MQL_CONFLICT_REJECT_NEW);
    CHECK(cfg->store_sync == MQL_STORE_SYNC_FULL || cfg->store_sync == MQL_STORE_SYNC_NORMAL ||
          cfg->store_sync == MQL_STORE_SYNC_OFF);
    TERMINATED(cfg->persistence_location);
    TERMINATED(cfg->password_file);
    TERMINATED(cfg->acl_file);
    TERMINATED(cfg->pid_file);
    TERMINATED(cfg->user);
    CHECK(cfg->include_dir[0] == '\0'); /* every include_dir line was read */
}

/* Load the file into *cfg; check the message on failure. */
static mql_err load(mql_config *cfg, char *err, size_t errlen)
{
    mql_config_defaults(cfg);
    memset(err, 0x01, errlen - 1); /* a message that is not written shows up */
    err[errlen - 1] = '\0';
    mql_err rc = mql_config_load(cfg, path, err, errlen);
    if (rc == MQL_OK) {
        CHECK(err[0] == '\0');
        check_config(cfg);
    } else {
        CHECK(rc == MQL_E_CONFIG || rc == MQL_E_IO || rc == MQL_E_NOMEM);
        /* "FILE:LINE: ..." or "FILE: ..." (an included file names itself first) */
        CHECK(err[0] != '\0' && err[0] != 0x01 && strchr(err, ':') != NULL);
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_once();
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(size == 0 || fwrite(data, 1, size, f) == size);
    CHECK(fclose(f) == 0);

    static mql_config a, b; /* large (listener blocks): not on the stack */
    char ea[1024], eb[1024];
    mql_err ra = load(&a, ea, sizeof(ea));
    mql_err rb = load(&b, eb, sizeof(eb));
    CHECK(ra == rb);
    if (ra == MQL_OK)
        CHECK(memcmp(&a, &b, sizeof(a)) == 0);
    else
        CHECK(strcmp(ea, eb) == 0);
    return 0;
}
