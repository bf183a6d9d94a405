/*
 * How long a bursty thread waits for its CPU when woken while another
 * thread keeps that CPU busy: the pattern of a VMM's device worker (woken
 * by a doorbell or by frames arriving, runs a burst, sleeps) beside a vCPU
 * whose guest polls and never halts (docs/networks.md, "What limits it").
 *
 *   wakeup_stall [--spin] [--nice N] [--burst US] [--seconds S]
 *
 * The worker runs on CPU 1 at nice N (default 0): woken through an eventfd
 * by the main thread on CPU 0 between 20 and 200 us after it finished its
 * last burst, it runs BURST us (default 50) and waits again. The busy
 * thread is either this program's own (--spin: a user-mode loop on CPU 1)
 * or whatever the caller runs there (a VMM pinned to CPU 1 with a polling
 * guest). Prints the wake-up latencies (p50, p90, p99, max) and how many
 * waits exceeded 500 us, with the time they took in all.
 *
 * On the project's host (Linux 6.18, EEVDF, HZ=250) about 2 % of the
 * wake-ups wait 1 to 5 ms, until the next tick, whichever the busy thread
 * is: a worker woken soon after a burst has run ahead of the busy thread
 * (negative lag), is not eligible, and nothing looks again until the tick.
 * At nice -10 about a tenth as many wait.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_WAKEUPS 1000000

static int efd;
static volatile int stop, pending;
static volatile double sent_at;
static int nice_value, burst_us = 50;
static double *latency;
static int count;

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof set, &set) != 0) {
		perror("sched_setaffinity");
		exit(1);
	}
}

static void busy_for(double us)
{
	double start = now_us();
	while (now_us() - start < us)
		;
}

static void *spinner(void *arg)
{
	(void)arg;
	pin(1);
	while (!stop)
		__asm__ volatile("pause");
	return NULL;
}

static void *worker(void *arg)
{
	uint64_t v;
	(void)arg;
	pin(1);
	if (setpriority(PRIO_PROCESS, 0, nice_value) != 0) {
		perror("setpriority");
		exit(1);
	}
	while (!stop) {
		if (read(efd, &v, sizeof v) != sizeof v)
			continue;
		if (count < MAX_WAKEUPS)
			latency[count++] = now_us() - sent_at;
		pending = 0;
		busy_for(burst_us);
	}
	return NULL;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int spin = 0, seconds = 3, stalls = 0;
	double stalled_ms = 0, end;
	uint64_t one = 1;
	pthread_t busy, work;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--spin"))
			spin = 1;
		else if (!strcmp(argv[i], "--nice") && i + 1 < argc)
			nice_value = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--burst") && i + 1 < argc)
			burst_us = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: %s [--spin] [--nice N] [--burst US] [--seconds S]\n", argv[0]);
			return 2;
		}
	}
	latency = calloc(MAX_WAKEUPS, sizeof *latency);
	efd = eventfd(0, 0);
	if (!latency || efd < 0) {
		perror("setup");
		return 1;
	}
	if (spin)
		pthread_create(&busy, NULL, spinner, NULL);
	pthread_create(&work, NULL, worker, NULL);
	pin(0);
	usleep(100000);
	srand(1);
	end = now_us() + seconds * 1e6;
	while (now_us() < end) {
		while (pending && now_us() < end)
			;
		busy_for(20 + rand() % 180);
		pending = 1;
		sent_at = now_us();
		if (write(efd, &one, sizeof one) != sizeof one)
			break;
	}
	stop = 1;
	if (write(efd, &one, sizeof one) != sizeof one)
		return 1;
	pthread_join(work, NULL);
	if (spin)
		pthread_join(busy, NULL);
	if (count == 0)
		return 1;
	qsort(latency, count, sizeof *latency, by_value);
	for (int i = 0; i < count; i++)
		if (latency[i] > 500) {
			stalls++;
			stalled_ms += latency[i] / 1000;
		}
	printf("nice %d burst %d us: %d wake-ups, p50 %.1f p90 %.1f p99 %.1f max %.0f us; "
	       "over 500 us: %d (%.0f ms in all)\n",
	       nice_value, burst_us, count, latency[count / 2], latency[count * 9 / 10],
	       latency[count * 99 / 100], latency[count - 1], stalls, stalled_ms);
	return 0;
}
