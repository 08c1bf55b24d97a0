/*
 * tls_conf.c - the one place that turns file names into an nng TLS configuration, for
 * listeners (mql_tls_conf_server) and for bridge dials (mql_tls_conf_client).
 *
 * Every configuration is allocated through mqlite's own TLS engine (mql_tls_config_alloc,
 * tls_engine.c), offers TLS 1.2 or later, and has its certificate and key checked with
 * mbedtls before nng sees them, so a wrong key password or a key that does not belong to
 * the certificate is an error naming the file instead of a failed handshake later. Private
 * key material read here is wiped before it is freed.
 *
 * Locking: none; every function works on its own arguments and may run on any thread.
 * Performance: runs at start-up, on SIGHUP and once per bridge; files are small PEM files
 * read whole into memory.
 */
#include <dirent.h>
#include <errno.h>
#include <mbedtls/pk.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/x509_crt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "net_int.h"
#include "tls_engine.h"

/* Read a whole (small) text file; NULL with errno set on failure. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (len < cap - 1)
            break;
        char *nb = realloc(buf, cap * 2);
        if (nb == NULL) {
            free(buf);
            buf = NULL;
            errno = ENOMEM;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (buf != NULL) {
        if (ferror(f)) {
            free(buf);
            buf = NULL;
        } else {
            buf[len] = '\0';
        }
    }
    fclose(f);
    return buf;
}

/* mbedtls checks that nng's own_cert does not do: the key decrypts and matches the
 * certificate. Writes the reason into errbuf. */
static bool cert_key_match(const mql_tls_files *o, const char *cert, const char *key, char *errbuf,
                           size_t errlen)
{
    mbedtls_x509_crt crt;
    mbedtls_pk_context pk;
    bool ok = false;
    int rv;
    mbedtls_x509_crt_init(&crt);
    mbedtls_pk_init(&pk);
    if ((rv = mbedtls_x509_crt_parse(&crt, (const unsigned char *)cert, strlen(cert) + 1)) != 0) {
        snprintf(errbuf, errlen, "certfile %s: not a PEM certificate (mbedtls -0x%04x)",
                 o->certfile, (unsigned)-rv);
        goto done;
    }
    const char *pass = o->keypass ? o->keypass : "";
    rv = mbedtls_pk_parse_key(&pk, (const unsigned char *)key, strlen(key) + 1,
                              (const unsigned char *)pass, strlen(pass));
    if (rv != 0) {
        snprintf(errbuf, errlen, "keyfile %s: %s (mbedtls -0x%04x)", o->keyfile,
                 rv == MBEDTLS_ERR_PK_PASSWORD_REQUIRED   ? "encrypted: set keyfile_password"
                 : rv == MBEDTLS_ERR_PK_PASSWORD_MISMATCH ? "wrong key password"
                 : (rv == MBEDTLS_ERR_PKCS5_FEATURE_UNAVAILABLE ||
                    rv == MBEDTLS_ERR_PK_FEATURE_UNAVAILABLE)
                     ? "encrypted in a format mbedtls 2.28 cannot read (openssl 3's PKCS#8 "
                       "AES); re-encrypt it with: openssl pkey -in KEY -aes256 -traditional"
                     : "not a PEM private key",
                 (unsigned)-rv);
        goto done;
    }
    if ((rv = mbedtls_pk_check_pair(&crt.pk, &pk)) != 0) {
        snprintf(errbuf, errlen, "keyfile %s does not match certfile %s", o->keyfile, o->certfile);
        goto done;
    }
    ok = true;
done:
    mbedtls_x509_crt_free(&crt);
    mbedtls_pk_free(&pk);
    return ok;
}

/* Free a certificate and key read by read_key_pair, wiping the key. */
static void free_key_pair(char *cert, char *key)
{
    free(cert);
    if (key != NULL) {
        memset(key, 0, strlen(key)); /* private key material */
        free(key);
    }
}

/* Read o's certificate and key files and check that they belong together. prefix starts the
 * option names in messages ("" for a listener, "bridge_" for a dial). OUT: *cert, *key (the
 * caller frees both with free_key_pair, also on failure). False with errbuf set. */
