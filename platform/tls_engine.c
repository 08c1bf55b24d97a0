/*
 * tls_engine.c - an nng TLS engine on mbedtls 2.28 (see tls_engine.h for why and for the
 * two side channels).
 *
 * The engine contract (nng/supplemental/tls/engine.h, nng 1.5.2):
 * - nng allocates and zeroes our config and connection state behind its own structures
 *   and calls the ops with its per-connection lock held, from its own threads, so one
 *   connection's ops never run concurrently with each other.
 * - Ciphertext moves through nng_tls_engine_send / _recv on the `arg` given to conn init;
 *   they return NNG_EAGAIN when nng's buffer is full / empty, and nng calls us again (the
 *   same op, with the same buffer) once its TCP I/O completed. mbedtls wants exactly that
 *   (MBEDTLS_ERR_SSL_WANT_READ / _WANT_WRITE, call again with the same arguments).
 * - Our ops return NNG_EAGAIN for "needs I/O first", 0, or an NNG error that nng hands to
 *   the application's aio unchanged.
 * Locking: `reg_mtx` guards the registry (its chains and each entry's identity fields);
 * `rng_mtx` the one random generator every config shares. Neither is held while calling
 * into nng. Performance: the registry costs one short locked list insert per connection.
 */
#include "tls_engine.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/version.h>
#include <mbedtls/entropy.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crl.h>
#include <mbedtls/x509_crt.h>
#include <nng/supplemental/tls/engine.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OWN 4  /* own_cert may be called once per key type */
#define MAX_ALPN 8 /* protocol names in one ALPN list */
#define REG_BUCKETS 251
#define CN_MAX 256
#define WHY_MAX 200

struct nng_tls_engine_config {
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca;
    mbedtls_x509_crl crl;
    bool have_crl;
    int n_own;
    mbedtls_x509_crt own_crt[MAX_OWN];
    mbedtls_pk_context own_key[MAX_OWN];
    char *server_name;              /* client: SNI and the name the server certificate must carry */
    const char *alpn[MAX_ALPN + 1]; /* NULL-terminated, pointing into alpn_buf */
    char *alpn_buf;
};

typedef enum { HS_PENDING, HS_DONE, HS_FAILED } hs_state;

struct nng_tls_engine_conn {
    void *tls; /* nng's arg: its TLS stream in nng 1.5.2 (registry key) */
    nng_tls_engine_config *cfg;
    mbedtls_ssl_context ssl;
    bool ssl_ready;
    /* registry fields, under reg_mtx */
    struct nng_tls_engine_conn *reg_next;
    hs_state hs;
    mql_tls_peer peer; /* valid when hs == HS_DONE */
    char cn[CN_MAX];
    char why[WHY_MAX]; /* when hs == HS_FAILED */
    int hs_err;        /* when hs == HS_FAILED: the NNG error the handshake op returned */
};

/* ---- random numbers: one generator for every config ---- */

static pthread_mutex_t rng_mtx = PTHREAD_MUTEX_INITIALIZER;
static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;

static int rng(void *unused, unsigned char *buf, size_t len)
{
    (void)unused;
    pthread_mutex_lock(&rng_mtx);
    int rv = mbedtls_ctr_drbg_random(&drbg, buf, len);
    pthread_mutex_unlock(&rng_mtx);
    return rv;
}

/* ---- the registry of live connections, keyed by nng's arg ---- */

static pthread_mutex_t reg_mtx = PTHREAD_MUTEX_INITIALIZER;
static nng_tls_engine_conn *reg[REG_BUCKETS];

static size_t reg_bucket(const void *key)
{
    return (size_t)(((uintptr_t)key >> 4) % REG_BUCKETS);
}

static void reg_add(nng_tls_engine_conn *ec)
{
    size_t b = reg_bucket(ec->tls);
    pthread_mutex_lock(&reg_mtx);
    ec->reg_next = reg[b];
    reg[b] = ec;
    pthread_mutex_unlock(&reg_mtx);
}

