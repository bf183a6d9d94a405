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
 *   nested-tool dhcp6 IFACE SECONDS
 *       A DHCPv6 client for one address (RFC 8415's four messages:
 *       Solicit, Advertise, Request, Reply), as Debian's busybox has no
 *       udhcpc6: a DUID-LL of IFACE's MAC and one IA_NA, Solicit sent to
 *       ff02::1:2 every second until a server advertises, then Request for
 *       what it offered. Prints the address the Reply binds. Needs IFACE
 *       up with its link-local address.
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
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
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

/* DHCPv6 (RFC 8415): message types and options used here. */
enum { D6_SOLICIT = 1, D6_ADVERTISE = 2, D6_REQUEST = 3, D6_REPLY = 7 };
enum { O_CLIENTID = 1, O_SERVERID = 2, O_IA_NA = 3, O_IAADDR = 5, O_ELAPSED = 8, O_STATUS = 13 };

static size_t put_opt(unsigned char *m, size_t at, int code, const void *data, size_t len)
{
    m[at] = code >> 8;
    m[at + 1] = code & 0xff;
    m[at + 2] = len >> 8;
    m[at + 3] = len & 0xff;
    memcpy(m + at + 4, data, len);
    return at + 4 + len;
}

/* The body of option CODE in OPTS (LEN bytes), or NULL; its length in *n. */
static const unsigned char *find_opt(const unsigned char *opts, size_t len, int code, size_t *n)
{
    size_t i = 0;
    while (i + 4 <= len) {
        int c = opts[i] << 8 | opts[i + 1];
        size_t l = opts[i + 2] << 8 | opts[i + 3];
        if (i + 4 + l > len)
            return NULL;
        if (c == code) {
            *n = l;
            return opts + i + 4;
        }
        i += 4 + l;
    }
    return NULL;
}

/* Sends MSG (LEN bytes) until a reply of type WANT with MSG's transaction
 * id comes, or DEADLINE; returns its length in REPLY, or -1. */
static ssize_t exchange(int s, const struct sockaddr_in6 *to, const unsigned char *msg, size_t len,
                        int want, unsigned char *reply, size_t cap, double deadline)
{
    while (now() < deadline) {
        if (sendto(s, msg, len, 0, (const struct sockaddr *)to, sizeof(*to)) < 0 && errno != EADDRNOTAVAIL)
            return fail("sendto ff02::1:2"), -1;
        struct pollfd p = { .fd = s, .events = POLLIN };
        double until = now() + 1;
        while (now() < until && poll(&p, 1, 100) >= 0) {
            if (!(p.revents & POLLIN))
                continue;
            ssize_t n = recv(s, reply, cap, 0);
            if (n >= 4 && reply[0] == want && memcmp(reply + 1, msg + 1, 3) == 0)
                return n;
        }
    }
    return -1;
}

