/*
 * blk_host: the host side of bench/virtio.py's disk benchmark. It runs the
 * same access patterns the virtio test guest runs through virtio-blk
 * (guests/virtio, `bench-*` words), on the same backing file, so the two
 * figures compare the virtualized path with the bare host.
 *
 *   blk_host FILE seq-read|seq-write MIB [direct] [qd=N] [pages=huge|small]
 *   blk_host FILE rand-read|rand-write OPS [direct] [pages=huge|small]
 *   blk_host tsc-hz
 *
 * Sequential patterns move MIB MiB in 1 MiB requests from offset 0 with N
 * requests in flight (default 1) through io_uring, as the guest keeps N in
 * its virtqueue (`bench-qd`); each request has its own 1 MiB buffer.
 * Random ones do OPS 4 KiB requests at 4 KiB-aligned offsets drawn from the
 * same LCG as the guest (x = x * 6364136223846793005 + 1442695040888963407,
 * seed 1; block = (x >> 33) % blocks), one at a time with pread/pwrite
 * (queue depth 1, as the guest's driver). Writes end with fdatasync, as the
 * guest's end with a flush. Prints the elapsed time as `ns=<n>`.
 *
 * Buffers are anonymous memory in 2 MiB-aligned blocks. pages=huge (the
 * default) advises them MADV_HUGEPAGE, as QEMU advises guest RAM (and vireo
 * with --memory-backend thp=on): with O_DIRECT the kernel pins and maps the
 * buffer's pages for every request, and a 1 MiB request in 4 KiB pages is
 * 256 pieces where a huge page is one, which on a host whose disk pays per
 * piece (a virtio disk under another hypervisor) halves the throughput.
 * pages=small advises MADV_NOHUGEPAGE (vireo's default guest RAM).
 *
 * `tsc-hz` prints the TSC rate (measured against CLOCK_MONOTONIC over
 * 200 ms), which converts the guest's TSC timings into time.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#define MIB (1u << 20)
#define MAX_QD 64

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

/* `bytes` of anonymous memory, 2 MiB-aligned, huge pages advised or not. */
static void *buffers(size_t bytes, int huge)
{
    size_t align = 2 * MIB, len = (bytes + align - 1) / align * align;
    char *raw = mmap(NULL, len + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (raw == MAP_FAILED)
        die("mmap");
    char *buf = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
    if (madvise(buf, len, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) < 0)
        die("madvise");
    memset(buf, 0x5a, len);
    return buf;
}

/* A minimal io_uring: one submission and one completion ring. */
struct ring {
    int fd;
    unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
};

static void ring_init(struct ring *r, unsigned entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    r->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (r->fd < 0)
        die("io_uring_setup");
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (cq_len > sq_len)
        sq_len = cq_len;
    /* IORING_FEAT_SINGLE_MMAP: one mapping holds both rings (5.4+). */
    char *sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                    IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED)
        die("mmap sq");
    r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED)
        die("mmap sqes");
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (unsigned *)(sq + p.cq_off.head);
    r->cq_tail = (unsigned *)(sq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(sq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(sq + p.cq_off.cqes);
}

static void ring_queue(struct ring *r, int write, int fd, void *buf, unsigned len, uint64_t off,
                       uint64_t tag)
{
    unsigned tail = *r->sq_tail, i = tail & *r->sq_mask;
    struct io_uring_sqe *sqe = &r->sqes[i];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = write ? IORING_OP_WRITE : IORING_OP_READ;
    sqe->fd = fd;
    sqe->addr = (uintptr_t)buf;
    sqe->len = len;
    sqe->off = off;
    sqe->user_data = tag;
    r->sq_array[i] = i;
    __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
}

/* Submit `n` queued entries and wait for at least one completion. */
static void ring_enter(struct ring *r, unsigned n)
{
    if (syscall(__NR_io_uring_enter, r->fd, n, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
        die("io_uring_enter");
}

/* MIB sequential 1 MiB requests, qd in flight, each slot its own buffer. */
static void sequential(int fd, int write, uint64_t mib, unsigned qd, char *bufs)
{
    struct ring r;
    ring_init(&r, qd);
    uint64_t next = 0, done = 0;
    unsigned queued = 0;
    for (unsigned slot = 0; slot < qd && next < mib; slot++, next++, queued++)
        ring_queue(&r, write, fd, bufs + (size_t)slot * MIB, MIB, next * MIB, slot);
    while (done < mib) {
        ring_enter(&r, queued);
        queued = 0;
        unsigned head = *r.cq_head;
        while (head != __atomic_load_n(r.cq_tail, __ATOMIC_ACQUIRE)) {
            struct io_uring_cqe *cqe = &r.cqes[head & *r.cq_mask];
            if (cqe->res != (int)MIB) {
                fprintf(stderr, "seq I/O: result %d\n", cqe->res);
                exit(1);
            }
            uint64_t slot = cqe->user_data;
            head++;
            done++;
            if (next < mib) {
                ring_queue(&r, write, fd, bufs + slot * MIB, MIB, next * MIB, slot);
                next++;
                queued++;
            }
        }
        __atomic_store_n(r.cq_head, head, __ATOMIC_RELEASE);
    }
    close(r.fd);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "tsc-hz") == 0)
        return tsc_hz();
    if (argc < 4) {
        fprintf(stderr,
                "usage: %s FILE seq-read|seq-write|rand-read|rand-write N [direct] [qd=N] "
                "[pages=huge|small]\n",
                argv[0]);
        return 2;
    }
    const char *mode = argv[2];
    uint64_t n = strtoull(argv[3], NULL, 10);
    int direct = 0, huge = 1;
    unsigned qd = 1;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "direct") == 0)
            direct = 1;
        else if (strncmp(argv[i], "qd=", 3) == 0)
            qd = (unsigned)strtoul(argv[i] + 3, NULL, 10);
        else if (strcmp(argv[i], "pages=huge") == 0)
            huge = 1;
        else if (strcmp(argv[i], "pages=small") == 0)
            huge = 0;
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (qd < 1 || qd > MAX_QD) {
        fprintf(stderr, "qd must be 1 to %d\n", MAX_QD);
        return 2;
    }
    int write = strstr(mode, "write") != NULL;
    int fd = open(argv[1], (write ? O_RDWR : O_RDONLY) | (direct ? O_DIRECT : 0));
    if (fd < 0)
        die("open");
    struct stat st;
    if (fstat(fd, &st) < 0)
        die("fstat");
    char *bufs = buffers((size_t)qd * MIB, huge);

    uint64_t start = now_ns();
    if (strncmp(mode, "seq-", 4) == 0) {
        sequential(fd, write, n, qd, bufs);
    } else if (strncmp(mode, "rand-", 5) == 0) {
        uint64_t x = 1, blocks = (uint64_t)st.st_size / 4096;
        for (uint64_t i = 0; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            off_t off = (off_t)(((x >> 33) % blocks) * 4096);
            ssize_t r = write ? pwrite(fd, bufs, 4096, off) : pread(fd, bufs, 4096, off);
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