static void reg_remove(nng_tls_engine_conn *ec)
{
    size_t b = reg_bucket(ec->tls);
    pthread_mutex_lock(&reg_mtx);
    for (nng_tls_engine_conn **pp = &reg[b]; *pp != NULL; pp = &(*pp)->reg_next) {
        if (*pp == ec) {
            *pp = ec->reg_next;
            break;
        }
    }
    pthread_mutex_unlock(&reg_mtx);
}

/* Caller holds reg_mtx. */
static nng_tls_engine_conn *reg_find(const void *key)
{
    for (nng_tls_engine_conn *ec = reg[reg_bucket(key)]; ec != NULL; ec = ec->reg_next) {
        if (ec->tls == key)
            return ec;
    }
    return NULL;
}

/* ---- connection ops ---- */

static int bio_send(void *tls, const unsigned char *buf, size_t len)
{
    size_t n = len;
    int rv = nng_tls_engine_send(tls, buf, &n);
    if (rv == 0)
        return (int)n;
    return rv == NNG_EAGAIN    ? MBEDTLS_ERR_SSL_WANT_WRITE
           : rv == NNG_ECLOSED ? MBEDTLS_ERR_NET_CONN_RESET
                               : MBEDTLS_ERR_NET_SEND_FAILED;
}

static int bio_recv(void *tls, unsigned char *buf, size_t len)
{
    size_t n = len;
    int rv = nng_tls_engine_recv(tls, buf, &n);
    if (rv == 0)
        return (int)n;
    return rv == NNG_EAGAIN    ? MBEDTLS_ERR_SSL_WANT_READ
           : rv == NNG_ECLOSED ? MBEDTLS_ERR_NET_CONN_RESET
                               : MBEDTLS_ERR_NET_RECV_FAILED;
}

static int conn_init(nng_tls_engine_conn *ec, void *tls, nng_tls_engine_config *cfg)
{
    ec->tls = tls;
    ec->cfg = cfg;
    ec->hs = HS_PENDING;
    mbedtls_ssl_init(&ec->ssl);
    if (mbedtls_ssl_setup(&ec->ssl, &cfg->conf) != 0) {
        mbedtls_ssl_free(&ec->ssl);
        return NNG_ENOMEM;
    }
    if (cfg->server_name != NULL && mbedtls_ssl_set_hostname(&ec->ssl, cfg->server_name) != 0) {
        mbedtls_ssl_free(&ec->ssl);
        return NNG_ENOMEM;
    }
    mbedtls_ssl_set_bio(&ec->ssl, tls, bio_send, bio_recv, NULL);
    ec->ssl_ready = true;
    reg_add(ec);
    return 0;
}

static void conn_fini(nng_tls_engine_conn *ec)
{
    if (!ec->ssl_ready)
        return;
    reg_remove(ec);
    mbedtls_ssl_free(&ec->ssl);
    ec->ssl_ready = false;
}

static void conn_close(nng_tls_engine_conn *ec)
{
    (void)mbedtls_ssl_close_notify(&ec->ssl); /* best effort: the TCP close follows */
}

/* The Common Name of the verified peer certificate. Caller holds reg_mtx. */
static mql_tls_peer read_peer(nng_tls_engine_conn *ec)
{
    const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&ec->ssl);
    if (crt == NULL || mbedtls_ssl_get_verify_result(&ec->ssl) != 0)
        return MQL_TLS_PEER_NO_CERT;
    const mbedtls_x509_name *cn = NULL;
    for (const mbedtls_x509_name *n = &crt->subject; n != NULL; n = n->next) {
        if (n->oid.p == NULL || MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) != 0)
            continue;
        if (cn != NULL)
            return MQL_TLS_PEER_BAD_CN; /* two CNs: which one is the user is ambiguous */
        cn = n;
    }
    if (cn == NULL || cn->val.len == 0)
        return MQL_TLS_PEER_NO_CN;
    if (cn->val.len >= sizeof(ec->cn) || memchr(cn->val.p, '\0', cn->val.len) != NULL)
        return MQL_TLS_PEER_BAD_CN;
    memcpy(ec->cn, cn->val.p, cn->val.len);
    ec->cn[cn->val.len] = '\0';
    return MQL_TLS_PEER_OK;
}