static bool read_key_pair(const char *prefix, const mql_tls_files *o, char **cert, char **key,
                          char *errbuf, size_t errlen)
{
    if ((*cert = read_file(o->certfile)) == NULL) {
        snprintf(errbuf, errlen, "%scertfile %s: %s", prefix, o->certfile, strerror(errno));
        return false;
    }
    if ((*key = read_file(o->keyfile)) == NULL) {
        snprintf(errbuf, errlen, "%skeyfile %s: %s", prefix, o->keyfile, strerror(errno));
        return false;
    }
    return cert_key_match(o, *cert, *key, errbuf, errlen);
}

/* A configuration from our engine that offers TLS 1.2 or later. alpn: as for
 * mql_tls_config_alloc; url is only used in messages. OUT: *out on MQL_OK. Otherwise
 * MQL_E_NOMEM (out of memory allocating it) or MQL_E_CONFIG, with errbuf set. */
static mql_err new_config(nng_tls_config **out, nng_tls_mode mode, const char *alpn,
                          const char *url, char *errbuf, size_t errlen)
{
    nng_tls_config *cfg = NULL;
    int rv = mql_tls_config_alloc(&cfg, mode, alpn);
    if (rv != 0) {
        snprintf(errbuf, errlen, "%s: TLS: %s", url,
                 mode == NNG_TLS_MODE_CLIENT && rv == NNG_EINVAL ? "bad bridge_alpn list"
                                                                 : nng_strerror(rv));
        return rv == NNG_ENOMEM ? MQL_E_NOMEM : MQL_E_CONFIG;
    }
    if ((rv = nng_tls_config_version(cfg, NNG_TLS_1_2, NNG_TLS_1_3)) != 0 &&
        (rv = nng_tls_config_version(cfg, NNG_TLS_1_2, NNG_TLS_1_2)) != 0) {
        snprintf(errbuf, errlen, "%s: TLS version: %s", url, nng_strerror(rv));
        nng_tls_config_free(cfg);
        return MQL_E_CONFIG;
    }
    *out = cfg;
    return MQL_OK;
}

/* The listener options that must hold before any file is read. */
static bool server_opts_valid(const char *url, const mql_tls_files *o, char *errbuf, size_t errlen)
{
    if (o->identity && (!o->require_certificate || strncmp(url, "tls+", 4) != 0)) {
        snprintf(errbuf, errlen,
                 "%s: use_identity_as_username needs a TLS MQTT listener (not websockets) with "
                 "require_certificate true",
                 url);
        return false;
    }
    if (o->certfile == NULL || o->keyfile == NULL) {
        snprintf(errbuf, errlen, "%s: TLS needs both certfile and keyfile", url);
        return false;
    }
    return true;
}

mql_err mql_tls_conf_server(nng_tls_config **out, const char *url, const mql_tls_files *o,
                            char *errbuf, size_t errlen)
{
    int rv;
    char *cert = NULL, *key = NULL;
    nng_tls_config *cfg = NULL;
    mql_err err = MQL_E_CONFIG;
    if (!server_opts_valid(url, o, errbuf, errlen))
        return MQL_E_CONFIG;
    if (!read_key_pair("", o, &cert, &key, errbuf, errlen))
        goto fail;
    if (new_config(&cfg, NNG_TLS_MODE_SERVER, NULL, url, errbuf, errlen) != MQL_OK)
        goto fail;
    if ((rv = nng_tls_config_own_cert(cfg, cert, key, o->keypass)) != 0) {
        snprintf(errbuf, errlen,
                 "certfile %s / keyfile %s: %s (not PEM, a wrong key password, or the key does "
                 "not match the certificate)",
                 o->certfile, o->keyfile, nng_strerror(rv));
        goto fail;
    }
    if (o->cafile != NULL && (rv = nng_tls_config_ca_file(cfg, o->cafile)) != 0) {
        snprintf(errbuf, errlen, "cafile %s: %s", o->cafile, nng_strerror(rv));
        goto fail;
    }
    if (o->require_certificate && o->cafile == NULL) {
        snprintf(errbuf, errlen, "%s: require_certificate needs a cafile", url);
        goto fail;
    }
    rv = nng_tls_config_auth_mode(cfg, o->require_certificate ? NNG_TLS_AUTH_MODE_REQUIRED
                                                              : NNG_TLS_AUTH_MODE_NONE);
    if (rv != 0) {
        snprintf(errbuf, errlen, "%s: TLS: %s", url, nng_strerror(rv));
        goto fail;
    }
    *out = cfg;
    cfg = NULL;
    err = MQL_OK;
fail:
    if (cfg != NULL)
        nng_tls_config_free(cfg);
    free_key_pair(cert, key);
    return err;
}

