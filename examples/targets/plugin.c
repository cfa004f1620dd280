/* The plugin dlhost.c loads: built as a shared library with default flags
 * (gcc -g -shared -fPIC). */

int plugin_compute(int n) {
    int x = n * 3 + 1;
    int total = x + 7; /* PROBE: plugin-total */
    return total;
}
