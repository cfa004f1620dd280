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
    char line[64];
    for (int i = 0;; i++) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        if (poll(&p, 1, 20) > 0) {
            if (!fgets(line, sizeof line, stdin) || strncmp(line, "quit", 4) == 0)
                return 0;
            if (strncmp(line, "open", 4) == 0 && !lib) {
                lib = dlopen(argv[1], RTLD_NOW);
                if (!lib) {
                    printf("dlopen failed: %s\n", dlerror());
                    continue;
                }
                compute = (int (*)(int))dlsym(lib, "plugin_compute");
                printf("opened\n");
            } else if (strncmp(line, "close", 5) == 0 && lib) {
                compute = NULL;
                dlclose(lib);
                lib = NULL;
                printf("closed\n");
            }
        }
        if (compute)
            printf("computed %d %d\n", i, compute(i));
    }
}
