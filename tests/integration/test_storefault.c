/*
 * test_storefault.c - the broker while its store cannot write: disk full, file system gone
 * read-only, fsync errors, SQLITE_BUSY; and a real full tmpfs where permitted.
 *
 * Faults are injected into the real binary through MQLITE_TEST_STORE_FAULTS (see
 * storage/store_vfs.c): the variable names a control file in a directory of the test's own;
 * the broker inherits it from the test process (each Criterion test is its own process),
 * and the test switches a fault on and off by replacing the file. chmod cannot do this:
 * CI runs as root.
 *
 * Every scenario asserts what the issue promises: the broker stays up; clean sessions and
 * QoS 0/1 between them keep flowing; an MQTT 5 publisher whose message needed a commit gets
 * PUBACK/PUBREC 0x97 (disk full) or 0x80 (other errors) instead of success; an MQTT 3.1.1
 * publisher is disconnected without its PUBACK and gets it when it re-sends after the
 * fault; the episode is logged once (store file and SQLite error), counted, and the store
 * recovers by itself; and after a restart every acknowledged message is delivered. Where
 * permitted (root or user namespaces), one test fills a real tmpfs instead.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define PERSIST "persistence true\npersistence_location %DIR%\nsys_interval 1\n"
#define PUBACK 4
#define PUBREC 5

static char fdir[64];
static char control[128];

/* Remove the control directory and whatever a test left in it. */
static void fault_cleanup(void)
{
    static const char *const names[] = {
        "fault",         "fault.tmp",         "s.conf", "mqlite.db", "mqlite.db-wal",
        "mqlite.db-shm", "mqlite.db-journal", "wrap.sh"};
    char path[200];
    if (fdir[0] == '\0')
        return;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", fdir, names[i]);
        unlink(path);
    }
    snprintf(path, sizeof(path), "%s/store", fdir); /* real_full_tmpfs */
    rmdir(path);
    rmdir(fdir);
    fdir[0] = '\0';
}

/* Also after a failed test (tb_fini keeps the broker's own directory for inspection). */
static void storefault_fini(void)
{
    tb_fini();
    fault_cleanup();
}

TestSuite(storefault, .fini = storefault_fini, .timeout = 120);

/* A directory of the test's own for the control file, named in the broker's environment. */
static void fault_enable(void)
{
    snprintf(fdir, sizeof(fdir), "/tmp/mqlfault-XXXXXX");
    cr_assert_not_null(mkdtemp(fdir));
    snprintf(control, sizeof(control), "%s/fault", fdir);
    cr_assert_eq(setenv("MQLITE_TEST_STORE_FAULTS", control, 1), 0);
}