/* The name of a TLS alert (RFC 5246 7.2, RFC 8446 6), or NULL for one we do not know. */
static const char *alert_name(unsigned char desc)
{
    static const struct {
        unsigned char id;
        const char *name;
    } names[] = {
        {0, "close_notify"},
        {10, "unexpected_message"},
        {20, "bad_record_mac"},
        {22, "record_overflow"},
        {40, "handshake_failure"},
        {42, "bad_certificate"},
        {43, "unsupported_certificate"},
        {44, "certificate_revoked"},
        {45, "certificate_expired"},
        {46, "certificate_unknown"},
        {47, "illegal_parameter"},
        {48, "unknown_ca"},
        {49, "access_denied"},
        {50, "decode_error"},
        {51, "decrypt_error"},
        {70, "protocol_version"},
        {71, "insufficient_security"},
        {80, "internal_error"},
        {86, "inappropriate_fallback"},
        {90, "user_canceled"},
        {109, "missing_extension"},
        {110, "unsupported_extension"},
        {112, "unrecognized_name"},
        {115, "unknown_psk_identity"},
        {116, "certificate_required"},
        {120, "no_application_protocol"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].id == desc)
            return names[i].name;
    return NULL;
}

/* What a fatal alert from the peer says, in words, with the alert's name. mbedtls 2.28
 * leaves the alert record in ssl.in_msg when it returns MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE
 * (level, description). */
static void describe_alert(nng_tls_engine_conn *ec, char *why, size_t len)
{
    unsigned char desc = ec->ssl.in_msg != NULL ? ec->ssl.in_msg[1] : 255;
    const char *name = alert_name(desc);
    char named[40];
    if (name == NULL) {
        snprintf(named, sizeof(named), "alert %u", (unsigned)desc);
        name = named;
    }
    switch (desc) {
    case MBEDTLS_SSL_ALERT_MSG_BAD_CERT:
    case MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT:
    case MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED:
    case MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED:
    case MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN:
    case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA:
    case MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED:
    case 116: /* certificate_required */
        snprintf(why, len, "the remote refused our certificate: %s", name);
        break;
    case MBEDTLS_SSL_ALERT_MSG_PROTOCOL_VERSION:
        snprintf(why, len, "the remote refused our TLS version (TLS 1.2 only): %s", name);
        break;
    case MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE:
        snprintf(why, len,
                 "the remote ended the handshake: %s (no cipher suite in common, or a "
                 "certificate it requires is missing)",
                 name);
        break;
    case MBEDTLS_SSL_ALERT_MSG_UNRECOGNIZED_NAME:
        snprintf(why, len, "the remote does not know the server name we asked for: %s", name);
        break;
    case MBEDTLS_SSL_ALERT_MSG_NO_APPLICATION_PROTOCOL:
        snprintf(why, len, "the remote accepts none of our ALPN protocols: %s", name);
        break;
    default:
        snprintf(why, len, "the remote ended the handshake: %s", name);
        break;
    }
}

/* Plain words for a failed handshake (mbedtls_strerror would add its whole string table
 * to the static binary). */
