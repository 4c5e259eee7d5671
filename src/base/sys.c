#define _GNU_SOURCE
#include "base/sys.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

double sys_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double sys_wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void pb_time_rfc3339(double unix_s, char *buf, size_t size)
{
    time_t t = (time_t)unix_s;
    int ms = (int)((unix_s - (double)t) * 1000);
    struct tm tm;
    char day[24];
    if (!gmtime_r(&t, &tm) || !strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm))
        snprintf(day, sizeof day, "1970-01-01T00:00:00");
    snprintf(buf, size, "%s.%03dZ", day, ms < 0 ? 0 : ms > 999 ? 999 : ms);
}

uint64_t pb_peak_rss(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)ru.ru_maxrss * 1024u; /* Linux reports KiB */
}

uint64_t sys_mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
            break;
    fclose(f);
    return (uint64_t)kib * 1024u;
}

void *sys_alloc_large(size_t n)
{
    if (n == 0)
        return NULL;
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, n, MADV_HUGEPAGE); /* a hint: no huge pages is fine too */
#endif
    return p;
}

void sys_free_large(void *p, size_t n)
{
    if (p)
        munmap(p, n);
}

/* The inodes of the sockets listening on TCP port (IPv4 and IPv6). */
static int listening_inodes(int port, unsigned long *inodes, int max)
{
    static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    int n = 0;
    for (int f = 0; f < 2; f++) {
        FILE *fp = fopen(files[f], "r");
        if (!fp)
            continue;
        char line[512];
        if (!fgets(line, sizeof line, fp)) { /* the column titles */
            fclose(fp);
            continue;
        }
        while (n < max && fgets(line, sizeof line, fp)) {
            char local[80];
            unsigned st;
            unsigned long inode;
            /* sl local rem st tx:rx tr:when retr uid timeout inode */
            if (sscanf(line, " %*s %79s %*s %x %*s %*s %*s %*s %*s %lu", local, &st, &inode) != 3)
                continue;
            const char *colon = strrchr(local, ':');
            if (st == 0x0A && colon && strtol(colon + 1, NULL, 16) == port && inode)
                inodes[n++] = inode;
        }
        fclose(fp);
    }
    return n;
}

bool sys_port_owner(int port, int *pid, char *comm, size_t comm_size)
{
    unsigned long inodes[8];
    int n = listening_inodes(port, inodes, 8);
    if (n == 0)
        return false;
    DIR *proc = opendir("/proc");
    if (!proc)
        return false;
    struct dirent *pe;
    bool found = false;
    while (!found && (pe = readdir(proc))) {
        if (!isdigit((unsigned char)pe->d_name[0]))
            continue;
        char dir[64];
        snprintf(dir, sizeof dir, "/proc/%.20s/fd", pe->d_name);
        DIR *fds = opendir(dir); /* another user's: not readable unless root */
        if (!fds)
            continue;
        struct dirent *fe;
        while (!found && (fe = readdir(fds))) {
            char link[128], target[64];
            snprintf(link, sizeof link, "%s/%.32s", dir, fe->d_name);
            ssize_t k = readlink(link, target, sizeof target - 1);
            unsigned long ino;
            if (k <= 0)
                continue;
            target[k] = 0;
            if (sscanf(target, "socket:[%lu]", &ino) != 1)
                continue;
            for (int i = 0; i < n && !found; i++)
                found = ino == inodes[i];
        }
        closedir(fds);
        if (found) {
            *pid = atoi(pe->d_name);
            comm[0] = 0;
            char path[64];
            snprintf(path, sizeof path, "/proc/%.20s/comm", pe->d_name);
            FILE *fp = fopen(path, "r");
            if (fp) {
                if (fgets(comm, (int)comm_size, fp))
                    comm[strcspn(comm, "\n")] = 0;
                fclose(fp);
            }
        }
    }
    closedir(proc);
    return found;
}