/* Replace the control file atomically: the broker reads it on every write. */
static void fault_set(const char *word)
{
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", control);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f);
    fputs(word, f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(rename(tmp, control), 0);
}

static tb_pkt expiry_props(uint32_t seconds)
{
    tb_pkt p = {0};
    pk_prop_u32(&p, PK_P_SESSION_EXPIRY, seconds);
    return p;
}

/* An MQTT 5 client whose session outlives the connection. */
static tc_client *open_v5_persistent(mql_broker *b, const char *id, bool present)
{
    tb_pkt props = expiry_props(3600);
    return tc_open_v5(tb_port(b), present, NULL, .client_id = id, .clean = false, .keepalive = 60,
                      .props = &props);
}

/* QoS 1 or 2 PUBLISH from an MQTT 5 client; assert the PUBACK/PUBREC reason. A QoS 2
 * exchange that succeeded is completed (PUBREL, PUBCOMP). */
static void publish_v5(tc_client *c, const char *topic, const char *payload, uint8_t qos,
                       uint16_t id, uint8_t want_reason)
{
    tc_sendp(c, PK_PUBLISH(.topic = topic, .payload = payload, .qos = qos, .id = id, .v5 = true));
    tc_expect_ack_v5(c, qos == 1 ? PUBACK : PUBREC, id, want_reason);
    if (qos == 2 && want_reason < 0x80) {
        tc_sendp(c, pk_pubrel(id));
        tc_expect_ack_v5(c, 7, id, 0);
    }
}

/* Clean sessions need no store: QoS 0 and 1 between them still round-trip. */
static void clean_sessions_flow(mql_broker *b, const char *tag)
{
    char sid[32], pid[32];
    snprintf(sid, sizeof(sid), "%s-csub", tag);
    snprintf(pid, sizeof(pid), "%s-cpub", tag);
    tc_client *s = tc_open(tb_port(b), sid, true, 60, false);
    tc_subscribe(s, 1, "c/t", 1, 1);
    tc_client *p = tc_open(tb_port(b), pid, true, 60, false);
    tc_publish(p, "c/t", "clean qos0", 0, false);
    tc_publish(p, "c/t", "clean qos1", 1, false);
    tc_expect_publish(s, TB_WAIT_MS, .topic = "c/t", .payload = "clean qos0", .qos = 0);
    uint16_t id =
        tc_expect_publish(s, TB_WAIT_MS, .topic = "c/t", .payload = "clean qos1", .qos = 1);
    tc_sendp(s, pk_puback(id));
    tc_disconnect(p);
    tc_disconnect(s);
}

/* After a restart, the persistent subscriber gets at least every message in want. */
static void assert_delivered_after_restart(mql_broker *b, const char *const *want, size_t n)
{
    tb_restart(b);
    tc_client *s = open_v5_persistent(b, "sf-sub", true);
    bool got[8] = {false};
    cr_assert(n <= 8);
    pk_v5 *m = malloc(sizeof(*m));
    cr_assert_not_null(m);
    for (int i = 0; i < 64; i++) { /* bounded: a few messages, each wait bounded */
        if (tc_recv_v5(s, m, 1000) <= 0)
            break;
        if (m->type == 6) { /* PUBREL of a QoS 2 delivery: the broker pipelines them */
            tc_sendp(s, pk_pubcomp(m->id));
            continue;
        }
        cr_assert_eq(m->type, 3, "packet type %u while draining", m->type);
        for (size_t k = 0; k < n; k++)
            if (pk_slice_eqs(m->payload, want[k]))
                got[k] = true;
        if (m->qos > 0)
            tc_sendp(s, m->qos == 1 ? pk_puback(m->id) : pk_pubrec(m->id));
    }
    free(m);
    for (size_t k = 0; k < n; k++)
        cr_assert(got[k], "acknowledged message \"%s\" was lost", want[k]);
    tc_disconnect(s);
}

/*
 * One fault episode mid-run. word: the fault; reason: what an MQTT 5 publisher must get;
 * error_text: the SQLite error the store's log line must name.
 */
static void fault_mid_run(const char *word, uint8_t reason, const char *error_text)
{
    fault_enable();
    mql_broker *b = tb_start(PERSIST);

    /* a persistent subscriber, offline: every QoS 1/2 message to it must be stored */
    tc_client *sub = open_v5_persistent(b, "sf-sub", false);
    tc_sub1_v5(sub, 1, "f/t", 2, 0, 2);
    tc_disconnect(sub);
    tc_client *p5 = open_v5_persistent(b, "sf-pub5", false);
    publish_v5(p5, "f/t", "before", 1, 1, 0x00);

    fault_set(word);
    /* [MQTT-3.4.2-1] [MQTT-3.5.2-1]: a refusal, never success for what is not stored */
    publish_v5(p5, "f/t", "during qos1", 1, 2, reason);
    publish_v5(p5, "f/t", "during qos2", 2, 20, reason);
    clean_sessions_flow(b, word);
    /* MQTT 3.1.1 cannot refuse a PUBLISH: no PUBACK, the connection is closed */
    tc_client *p3 = tc_open(tb_port(b), "sf-pub3", false, 60, false);
    tc_sendp(p3, PK_PUBLISH(.topic = "f/t", .payload = "v3 message", .qos = 1, .id = 7));
    tc_expect_closed(p3, 5000);
    tc_close(p3);
    tb_assert_serves(b);

    char line[512];
    snprintf(line, sizeof(line), "store %s/mqlite.db: transaction of", tb_dir(b));
    cr_assert(tb_log_contains(b, line, TB_WAIT_MS), "no store.commit line naming the file");
    cr_assert(tb_log_contains(b, error_text, TB_WAIT_MS), "the log does not say \"%s\"",
              error_text);
    cr_assert(tb_log_contains(b, "error [store.refused]", TB_WAIT_MS));

    /* recovery: no restart, no operator action beyond the fault going away */
    fault_set("off");
    cr_assert(tb_log_contains(b, "[store.recovered]", 6000), "the store did not recover");
    cr_assert_eq(tb_log_count(b, "error [store.commit]"), 1, "logged more than once");
    cr_assert_eq(tb_log_count(b, "error [store.refused]"), 1, "logged more than once");
    publish_v5(p5, "f/t", "after", 1, 3, 0x00);
    /* the released QoS 2 packet id starts a new message [MQTT-4.3.3-9] */
    publish_v5(p5, "f/t", "qos2 after", 2, 20, 0x00);
    tc_disconnect(p5);
    /* the 3.1.1 client re-sends its unacknowledged PUBLISH [v3.1.1 MQTT-4.4.0-1] */
    p3 = tc_open(tb_port(b), "sf-pub3", false, 60, true);
    tc_sendp(p3,
             PK_PUBLISH(.topic = "f/t", .payload = "v3 message", .qos = 1, .id = 7, .dup = true));
    tc_expectp(p3, pk_puback(7), 5000);
    tc_disconnect(p3);

    const char *const acked[] = {"before", "after", "qos2 after", "v3 message"};
    assert_delivered_after_restart(b, acked, 4);
    cr_assert_eq(tb_stop(b), 0);
    fault_cleanup();
}

Test(storefault, disk_full_mid_run)
{
    fault_mid_run("full", 0x97, "database or disk is full");
}

Test(storefault, read_only_mid_run)
{
    fault_mid_run("readonly", 0x80, "disk I/O error");
}

Test(storefault, fsync_errors_mid_run)
{
    fault_mid_run("ioerr", 0x80, "disk I/O error");
}

Test(storefault, busy_mid_run)
{
    fault_mid_run("busy", 0x80, "database is locked");
}

/* $SYS tells the operator: store/failing is 1 during the episode, store/refused counts. */
Test(storefault, sys_topics_report_the_episode)
{
    fault_enable();
    mql_broker *b = tb_start(PERSIST);
    tc_client *sub = open_v5_persistent(b, "sf-sub", false);
    tc_sub1_v5(sub, 1, "f/t", 1, 0, 1);
    tc_disconnect(sub);
    tc_client *p5 = open_v5_persistent(b, "sf-pub5", false);
    fault_set("full");
    publish_v5(p5, "f/t", "refused", 1, 1, 0x97);
    tc_client *mon = tc_open(tb_port(b), "sf-mon", true, 60, false);
    tc_subscribe(mon, 1, "$SYS/broker/store/failing", 0, 0);
    tc_subscribe(mon, 2, "$SYS/broker/store/refused", 0, 0);
    bool failing = false, refused = false;
    uint8_t buf[512];
    pk_publish_info info;
    int64_t until = tb_now_ms() + 5000;
    while ((!failing || !refused) && tb_now_ms() < until) {
        if (!tc_recv_publish(mon, buf, sizeof(buf), &info, 500))
            continue;
        char v[32] = {0};
        memcpy(v, info.payload, info.payload_len < 31 ? info.payload_len : 31);
        if (info.topic_len == 25 && memcmp(info.topic, "$SYS/broker/store/failing", 25) == 0)
            failing = failing || strcmp(v, "1") == 0;
        else
            refused = refused || atoi(v) >= 1;
    }
    cr_assert(failing, "$SYS/broker/store/failing never said 1");
    cr_assert(refused, "$SYS/broker/store/refused never counted the refusal");
    fault_set("off");
    cr_assert(tb_log_contains(b, "[store.recovered]", 6000));
    tc_disconnect(mon);
    tc_disconnect(p5);
    cr_assert_eq(tb_stop(b), 0);
    fault_cleanup();
}

/* A store that cannot be written at start stays a startup error naming the file. */
Test(storefault, unwritable_store_at_start_is_a_clear_error)
{
    fault_enable();
    fault_set("readonly");
    char conf[160];
    snprintf(conf, sizeof(conf), "%s/s.conf", fdir);
    FILE *f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "listener %u 127.0.0.1\nallow_anonymous true\nuser root\npersistence "
            "true\npersistence_location %s\n",
            tb_free_port(), fdir);
    fclose(f);
    char text[4096];
    int status = tb_run_config(conf, text, sizeof(text));
    cr_assert_eq(status, 1, "exit status %d; output: %s", status, text);
    char want[200];
    snprintf(want, sizeof(want), "%s/mqlite.db", fdir);
    cr_assert(strstr(text, want) != NULL, "the message does not name the store file: %s", text);
    cr_assert(strstr(text, "disk I/O error") != NULL, "the message does not say why: %s", text);
    fault_cleanup();
}

