/* A host that loads a plugin later: `open` on stdin dlopen()s the library named by argv[1],
 * `close` dlclose()s it, `quit` exits. While the plugin is loaded, every 20 ms it calls its
 * plugin_compute(i) and prints what it computed ("computed I RESULT"). Probes on the plugin,
 * given before it is loaded, are pending until `open`. */
#include <dlfcn.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: dlhost PLUGIN.so\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    void *lib = NULL;
    int (*compute)(int) = NULL;
    char buf[256];
    for (int i = 0;; i++) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        /* read(2), not stdio: commands sent together are all seen (a FILE would keep the
         * second in its buffer, where poll does not see it). */
        ssize_t got = poll(&p, 1, 20) > 0 ? read(0, buf, sizeof buf - 1) : -1;
        if (got == 0)
            return 0;
        if (got > 0) {
            buf[got] = 0;
            for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
                if (strcmp(line, "quit") == 0)
                    return 0;
                if (strcmp(line, "open") == 0 && !lib) {
                    lib = dlopen(argv[1], RTLD_NOW);
                    if (!lib) {
                        printf("dlopen failed: %s\n", dlerror());
                        continue;
                    }
                    compute = (int (*)(int))dlsym(lib, "plugin_compute");
                    printf("opened\n");
                } else if (strcmp(line, "close") == 0 && lib) {
                    compute = NULL;
                    dlclose(lib);
                    lib = NULL;
                    printf("closed\n");
                }
            }
        }
        if (compute)
            printf("computed %d %d\n", i, compute(i));
    }
}
