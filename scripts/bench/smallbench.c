/* smallbench: two micro-workloads, one line of key=value output.
 *   smallbench create DIR N      -> create(O_EXCL)+write 4 KiB+close N files in DIR
 *   smallbench fsync  FILE N     -> N x (pwrite 4 KiB at offset 0 + fdatasync), latency p50/p90/p99
 * Prints wall time, rate, and this process's CPU (getrusage).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_self(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s create DIR N | fsync FILE N\n", argv[0]);
		return 2;
	}
	int n = atoi(argv[3]);
	char buf[4096];
	memset(buf, 'x', sizeof(buf));

	if (strcmp(argv[1], "create") == 0) {
		char path[4096];
		double c0 = cpu_self(), t0 = now();
		for (int i = 0; i < n; i++) {
			snprintf(path, sizeof(path), "%s/f%06d", argv[2], i);
			int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
			if (fd < 0) { perror(path); return 1; }
			if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf)) { perror("write"); return 1; }
			if (close(fd) != 0) { perror("close"); return 1; }
		}
		double t1 = now(), c1 = cpu_self();
		printf("op=create n=%d wall_s=%.4f files_per_s=%.1f client_cpu_us_per_file=%.2f\n",
		       n, t1 - t0, n / (t1 - t0), (c1 - c0) * 1e6 / n);
		return 0;
	}
	if (strcmp(argv[1], "fsync") == 0) {
		int fd = open(argv[2], O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
		if (fd < 0) { perror(argv[2]); return 1; }
		/* warm-up: allocate the block */
		if (pwrite(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf) || fdatasync(fd)) { perror("warm"); return 1; }
		double *lat = malloc(sizeof(double) * n);
		double c0 = cpu_self(), t0 = now();
		for (int i = 0; i < n; i++) {
			double a = now();
			buf[0] = 'a' + (i % 26);
			if (pwrite(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf)) { perror("pwrite"); return 1; }
			if (fdatasync(fd)) { perror("fdatasync"); return 1; }
			lat[i] = now() - a;
		}
		double t1 = now(), c1 = cpu_self();
		close(fd);
		qsort(lat, n, sizeof(double), cmpd);
		printf("op=fsync n=%d wall_s=%.4f ops_per_s=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f client_cpu_us_per_op=%.2f\n",
		       n, t1 - t0, n / (t1 - t0), lat[n / 2] * 1e6, lat[n * 9 / 10] * 1e6,
		       lat[n * 99 / 100] * 1e6, (c1 - c0) * 1e6 / n);
		return 0;
	}
	return 2;
}
