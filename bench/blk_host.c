/*
 * blk_host: the host side of bench/virtio.py's disk benchmark. It runs the
 * same access patterns the virtio test guest runs through virtio-blk
 * (guests/virtio, `bench-*` words), on the same backing file, so the two
 * figures compare the virtualized path with the bare host.
 *
 *   blk_host FILE seq-read|seq-write MIB [direct]
 *   blk_host FILE rand-read|rand-write OPS [direct]
 *   blk_host tsc-hz
 *
 * Sequential patterns move MIB MiB in 1 MiB requests from offset 0; random
 * ones do OPS 4 KiB requests at 4 KiB-aligned offsets drawn from the same
 * LCG as the guest (x = x * 6364136223846793005 + 1442695040888963407,
 * seed 1; block = (x >> 33) % blocks), one at a time (queue depth 1, as the
 * guest's driver). Prints the elapsed time as `ns=<n>`. `tsc-hz` prints the
 * TSC rate (measured against CLOCK_MONOTONIC over 200 ms), which converts the
 * guest's TSC timings into time.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int tsc_hz(void)
{
    uint64_t t0 = now_ns(), c0 = __rdtsc();
    while (now_ns() - t0 < 200000000ull)
        ;
    uint64_t t1 = now_ns(), c1 = __rdtsc();
    printf("tsc-hz=%llu\n", (unsigned long long)((c1 - c0) * 1000000000ull / (t1 - t0)));
    return 0;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "tsc-hz") == 0)
        return tsc_hz();
    if (argc < 4) {
        fprintf(stderr, "usage: %s FILE seq-read|seq-write|rand-read|rand-write N [direct]\n",
                argv[0]);
        return 2;
    }
    const char *mode = argv[2];
    uint64_t n = strtoull(argv[3], NULL, 10);
    int direct = argc > 4 && strcmp(argv[4], "direct") == 0;
    int write = strstr(mode, "write") != NULL;
    int fd = open(argv[1], (write ? O_RDWR : O_RDONLY) | (direct ? O_DIRECT : 0));
    if (fd < 0)
        die("open");
    struct stat st;
    if (fstat(fd, &st) < 0)
        die("fstat");
    void *buf;
    if (posix_memalign(&buf, 4096, 1 << 20))
        die("posix_memalign");
    memset(buf, 0x5a, 1 << 20);

    uint64_t start = now_ns();
    if (strncmp(mode, "seq-", 4) == 0) {
        for (uint64_t i = 0; i < n; i++) {
            ssize_t r = write ? pwrite(fd, buf, 1 << 20, (off_t)(i << 20))
                              : pread(fd, buf, 1 << 20, (off_t)(i << 20));
            if (r != 1 << 20)
                die("seq I/O");
        }
    } else if (strncmp(mode, "rand-", 5) == 0) {
        uint64_t x = 1, blocks = (uint64_t)st.st_size / 4096;
        for (uint64_t i = 0; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            off_t off = (off_t)(((x >> 33) % blocks) * 4096);
            ssize_t r = write ? pwrite(fd, buf, 4096, off) : pread(fd, buf, 4096, off);
            if (r != 4096)
                die("random I/O");
        }
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    if (write && fdatasync(fd) < 0)
        die("fdatasync");
    printf("ns=%llu\n", (unsigned long long)(now_ns() - start));
    return 0;
}