/*
 * A real full file system, where the test may make one: the broker runs in its own mount
 * namespace (`unshare -m`: root or user namespaces) with its store on a 512 KiB tmpfs,
 * half filled by a ballast file. QoS 1 messages of 4 KiB to an offline persistent
 * subscriber fill it until the publisher gets 0x97 (SQLITE_FULL from a real ENOSPC); then
 * the ballast is deleted (through /proc/PID/root, the broker's view of the mounts) and the
 * store recovers by itself. Every acknowledged message reaches the subscriber. Skipped when
 * the namespace or the mount is not permitted, and under $MQLITE_WRAPPER.
 */
Test(storefault, real_full_tmpfs)
{
    const char *w = getenv("MQLITE_WRAPPER");
    if (w != NULL && w[0] != '\0')
        cr_skip_test("runs the broker behind its own wrapper (unshare)");
    snprintf(fdir, sizeof(fdir), "/tmp/mqlfault-XXXXXX");
    cr_assert_not_null(mkdtemp(fdir));
    char store[128], wrap[128], cmd[600];
    snprintf(store, sizeof(store), "%s/store", fdir);
    snprintf(wrap, sizeof(wrap), "%s/wrap.sh", fdir);
    cr_assert_eq(mkdir(store, 0700), 0);
    snprintf(cmd, sizeof(cmd),
             "unshare -m sh -c 'mount -t tmpfs -o size=64k mqlprobe %s' >/dev/null 2>&1", store);
    if (system(cmd) != 0) {
        rmdir(store);
        cr_skip_test("unshare -m + mount tmpfs not permitted here");
    }
    FILE *f = fopen(wrap, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "#!/bin/sh\n"
            "exec unshare -m sh -c 'mount -t tmpfs -o size=512k mqlfull \"$0\" && "
            "dd if=/dev/zero of=\"$0/ballast\" bs=1024 count=256 2>/dev/null && exec \"$@\"' "
            "%s \"$@\"\n",
            store);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(chmod(wrap, 0700), 0);
    cr_assert_eq(setenv("MQLITE_WRAPPER", wrap, 1), 0);
    char conf[256];
    snprintf(conf, sizeof(conf), "persistence true\npersistence_location %s\n", store);
    mql_broker *b = tb_start(conf);

    tc_client *sub = open_v5_persistent(b, "sf-sub", false);
    tc_sub1_v5(sub, 1, "f/t", 1, 0, 1);
    tc_disconnect(sub);
    tc_client *p5 = open_v5_persistent(b, "sf-pub5", false);
    static char payload[4096];
    int acked = 0;
    uint8_t reason = 0;
    pk_v5 *ack = malloc(sizeof(*ack));
    cr_assert_not_null(ack);
    for (uint16_t id = 1; id <= 400 && reason == 0; id++) {
        snprintf(payload, sizeof(payload), "%05u", id);
        memset(payload + 5, 'x', sizeof(payload) - 6);
        tc_sendp(p5,
                 PK_PUBLISH(.topic = "f/t", .payload = payload, .qos = 1, .id = id, .v5 = true));
        tc_expect_v5(p5, ack, PUBACK, 5000);
        cr_assert_eq(ack->id, id);
        reason = ack->reason;
        acked += reason == 0;
    }
    free(ack);
    cr_assert_eq(reason, 0x97, "publisher got 0x%02x after %d messages, want 0x97", reason, acked);
    cr_assert(tb_log_contains(b, "database or disk is full", TB_WAIT_MS));
    clean_sessions_flow(b, "tmpfs");

    char ballast[200];
    snprintf(ballast, sizeof(ballast), "/proc/%d/root%s/ballast", tb_pid(b), store);
    cr_assert_eq(unlink(ballast), 0, "unlink %s: %s", ballast, strerror(errno));
    cr_assert(tb_log_contains(b, "[store.recovered]", 6000), "the store did not recover");
    publish_v5(p5, "f/t", "after", 1, 500, 0x00);
    tc_disconnect(p5);

    sub = open_v5_persistent(b, "sf-sub", true);
    int got = 0;
    bool after = false;
    pk_v5 *m = malloc(sizeof(*m));
    cr_assert_not_null(m);
    while (!after && tc_recv_v5(sub, m, 2000) > 0) { /* bounded: 400 messages at most */
        cr_assert_eq(m->type, 3);
        if (pk_slice_eqs(m->payload, "after"))
            after = true;
        else
            got++;
        tc_sendp(sub, pk_puback(m->id));
    }
    free(m);
    cr_assert(after, "the message acknowledged after recovery was not delivered");
    cr_assert_geq(got, acked, "%d acknowledged, %d delivered", acked, got);
    tc_disconnect(sub);
    cr_assert_eq(tb_stop(b), 0);
    unlink(wrap);
    rmdir(store); /* the tmpfs was only ever mounted in the broker's namespace */
    fault_cleanup();
}