/* Every regular file of dir, concatenated (PEM certificates), or NULL with errno set. */
static char *read_ca_dir(const char *dir)
{
    DIR *dp = opendir(dir);
    if (dp == NULL)
        return NULL;
    size_t len = 0;
    char *all = calloc(1, 1);
    struct dirent *e;
    while (all != NULL && (e = readdir(dp)) != NULL) {
        char path[1024];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        char *one = read_file(path);
        if (one == NULL)
            continue; /* unreadable files are skipped, as openssl's capath does */
        size_t n = strlen(one);
        char *p = realloc(all, len + n + 2);
        if (p == NULL) {
            free(one);
            free(all);
            all = NULL;
            errno = ENOMEM;
            break;
        }
        all = p;
        memcpy(all + len, one, n);
        len += n;
        all[len++] = '\n';
        all[len] = '\0';
        free(one);
    }
    closedir(dp);
    return all;
}

/* A dial's CA certificates: its bridge_cafile, or every file of its bridge_capath, or none
 * (*ca stays NULL). OUT: *ca (the caller frees it). False with errbuf set. */
static bool read_ca(const mql_dial_opts *o, char **ca, char *errbuf, size_t errlen)
{
    if (o->cafile != NULL) {
        if ((*ca = read_file(o->cafile)) == NULL) {
            snprintf(errbuf, errlen, "bridge_cafile %s: %s", o->cafile, strerror(errno));
            return false;
        }
    } else if (o->capath != NULL) {
        if ((*ca = read_ca_dir(o->capath)) == NULL) {
            snprintf(errbuf, errlen, "bridge_capath %s: %s", o->capath, strerror(errno));
            return false;
        }
    }
    return true;
}

/* The dial's client certificate, when it has one. False with errbuf set. */
static bool client_cert(nng_tls_config *cfg, const mql_dial_opts *o, char *errbuf, size_t errlen)
{
    if (o->certfile == NULL)
        return true;
    mql_tls_files lo = {.certfile = (char *)o->certfile, .keyfile = (char *)o->keyfile};
    char *cert = NULL, *key = NULL;
    bool ok = read_key_pair("bridge_", &lo, &cert, &key, errbuf, errlen);
    int rv;
    if (ok && (rv = nng_tls_config_own_cert(cfg, cert, key, NULL)) != 0) {
        snprintf(errbuf, errlen, "bridge_certfile %s / bridge_keyfile %s: %s", o->certfile,
                 o->keyfile, nng_strerror(rv));
        ok = false;
    }
    free_key_pair(cert, key);
    return ok;
}

mql_err mql_tls_conf_client(nng_tls_config **out, const mql_dial_opts *o, char *errbuf,
                            size_t errlen)
{
    int rv;
    char *ca = NULL;
    nng_tls_config *cfg = NULL;
    mql_err err = new_config(&cfg, NNG_TLS_MODE_CLIENT, o->alpn, o->url, errbuf, errlen);
    if (err != MQL_OK)
        return err;
    err = MQL_E_CONFIG;
    if (!read_ca(o, &ca, errbuf, errlen))
        goto fail;
    if (ca != NULL && (rv = nng_tls_config_ca_chain(cfg, ca, NULL)) != 0) {
        snprintf(errbuf, errlen, "%s %s: no PEM CA certificate could be read (%s)",
                 o->cafile ? "bridge_cafile" : "bridge_capath", o->cafile ? o->cafile : o->capath,
                 nng_strerror(rv));
        goto fail;
    }
    if (!client_cert(cfg, o, errbuf, errlen))
        goto fail;
    if (o->server_name != NULL && (rv = nng_tls_config_server_name(cfg, o->server_name)) != 0) {
        snprintf(errbuf, errlen, "%s: TLS server name: %s", o->url, nng_strerror(rv));
        goto fail;
    }
    if ((rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED)) != 0) {
        snprintf(errbuf, errlen, "%s: TLS: %s", o->url, nng_strerror(rv));
        goto fail;
    }
    *out = cfg;
    cfg = NULL;
    err = MQL_OK;
fail:
    if (cfg != NULL)
        nng_tls_config_free(cfg);
    free(ca);
    return err;
}
