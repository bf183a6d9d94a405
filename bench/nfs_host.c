/*
 * nfs_host: the host side of bench/nfs.py. It runs the access patterns of
 * the virtio test guest's disk benchmark (guests/virtio, `bench-*` words;
 * the same as bench/blk_host.c) on a file of an NFS export, through
 * libnfs's synchronous API: the client library Vireo's nfs:// disks and
 * QEMU's nfs driver are built on, with no VM in the way.
 *
 *   nfs_host nfs://SERVER/EXPORT/FILE seq-read|seq-write MIB
 *   nfs_host nfs://SERVER/EXPORT/FILE rand-read|rand-write OPS
 *
 * Sequential patterns move MIB MiB in 1 MiB requests from offset 0; random
 * ones do OPS 4 KiB requests at offsets from blk_host.c's LCG, one at a time.
 * Writes end with an fsync (NFS COMMIT). Prints the elapsed time as `ns=<n>`.
 * Build: cc -O2 -o nfs_host nfs_host.c -lnfs
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <nfsc/libnfs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(struct nfs_context *nfs, const char *what)
{
    fprintf(stderr, "%s: %s\n", what, nfs ? nfs_get_error(nfs) : "failed");
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s nfs://SERVER/EXPORT/FILE seq-read|seq-write|rand-read|rand-write N\n",
                argv[0]);
        return 2;
    }
    const char *mode = argv[2];
    uint64_t n = strtoull(argv[3], NULL, 10);
    int write = strstr(mode, "write") != NULL;
    struct nfs_context *nfs = nfs_init_context();
    if (!nfs)
        die(NULL, "nfs_init_context");
    struct nfs_url *url = nfs_parse_url_full(nfs, argv[1]);
    if (!url)
        die(nfs, "url");
    if (nfs_mount(nfs, url->server, url->path) != 0)
        die(nfs, "mount");
    struct nfsfh *fh;
    if (nfs_open(nfs, url->file, write ? O_RDWR : O_RDONLY, &fh) != 0)
        die(nfs, "open");
    struct nfs_stat_64 st;
    if (nfs_fstat64(nfs, fh, &st) != 0)
        die(nfs, "fstat");
    char *buf = malloc(1 << 20);
    if (!buf)
        die(NULL, "malloc");
    memset(buf, 0x5a, 1 << 20);

    uint64_t start = now_ns();
    if (strncmp(mode, "seq-", 4) == 0) {
        for (uint64_t i = 0; i < n; i++) {
            int r = write ? nfs_pwrite(nfs, fh, i << 20, 1 << 20, buf)
                          : nfs_pread(nfs, fh, i << 20, 1 << 20, buf);
            if (r != 1 << 20)
                die(nfs, "seq I/O");
        }
    } else if (strncmp(mode, "rand-", 5) == 0) {
        uint64_t x = 1, blocks = st.nfs_size / 4096;
        for (uint64_t i = 0; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t off = ((x >> 33) % blocks) * 4096;
            int r = write ? nfs_pwrite(nfs, fh, off, 4096, buf) : nfs_pread(nfs, fh, off, 4096, buf);
            if (r != 4096)
                die(nfs, "random I/O");
        }
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    if (write && nfs_fsync(nfs, fh) != 0)
        die(nfs, "fsync");
    printf("ns=%llu\n", (unsigned long long)(now_ns() - start));
    nfs_close(nfs, fh);
    nfs_destroy_url(url);
    nfs_destroy_context(nfs);
    return 0;
}
