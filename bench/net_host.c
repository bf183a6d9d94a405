/*
 * net_host: the host side of bench/virtio.py's network benchmark. It
 * attaches to an existing TAP and writes the frames the virtio test guest
 * sends in its `bench-net-frames` mode (UDP from 10.0.2.15 to the peer's
 * port 9, Ethernet frame length SIZE), each behind a zeroed 12-byte
 * virtio-net header, as fast as the kernel takes them. That is what a
 * guest's transmit path through a VMM ends in, minus the VMM.
 *
 *   net_host TAP FRAMES SIZE DST_MAC
 *
 * Prints `ns=<elapsed> bytes=<frame bytes written>`.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define VNET_HDR 12

static uint16_t checksum(const uint8_t *p, size_t len)
{
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < len; i += 2)
        sum += (uint32_t)p[i] << 8 | p[i + 1];
    if (len & 1)
        sum += (uint32_t)p[len - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s TAP FRAMES SIZE DST_MAC\n", argv[0]);
        return 2;
    }
    uint64_t frames = strtoull(argv[2], NULL, 10);
    size_t size = strtoul(argv[3], NULL, 10);
    uint8_t dst[6];
    if (size < 43 || size > 1514 ||
        sscanf(argv[4], "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &dst[0], &dst[1], &dst[2], &dst[3],
               &dst[4], &dst[5]) != 6) {
        fprintf(stderr, "bad size or MAC\n");
        return 2;
    }
    int fd = open("/dev/net/tun", O_RDWR);
    if (fd < 0) {
        perror("/dev/net/tun");
        return 1;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        perror("TUNSETIFF");
        return 1;
    }
    uint8_t buf[VNET_HDR + 1514];
    memset(buf, 0, sizeof(buf));
    uint8_t *f = buf + VNET_HDR;
    static const uint8_t src[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    f[12] = 0x08;
    uint8_t *ip = f + 14;
    uint16_t ip_len = (uint16_t)(size - 14);
    ip[0] = 0x45;
    ip[2] = ip_len >> 8;
    ip[3] = ip_len & 0xff;
    ip[8] = 64;
    ip[9] = 17;
    memcpy(ip + 12, (uint8_t[]){10, 0, 2, 15}, 4);
    memcpy(ip + 16, (uint8_t[]){10, 0, 2, 2}, 4);
    uint16_t sum = checksum(ip, 20);
    ip[10] = sum >> 8;
    ip[11] = sum & 0xff;
    uint8_t *udp = ip + 20;
    udp[1] = 9;
    udp[3] = 9;
    udp[4] = (uint8_t)((ip_len - 20) >> 8);
    udp[5] = (uint8_t)((ip_len - 20) & 0xff);
    for (size_t i = 42; i < size; i++)
        f[i] = (uint8_t)(i - 42);

    struct timespec s, e;
    clock_gettime(CLOCK_MONOTONIC, &s);
    for (uint64_t i = 0; i < frames; i++) {
        if (write(fd, buf, VNET_HDR + size) != (ssize_t)(VNET_HDR + size)) {
            perror("write");
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &e);
    uint64_t ns = (uint64_t)(e.tv_sec - s.tv_sec) * 1000000000ull + (uint64_t)e.tv_nsec -
                  (uint64_t)s.tv_nsec;
    printf("ns=%llu bytes=%llu\n", (unsigned long long)ns, (unsigned long long)(frames * size));
    return 0;
}