/* The newest $SYS/broker/store/held_bytes value within ms (sys_interval 1), or -1. */
static long long held_bytes(tc_client *mon, int ms)
{
    long long v = -1;
    uint8_t buf[512];
    pk_publish_info info;
    int64_t end = tb_now_ms() + ms;
    while (tb_now_ms() < end) {
        if (!tc_recv_publish(mon, buf, sizeof(buf), &info, 200))
            continue;
        char tmp[32] = {0};
        memcpy(tmp, info.payload, info.payload_len < 31 ? info.payload_len : 31);
        v = atoll(tmp);
    }
    return v;
}

/* n retained QoS 0 messages of 2 KiB on topics PREFIX/0 ... from client p */
static void retained_flood(tc_client *p, const char *prefix, int n)
{
    static char payload[2048];
    memset(payload, 'r', sizeof(payload) - 1);
    for (int i = 0; i < n; i++) {
        char topic[64];
        snprintf(topic, sizeof(topic), "%s/%d", prefix, i);
        tc_publish(p, topic, payload, 0, true);
    }
}

/*
 * A long outage stays bounded in memory: what the store cannot commit is kept for the
 * retry, but only up to a limit (a quarter of store_max_bytes here, 256 KiB). Beyond it
 * the store is "overloaded" and the broker refuses new work that needs it (QoS 1/2 for
 * persistent sessions, new retained messages; MQTT 5 QoS 1/2 publishers get 0x97), so a
 * flood of retained messages during a disk-full episode does not grow the broker without
 * end. When the fault goes away the store commits the backlog and takes work again.
 */
