/*
 * replay.c - run a libFuzzer target's corpus without libFuzzer (any compiler).
 *
 * Linked with one fuzz target (fuzz_decode.c, fuzz_conn.c or fuzz_config.c) into a plain
 * program `fuzz_*_replay` that feeds every file it is given to LLVMFuzzerTestOneInput, once
 * each, in name order. The unit suite runs it on the checked-in corpora, so every seed (and
 * every input that once found a bug) is a regression test under gcc, and under the
 * sanitizers in the ASan+UBSan CI run. A failing check abort()s, which fails the test.
 *
 * Usage: fuzz_X_replay DIR_OR_FILE...   (dot files in a directory are skipped)
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Read the whole file; NULL on failure (reported). */
static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        perror(path);
        return NULL;
    }
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(fp);
                fprintf(stderr, "%s: out of memory\n", path);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, fp);
        if (got == 0)
            break;
        n += got;
    }
    if (ferror(fp)) {
        perror(path);
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    *len = n;
    return buf;
}

static int replay_file(const char *path)
{
    size_t len = 0;
    uint8_t *buf = read_all(path, &len);
    if (buf == NULL)
        return -1;
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

static int skip_dots(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

/* Every regular file of dir, in byte order of the names (a stable order for bisecting). */
static int replay_dir(const char *dir, size_t *count)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, skip_dots, alphasort);
    if (n < 0) {
        perror(dir);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        if (rc == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            rc = replay_file(path);
            (*count)++;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    size_t count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            return 1;
        }
        int rc;
        if (S_ISDIR(st.st_mode)) {
            rc = replay_dir(argv[i], &count);
        } else {
            rc = replay_file(argv[i]);
            count++;
        }
        if (rc != 0)
            return 1;
    }
    printf("replayed %zu inputs\n", count);
    return count > 0 ? 0 : 1;
}
