/*
 * api_client: times API round trips without an interpreter in the way.
 * bench/api.py builds and runs it beside its own Python client, so the
 * figures show what the VM costs and what a typical script sees.
 *
 *   api_client SOCKET keepalive N   GET /vm N times on one connection
 *   api_client SOCKET fresh N       GET /vm N times, a new connection each
 *   api_client SOCKET pause N       PUT /vm/pause then PUT /vm/resume, N pairs
 *
 * Prints one line per sample: nanoseconds (for pause: pause and resume).
 * Exits 1 on any answer with an unexpected status.
 */
#define _GNU_SOURCE /* strcasestr */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static char buf[1 << 16];
static size_t have;

static long long now_ns(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int dial(const char *path)
{
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        strncpy(a.sun_path, path, sizeof(a.sun_path) - 1);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a))) {
                perror("api_client: connect");
                exit(2);
        }
        have = 0;
        return fd;
}

/* Send a request and read its response; return the status. */
static int exchange(int fd, const char *req)
{
        size_t len = strlen(req), head, body = 0;
        char *end, *cl;

        if (write(fd, req, len) != (ssize_t)len) {
                perror("api_client: write");
                exit(2);
        }
        for (;;) {
                buf[have] = 0;
                end = strstr(buf, "\r\n\r\n");
                if (end)
                        break;
                ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
                if (n <= 0) {
                        fprintf(stderr, "api_client: connection closed\n");
                        exit(2);
                }
                have += n;
        }
        head = end + 4 - buf;
        cl = strcasestr(buf, "content-length:");
        if (cl && cl < end)
                body = strtoul(cl + 15, NULL, 10);
        while (have < head + body) {
                ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
                if (n <= 0) {
                        fprintf(stderr, "api_client: connection closed\n");
                        exit(2);
                }
                have += n;
        }
        int status = atoi(buf + 9);
        memmove(buf, buf + head + body, have - head - body);
        have -= head + body;
        return status;
}

static void expect(int status, int want, const char *what)
{
        if (status != want) {
                fprintf(stderr, "api_client: %s: HTTP %d\n", what, status);
                exit(1);
        }
}

int main(int argc, char **argv)
{
        static const char get[] = "GET /vm HTTP/1.1\r\nHost: localhost\r\n\r\n";
        static const char get_close[] =
                "GET /vm HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        static const char pause[] = "PUT /vm/pause HTTP/1.1\r\nHost: localhost\r\n\r\n";
        static const char resume[] = "PUT /vm/resume HTTP/1.1\r\nHost: localhost\r\n\r\n";

        if (argc != 4) {
                fprintf(stderr, "usage: api_client SOCKET keepalive|fresh|pause N\n");
                return 2;
        }
        long n = atol(argv[3]);
        const char *mode = argv[2];

        if (!strcmp(mode, "keepalive")) {
                int fd = dial(argv[1]);
                for (long i = -200; i < n; i++) {
                        long long t = now_ns();
                        expect(exchange(fd, get), 200, "GET /vm");
                        if (i >= 0)
                                printf("%lld\n", now_ns() - t);
                }
                close(fd);
        } else if (!strcmp(mode, "fresh")) {
                for (long i = -100; i < n; i++) {
                        long long t = now_ns();
                        int fd = dial(argv[1]);
                        expect(exchange(fd, get_close), 200, "GET /vm");
                        close(fd);
                        if (i >= 0)
                                printf("%lld\n", now_ns() - t);
                }
        } else if (!strcmp(mode, "pause")) {
                int fd = dial(argv[1]);
                for (long i = -20; i < n; i++) {
                        long long t0 = now_ns();
                        expect(exchange(fd, pause), 204, "PUT /vm/pause");
                        long long t1 = now_ns();
                        expect(exchange(fd, resume), 204, "PUT /vm/resume");
                        long long t2 = now_ns();
                        if (i >= 0)
                                printf("%lld %lld\n", t1 - t0, t2 - t1);
                }
                close(fd);
        } else {
                fprintf(stderr, "api_client: unknown mode %s\n", mode);
                return 2;
        }
        return 0;
}