static void describe_failure(nng_tls_engine_conn *ec, int rv, char *why, size_t len)
{
    switch (rv) {
    case MBEDTLS_ERR_X509_CERT_VERIFY_FAILED: {
        char info[160] = "";
        uint32_t flags = mbedtls_ssl_get_verify_result(&ec->ssl);
        if (mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags) < 0)
            info[0] = '\0';
        char *nl;
        while ((nl = strchr(info, '\n')) != NULL)
            *nl = nl[1] != '\0' ? ';' : '\0';
        snprintf(why, len, "peer certificate not accepted: %s", info[0] ? info : "unknown");
        break;
    }
    case MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE:
        snprintf(why, len, "the client sent no certificate (require_certificate)");
        break;
    case MBEDTLS_ERR_SSL_BAD_HS_PROTOCOL_VERSION:
        snprintf(why, len, "protocol version: TLS 1.2 is needed");
        break;
    case MBEDTLS_ERR_SSL_NO_CIPHER_CHOSEN:
    case MBEDTLS_ERR_SSL_NO_USABLE_CIPHERSUITE:
        snprintf(why, len, "no cipher suite in common");
        break;
    case MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE:
        describe_alert(ec, why, len);
        break;
    case MBEDTLS_ERR_SSL_BAD_HS_CLIENT_HELLO:
    case MBEDTLS_ERR_SSL_INVALID_RECORD:
    case MBEDTLS_ERR_SSL_UNEXPECTED_MESSAGE:
        snprintf(why, len, "not a TLS handshake (plain MQTT on a TLS port?)");
        break;
    case MBEDTLS_ERR_NET_CONN_RESET:
    case MBEDTLS_ERR_NET_RECV_FAILED:
    case MBEDTLS_ERR_NET_SEND_FAILED:
    case MBEDTLS_ERR_SSL_CONN_EOF:
    case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
        snprintf(why, len, "the connection closed during the handshake");
        break;
    default:
        snprintf(why, len, "handshake failed (mbedtls -0x%04x)", (unsigned)-rv);
        break;
    }
}

/* The NNG error for a failed mbedtls handshake. */
static int handshake_error(int rv)
{
    switch (rv) {
    case MBEDTLS_ERR_X509_CERT_VERIFY_FAILED:
    case MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE:
        return NNG_EPEERAUTH;
    case MBEDTLS_ERR_NET_CONN_RESET:
    case MBEDTLS_ERR_SSL_CONN_EOF:
    case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
        return NNG_ECLOSED;
    case MBEDTLS_ERR_NET_RECV_FAILED:
    case MBEDTLS_ERR_NET_SEND_FAILED:
        return NNG_ECONNRESET;
    default:
        return NNG_ECRYPTO;
    }
}

/* nng 1.5.2 keeps no state for a failed handshake: it closes the TCP stream but calls the
 * handshake op again from its send and receive callbacks that are still running (the
 * alert we sent completing, buffered bytes). mbedtls must not run again then (it would
 * read past the failure and may report another one, e.g. the peer's answering alert), so
 * the first failure, its reason and its error stand. Reading `hs` without reg_mtx is safe
 * here: only this op writes it, and nng serialises one connection's ops. */
static int conn_handshake(nng_tls_engine_conn *ec)
{
    if (ec->hs == HS_FAILED)
        return ec->hs_err;
    int rv = mbedtls_ssl_handshake(&ec->ssl);
    if (rv == MBEDTLS_ERR_SSL_WANT_READ || rv == MBEDTLS_ERR_SSL_WANT_WRITE)
        return NNG_EAGAIN;
    pthread_mutex_lock(&reg_mtx);
    if (rv == 0) {
        ec->peer = read_peer(ec);
        ec->hs = HS_DONE;
    } else {
        describe_failure(ec, rv, ec->why, sizeof(ec->why));
        ec->hs_err = handshake_error(rv);
        ec->hs = HS_FAILED;
    }
    pthread_mutex_unlock(&reg_mtx);
    return rv == 0 ? 0 : ec->hs_err;
}

/* An mbedtls error after the handshake, as nng expects it. */
static int io_error(int rv)
{
    switch (rv) {
    case MBEDTLS_ERR_SSL_WANT_READ:
    case MBEDTLS_ERR_SSL_WANT_WRITE:
        return NNG_EAGAIN;
    case 0: /* mbedtls_ssl_read: end of stream without close_notify */
    case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
    case MBEDTLS_ERR_SSL_CONN_EOF:
    case MBEDTLS_ERR_NET_CONN_RESET:
        return NNG_ECLOSED;
    case MBEDTLS_ERR_NET_RECV_FAILED:
    case MBEDTLS_ERR_NET_SEND_FAILED:
        return NNG_ECONNRESET;
    default:
        return NNG_ECRYPTO;
    }
}

