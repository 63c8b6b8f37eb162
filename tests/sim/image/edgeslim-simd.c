/* edgeslim simulated daemon: holds a configured amount of private, touched memory and stays up.
 * Usage: edgeslim-simd <MiB>   MiB at full size; multiplied by the number in /etc/edgeslim-sim/scale (default 1),
 * which the fleet tool sets per container (EDGESLIM_SIM_SCALE) so tests run small without rebuilding the image.
 * Stands in for NVIDIA/desktop daemons that do not exist on Debian, so that stopping a unit frees real memory
 * that lxcfs's MemAvailable and the unit's cgroup PSS both see. Static, tiny: PSS ~= the requested size. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s <MiB>\n", argv[0]); return 2; }
    char *end;
    double mib = strtod(argv[1], &end);
    if (*end != '\0' || mib < 0 || mib > 1 << 20) { fprintf(stderr, "bad size: %s\n", argv[1]); return 2; }
    FILE *f = fopen("/etc/edgeslim-sim/scale", "r");
    double scale = 1.0;
    if (f) {
        if (fscanf(f, "%lf", &scale) != 1 || scale < 0 || scale > 16) scale = 1.0;
        fclose(f);
    }
    mib *= scale;
    size_t bytes = (size_t)(mib * 1024.0 * 1024.0);
    if (bytes > 0) {
        char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) { perror("mmap"); return 1; }
        /* Write every page with a non-zero pattern so KSM/zero-page tricks cannot share it. */
        long page = sysconf(_SC_PAGESIZE);
        for (size_t off = 0; off < bytes; off += (size_t)page) p[off] = (char)(1 + (off / page) % 251);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    printf("holding %.1f MiB\n", mib);
    fflush(stdout);
    while (!stop) pause();
    return 0;
}