Test(storefault, long_outage_memory_bounded)
{
    fault_enable();
    mql_broker *b = tb_start(PERSIST "store_max_bytes 1048576\n");
    tc_client *mon = tc_open(tb_port(b), "ov-mon", true, 60, false);
    tc_subscribe(mon, 1, "$SYS/broker/store/held_bytes", 0, 0);
    tc_client *p = tc_open(tb_port(b), "ov-pub", true, 60, false);

    fault_set("full");
    retained_flood(p, "ov/a", 200); /* 400 KiB held: beyond the limit */
    cr_assert(tb_log_contains(b, "[store.overload]", 5000), "no store.overload line");
    retained_flood(p, "ov/b", 400); /* 800 KiB more: refused, not held */
    cr_assert(tb_log_contains(b, "[store.full]", 5000), "the refusal is not logged");
    tb_assert_serves(b);
    long long held = held_bytes(mon, 2500);
    cr_assert(held > 256 * 1024 && held < 600 * 1024,
              "held_bytes %lld: expected the first flood only (about 400 KiB)", held);
    /* an MQTT 5 QoS 1 retained message is refused with 0x97, not taken as retained */
    tc_client *p5 = tc_open_v5(tb_port(b), false, NULL, .client_id = "ov-pub5", .clean = true);
    tc_sendp(p5, PK_PUBLISH(.topic = "ov/c", .payload = "r5", .qos = 1, .id = 3, .retain = true,
                            .v5 = true));
    tc_expect_ack_v5(p5, PUBACK, 3, 0x97);

    fault_set("off");
    cr_assert(tb_log_contains(b, "[store.recovered]", 6000), "the store did not recover");
    cr_assert(tb_log_contains(b, "below its limit again", 5000));
    cr_assert(tb_log_contains(b, "takes new messages again", 5000));
    tc_sendp(p5, PK_PUBLISH(.topic = "ov/c", .payload = "r5", .qos = 1, .id = 4, .retain = true,
                            .v5 = true));
    tc_expect_ack_v5(p5, PUBACK, 4, 0x10); /* accepted (no subscriber yet) */
    tc_client *late = tc_open(tb_port(b), "ov-late", true, 60, false);
    tc_subscribe(late, 1, "ov/c", 1, 1);
    tc_expect_publish(late, TB_WAIT_MS, .topic = "ov/c", .payload = "r5", .qos = 1, .retain = true);
    tc_disconnect(late);
    tc_disconnect(p5);
    tc_disconnect(p);
    tc_disconnect(mon);
    cr_assert_eq(tb_stop(b), 0);
    fault_cleanup();
}
