/*
 * nested-tool: the few system calls the nested tests need that Debian's
 * busybox has no applet for. Built static by make-roots.sh (`cc -static`:
 * the C toolchain Rust links with is there wherever the static vireo
 * builds) and put in both initramfs archives as /bin/nested-tool.
 *
 *   nested-tool unix-chat PATH SECONDS
 *       Connects to the unix stream socket PATH (retrying for up to SECONDS
 *       while it does not exist yet or refuses), writes stdin to it, and
 *       copies what the socket sends to stdout until SECONDS have passed
 *       since the connection or the peer closes. L1 uses it to talk to
 *       vireo's `--console unix:` port (busybox nc has no -U).
 *   nested-tool fallocate MODE FILE OFFSET LENGTH
 *       fallocate(2) with MODE `punch` (FALLOC_FL_PUNCH_HOLE|KEEP_SIZE) or
 *       `zero` (FALLOC_FL_ZERO_RANGE). On a block device Linux turns
 *       `punch` into REQ_OP_WRITE_ZEROES with unmap allowed and no fallback
 *       to writing zero pages (EOPNOTSUPP when the disk has no
 *       write-zeroes), `zero` into write-zeroes without unmap. busybox's
 *       fallocate and blkdiscard have neither.
 *   nested-tool holes FILE
 *       Prints `data=BYTES holes=BYTES` and each hole as `hole START END`
 *       (SEEK_DATA/SEEK_HOLE): which parts of a raw image are unallocated.
 *   nested-tool pingpong CPU_A CPU_B SECONDS
 *       Two processes pinned to CPU_A and CPU_B pass one byte back and
 *       forth through two pipes for SECONDS, at most a thousand times a
 *       second, so each keeps waking the other across CPUs (a stream of
 *       IPIs into whatever runs there);
 *       prints the round trips. For hunting failures that need L1's CPUs
 *       to interrupt each other (docs/testing.md, known failures).
 *
 * Exits 0 on success, 1 with one line on stderr on failure, 2 on misuse.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int fail(const char *what)
{
    fprintf(stderr, "nested-tool: %s: %s\n", what, strerror(errno));
    return 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int unix_chat(const char *path, double seconds)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(addr.sun_path)) {
        fprintf(stderr, "nested-tool: socket path too long: %s\n", path);
        return 2;
    }
    strcpy(addr.sun_path, path);
    int fd = -1;
    double start = now();
    for (;;) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return fail("socket");
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
            break;
        int err = errno;
        close(fd);
        errno = err;
        if ((err != ENOENT && err != ECONNREFUSED) || now() - start > seconds)
            return fail(path);
        usleep(100000);
    }
    start = now();
    int stdin_open = 1;
    char buf[65536];
    for (;;) {
        double left = seconds - (now() - start);
        if (left <= 0)
            return 0;
        struct pollfd p[2] = { { .fd = fd, .events = POLLIN }, { .fd = 0, .events = POLLIN } };
        int n = poll(p, stdin_open ? 2 : 1, (int)(left * 1000) + 1);
        if (n < 0 && errno != EINTR)
            return fail("poll");
        if (n <= 0)
            continue;
        if (p[0].revents) {
            ssize_t got = read(fd, buf, sizeof(buf));
            if (got <= 0)
                return got < 0 ? fail("read socket") : 0;
            if (write(1, buf, (size_t)got) != got)
                return fail("write stdout");
        }
        if (stdin_open && p[1].revents) {
            ssize_t got = read(0, buf, sizeof(buf));
            if (got < 0)
                return fail("read stdin");
            if (got == 0) {
                stdin_open = 0;
                continue;
            }
            for (ssize_t off = 0; off < got;) {
                ssize_t put = write(fd, buf + off, (size_t)(got - off));
                if (put < 0)
                    return fail("write socket");
                off += put;
            }
        }
    }
}

static int do_fallocate(const char *mode, const char *file, const char *off, const char *len)
{
    int flags;
    if (strcmp(mode, "punch") == 0)
        flags = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    else if (strcmp(mode, "zero") == 0)
        flags = FALLOC_FL_ZERO_RANGE;
    else {
        fprintf(stderr, "nested-tool: fallocate mode is punch or zero, not %s\n", mode);
        return 2;
    }
    int fd = open(file, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(file);
    if (fallocate(fd, flags, strtoll(off, NULL, 0), strtoll(len, NULL, 0)) != 0)
        return fail("fallocate");
    if (fsync(fd) != 0)
        return fail("fsync");
    return 0;
}

static int holes(const char *file)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(file);
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0)
        return fail("lseek");
    long long data = 0, hole_bytes = 0;
    off_t at = 0;
    char list[4096] = "";
    size_t used = 0;
    while (at < end) {
        off_t d = lseek(fd, at, SEEK_DATA);
        if (d < 0 && errno != ENXIO)
            return fail("SEEK_DATA");
        if (d < 0)
            d = end;
        if (d > at) {
            hole_bytes += d - at;
            int n = snprintf(list + used, sizeof(list) - used, "hole %lld %lld\n",
                             (long long)at, (long long)d);
            if (n > 0 && (size_t)n < sizeof(list) - used)
                used += (size_t)n;
        }
        if (d >= end)
            break;
        off_t h = lseek(fd, d, SEEK_HOLE);
        if (h < 0)
            return fail("SEEK_HOLE");
        data += h - d;
        at = h;
    }
    printf("data=%lld holes=%lld\n%s", data, hole_bytes, list);
    return 0;
}

static int pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set);
}

static int pingpong(int a, int b, double seconds)
{
    int there[2], back[2];
    if (pipe(there) != 0 || pipe(back) != 0)
        return fail("pipe");
    pid_t child = fork();
    if (child < 0)
        return fail("fork");
    char c = 0;
    if (child == 0) {
        if (pin(b) != 0)
            _exit(1);
        while (read(there[0], &c, 1) == 1 && write(back[1], &c, 1) == 1)
            ;
        _exit(0);
    }
    if (pin(a) != 0)
        return fail("sched_setaffinity");
    long long trips = 0;
    double start = now();
    while (now() - start < seconds) {
        if (write(there[1], &c, 1) != 1 || read(back[0], &c, 1) != 1)
            return fail("pipe ping-pong");
        trips++;
        // A thousand a second at most: enough interrupts, little CPU (a
        // tight loop starved the guests under test).
        usleep(1000);
    }
    kill(child, SIGKILL);
    printf("pingpong: %lld round trips between CPU %d and CPU %d in %.0f s\n", trips, a, b, seconds);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "unix-chat") == 0)
        return unix_chat(argv[2], atof(argv[3]));
    if (argc == 6 && strcmp(argv[1], "fallocate") == 0)
        return do_fallocate(argv[2], argv[3], argv[4], argv[5]);
    if (argc == 3 && strcmp(argv[1], "holes") == 0)
        return holes(argv[2]);
    if (argc == 5 && strcmp(argv[1], "pingpong") == 0)
        return pingpong(atoi(argv[2]), atoi(argv[3]), atof(argv[4]));
    fprintf(stderr, "usage: nested-tool unix-chat PATH SECONDS | fallocate punch|zero FILE OFFSET LENGTH | holes FILE | pingpong CPU_A CPU_B SECONDS\n");
    return 2;
}