static int dhcp6(const char *ifname, double seconds)
{
    unsigned idx = if_nametoindex(ifname);
    if (!idx)
        return fail(ifname);
    char path[128], text[32];
    snprintf(path, sizeof(path), "/sys/class/net/%s/address", ifname);
    FILE *f = fopen(path, "r");
    unsigned mac[6];
    if (!f || !fgets(text, sizeof(text), f) ||
        sscanf(text, "%x:%x:%x:%x:%x:%x", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) != 6)
        return fail(path);
    fclose(f);
    unsigned char duid[10] = { 0, 3, 0, 1 }; /* DUID-LL, Ethernet */
    for (int i = 0; i < 6; i++)
        duid[4 + i] = mac[i];
    int s = socket(AF_INET6, SOCK_DGRAM, 0);
    int one = 1;
    if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, ifname, strlen(ifname)) != 0)
        return fail("socket");
    struct sockaddr_in6 me = { .sin6_family = AF_INET6, .sin6_port = htons(546), .sin6_addr = in6addr_any };
    if (bind(s, (struct sockaddr *)&me, sizeof(me)) != 0)
        return fail("bind [::]:546");
    struct sockaddr_in6 servers = { .sin6_family = AF_INET6, .sin6_port = htons(547), .sin6_scope_id = idx };
    inet_pton(AF_INET6, "ff02::1:2", &servers.sin6_addr);
    double deadline = now() + seconds;
    unsigned char msg[512], reply[1500];
    const unsigned char ia[12] = { 0, 0, 0, 1 }; /* IAID 1, T1 and T2 left to the server */
    const unsigned char elapsed[2] = { 0, 0 };

    srand(getpid() ^ (unsigned)(now() * 1e6));
    msg[0] = D6_SOLICIT;
    for (int i = 1; i < 4; i++)
        msg[i] = rand() & 0xff;
    size_t len = put_opt(msg, 4, O_CLIENTID, duid, sizeof(duid));
    len = put_opt(msg, len, O_IA_NA, ia, sizeof(ia));
    len = put_opt(msg, len, O_ELAPSED, elapsed, sizeof(elapsed));
    ssize_t n = exchange(s, &servers, msg, len, D6_ADVERTISE, reply, sizeof(reply), deadline);
    if (n < 0) {
        fprintf(stderr, "nested-tool: no Advertise on %s within %.0f s\n", ifname, seconds);
        return 1;
    }
    size_t sid_len, ia_len, addr_len;
    const unsigned char *sid = find_opt(reply + 4, n - 4, O_SERVERID, &sid_len);
    const unsigned char *offer = find_opt(reply + 4, n - 4, O_IA_NA, &ia_len);
    const unsigned char *addr = offer && ia_len > 12 ? find_opt(offer + 12, ia_len - 12, O_IAADDR, &addr_len) : NULL;
    if (!sid || sid_len > 128 || !addr || addr_len < 24) {
        fprintf(stderr, "nested-tool: an Advertise without a server id or an address\n");
        return 1;
    }
    /* Request: the offered address, from the server that offered it. */
    unsigned char ia_req[12 + 4 + 24];
    memcpy(ia_req, ia, 12);
    put_opt(ia_req, 12, O_IAADDR, addr, 24);
    msg[0] = D6_REQUEST;
    for (int i = 1; i < 4; i++)
        msg[i] = rand() & 0xff;
    len = put_opt(msg, 4, O_CLIENTID, duid, sizeof(duid));
    len = put_opt(msg, len, O_SERVERID, sid, sid_len);
    len = put_opt(msg, len, O_IA_NA, ia_req, sizeof(ia_req));
    len = put_opt(msg, len, O_ELAPSED, elapsed, sizeof(elapsed));
    n = exchange(s, &servers, msg, len, D6_REPLY, reply, sizeof(reply), deadline);
    if (n < 0) {
        fprintf(stderr, "nested-tool: no Reply to the Request within %.0f s\n", seconds);
        return 1;
    }
    const unsigned char *bound = find_opt(reply + 4, n - 4, O_IA_NA, &ia_len);
    const unsigned char *got = bound && ia_len > 12 ? find_opt(bound + 12, ia_len - 12, O_IAADDR, &addr_len) : NULL;
    size_t st_len;
    const unsigned char *status = bound && ia_len > 12 ? find_opt(bound + 12, ia_len - 12, O_STATUS, &st_len) : NULL;
    if (!got || addr_len < 24 || (status && st_len >= 2 && (status[0] || status[1]))) {
        fprintf(stderr, "nested-tool: the Reply binds no address\n");
        return 1;
    }
    char out[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, got, out, sizeof(out));
    printf("%s\n", out);
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
    if (argc == 4 && strcmp(argv[1], "dhcp6") == 0)
        return dhcp6(argv[2], atof(argv[3]));
    fprintf(stderr, "usage: nested-tool unix-chat PATH SECONDS | fallocate punch|zero FILE OFFSET LENGTH | holes FILE | pingpong CPU_A CPU_B SECONDS | dhcp6 IFACE SECONDS\n");
    return 2;
}