static int conn_recv(nng_tls_engine_conn *ec, uint8_t *buf, size_t *szp)
{
    int rv = mbedtls_ssl_read(&ec->ssl, buf, *szp);
    if (rv > 0) {
        *szp = (size_t)rv;
        return 0;
    }
    return io_error(rv);
}

static int conn_send(nng_tls_engine_conn *ec, const uint8_t *buf, size_t *szp)
{
    int rv = mbedtls_ssl_write(&ec->ssl, buf, *szp);
    if (rv > 0) {
        *szp = (size_t)rv;
        return 0;
    }
    return rv == 0 ? NNG_EAGAIN : io_error(rv);
}

static bool conn_verified(nng_tls_engine_conn *ec)
{
    return mbedtls_ssl_get_verify_result(&ec->ssl) == 0;
}

/* ---- config ops ---- */

/* The ALPN list for the next config init on this thread (mql_tls_config_alloc). */
static _Thread_local struct {
    const char *list;
    nng_tls_engine_config *inited; /* set by our config init: the config is ours */
} next_cfg;

/* Split "a,b" into cfg->alpn. */
static int set_alpn(nng_tls_engine_config *cfg, const char *list)
{
    if ((cfg->alpn_buf = strdup(list)) == NULL)
        return NNG_ENOMEM;
    int n = 0;
    char *save = NULL;
    size_t total = strlen(list);
    if (total == 0 || list[0] == ',' || list[total - 1] == ',' || strstr(list, ",,") != NULL)
        return NNG_EINVAL;
    for (char *p = strtok_r(cfg->alpn_buf, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
        if (n == MAX_ALPN || strlen(p) > 255)
            return NNG_EINVAL;
        cfg->alpn[n++] = p;
    }
    cfg->alpn[n] = NULL;
    return mbedtls_ssl_conf_alpn_protocols(&cfg->conf, cfg->alpn) == 0 ? 0 : NNG_EINVAL;
}

static void config_fini(nng_tls_engine_config *cfg)
{
    mbedtls_ssl_config_free(&cfg->conf);
    mbedtls_x509_crt_free(&cfg->ca);
    mbedtls_x509_crl_free(&cfg->crl);
    for (int i = 0; i < cfg->n_own; i++) {
        mbedtls_x509_crt_free(&cfg->own_crt[i]);
        mbedtls_pk_free(&cfg->own_key[i]);
    }
    free(cfg->server_name);
    free(cfg->alpn_buf);
}

static int config_init(nng_tls_engine_config *cfg, nng_tls_mode mode)
{
    bool server = mode == NNG_TLS_MODE_SERVER;
    mbedtls_ssl_config_init(&cfg->conf);
    mbedtls_x509_crt_init(&cfg->ca);
    mbedtls_x509_crl_init(&cfg->crl);
    int rv = mbedtls_ssl_config_defaults(&cfg->conf,
                                         server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                         MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (rv != 0) {
        config_fini(cfg);
        return NNG_ENOMEM;
    }
    /* nng's defaults: a server does not ask for a certificate, a client checks the
     * server's */
    mbedtls_ssl_conf_authmode(&cfg->conf,
                              server ? MBEDTLS_SSL_VERIFY_NONE : MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_rng(&cfg->conf, rng, NULL);
    mbedtls_ssl_conf_min_version(&cfg->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(&cfg->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ca_chain(&cfg->conf, &cfg->ca, NULL);
    if (next_cfg.list != NULL && (rv = set_alpn(cfg, next_cfg.list)) != 0) {
        config_fini(cfg);
        return rv;
    }
    next_cfg.inited = cfg;
    return 0;
}

static int config_server(nng_tls_engine_config *cfg, const char *name)
{
    char *dup = strdup(name);
    if (dup == NULL)
        return NNG_ENOMEM;
    free(cfg->server_name);
    cfg->server_name = dup;
    return 0;
}

static int config_auth(nng_tls_engine_config *cfg, nng_tls_auth_mode mode)
{
    switch (mode) {
    case NNG_TLS_AUTH_MODE_NONE:
        mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_NONE);
        return 0;
    case NNG_TLS_AUTH_MODE_OPTIONAL:
        mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_OPTIONAL);
        return 0;
    case NNG_TLS_AUTH_MODE_REQUIRED:
        mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
        return 0;
    }
    return NNG_EINVAL;
}

static int config_ca_chain(nng_tls_engine_config *cfg, const char *certs, const char *crl)
{
    if (mbedtls_x509_crt_parse(&cfg->ca, (const unsigned char *)certs, strlen(certs) + 1) != 0)
        return NNG_EINVAL;
    if (crl != NULL) {
        if (mbedtls_x509_crl_parse(&cfg->crl, (const unsigned char *)crl, strlen(crl) + 1) != 0)
            return NNG_EINVAL;
        cfg->have_crl = true;
    }
    mbedtls_ssl_conf_ca_chain(&cfg->conf, &cfg->ca, cfg->have_crl ? &cfg->crl : NULL);
    return 0;
}

static int config_own_cert(nng_tls_engine_config *cfg, const char *cert, const char *key,
                           const char *pass)
{
    if (cfg->n_own == MAX_OWN)
        return NNG_ENOSPC;
    mbedtls_x509_crt *crt = &cfg->own_crt[cfg->n_own];
    mbedtls_pk_context *pk = &cfg->own_key[cfg->n_own];
    mbedtls_x509_crt_init(crt);
    mbedtls_pk_init(pk);
    int rv = NNG_EINVAL;
    if (mbedtls_x509_crt_parse(crt, (const unsigned char *)cert, strlen(cert) + 1) != 0)
        goto fail;
    int prv = mbedtls_pk_parse_key(pk, (const unsigned char *)key, strlen(key) + 1,
                                   (const unsigned char *)pass, pass ? strlen(pass) : 0);
    if (prv == MBEDTLS_ERR_PK_PASSWORD_REQUIRED || prv == MBEDTLS_ERR_PK_PASSWORD_MISMATCH)
        rv = NNG_EPERM;
    if (prv != 0)
        goto fail;
    if (mbedtls_ssl_conf_own_cert(&cfg->conf, crt, pk) != 0) {
        rv = NNG_ENOMEM;
        goto fail;
    }
    cfg->n_own++;
    return 0;
fail:
    mbedtls_x509_crt_free(crt);
    mbedtls_pk_free(pk);
    return rv;
}

/* mbedtls 2.28 speaks TLS 1.2 (its 1.3 is experimental, not in Debian's build), and
 * mqlite offers nothing older: any range that contains 1.2 gives 1.2. */
static int config_version(nng_tls_engine_config *cfg, nng_tls_version min, nng_tls_version max)
{
    (void)cfg;
    if (min > max)
        return NNG_EINVAL;
    if (min > NNG_TLS_1_2 || max < NNG_TLS_1_2)
        return NNG_ENOTSUP;
    return 0;
}

static nng_tls_engine_conn_ops conn_ops = {
    .size = sizeof(nng_tls_engine_conn),
    .init = conn_init,
    .fini = conn_fini,
    .close = conn_close,
    .handshake = conn_handshake,
    .recv = conn_recv,
    .send = conn_send,
    .verified = conn_verified,
};

static nng_tls_engine_config_ops config_ops = {
    .size = sizeof(nng_tls_engine_config),
    .init = config_init,
    .fini = config_fini,
    .server = config_server,
    .auth = config_auth,
    .ca_chain = config_ca_chain,
    .own_cert = config_own_cert,
    .version = config_version,
};

static const nng_tls_engine engine = {
    .version = NNG_TLS_ENGINE_VERSION,
    .config_ops = &config_ops,
    .conn_ops = &conn_ops,
    .name = "mqlite-mbedtls",
    .description = "mqlite's engine on mbed TLS " MBEDTLS_VERSION_STRING,
    .fips_mode = false,
};

/* ---- registration ---- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static char init_error[200];

static void engine_register(void)
{
    static const char pers[] = "mqlite tls engine";
    nng_tls_config *probe = NULL;
    int rv;
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    rv = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, (const unsigned char *)pers,
                               sizeof(pers) - 1);
    if (rv != 0) {
        snprintf(init_error, sizeof(init_error),
                 "TLS: cannot seed the random generator "
                 "(mbedtls -0x%04x)",
                 (unsigned)-rv);
        return;
    }
    /* nng registers its own engine when it initialises itself, lazily, at the first call
     * that needs it; nng_tls_config_alloc is one. Let that happen first, or ours would be
     * replaced. */
    if ((rv = nng_tls_config_alloc(&probe, NNG_TLS_MODE_CLIENT)) == 0)
        nng_tls_config_free(probe);
    if ((rv = nng_tls_engine_register(&engine)) != 0) {
        snprintf(init_error, sizeof(init_error), "TLS: nng refused the mqlite TLS engine: %s",
                 nng_strerror(rv));
        return;
    }
    if (strcmp(nng_tls_engine_name(), engine.name) != 0)
        snprintf(init_error, sizeof(init_error), "TLS: nng uses the engine \"%s\", not mqlite's",
                 nng_tls_engine_name());
}

mql_err mql_tls_engine_init(char *errbuf, size_t errlen)
{
    (void)pthread_once(&init_once, engine_register);
    if (init_error[0] != '\0') {
        snprintf(errbuf, errlen, "%s", init_error);
        return MQL_E_INTERNAL;
    }
    return MQL_OK;
}

int mql_tls_config_alloc(nng_tls_config **out, nng_tls_mode mode, const char *alpn)
{
    next_cfg.list = alpn;
    next_cfg.inited = NULL;
    int rv = nng_tls_config_alloc(out, mode);
    bool ours = next_cfg.inited != NULL;
    next_cfg.list = NULL;
    next_cfg.inited = NULL;
    if (rv == 0 && !ours) {
        nng_tls_config_free(*out);
        *out = NULL;
        return NNG_ENOTSUP;
    }
    return rv;
}

/* ---- queries by stream ---- */

mql_tls_peer mql_tls_peer_cn(nng_stream *s, char *cn, size_t len)
{
    mql_tls_peer p = MQL_TLS_PEER_UNKNOWN;
    pthread_mutex_lock(&reg_mtx);
    nng_tls_engine_conn *ec = reg_find(s);
    if (ec != NULL && ec->hs != HS_DONE)
        p = ec->hs == HS_FAILED ? MQL_TLS_PEER_NO_CERT : MQL_TLS_PEER_HANDSHAKE;
    else if (ec != NULL)
        p = ec->peer;
    if (p == MQL_TLS_PEER_OK) {
        if (strlen(ec->cn) < len)
            memcpy(cn, ec->cn, strlen(ec->cn) + 1);
        else
            p = MQL_TLS_PEER_BAD_CN;
    }
    pthread_mutex_unlock(&reg_mtx);
    return p;
}

bool mql_tls_stream_known(nng_stream *s)
{
    pthread_mutex_lock(&reg_mtx);
    bool known = reg_find(s) != NULL;
    pthread_mutex_unlock(&reg_mtx);
    return known;
}

bool mql_tls_failure(nng_stream *s, char *why, size_t len)
{
    pthread_mutex_lock(&reg_mtx);
    nng_tls_engine_conn *ec = reg_find(s);
    bool failed = ec != NULL && ec->hs == HS_FAILED;
    if (failed)
        snprintf(why, len, "%s", ec->why);
    pthread_mutex_unlock(&reg_mtx);
    return failed;
}
