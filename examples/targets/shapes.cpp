// Sample C++ target: std::string, std::vector, references, a function pointer and smart
// pointers. Relations checked by tests: name == "shape-<round>", sides has round % 5 + 1 items
// all equal to round, area == round * 1.5, *id == round, *label == "label-<round>", child and
// parent are null.
#include <cstdio>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

struct Shape {
    std::string name;
    std::vector<int> sides;
    double area;
    double (*scale)(double);
    std::unique_ptr<int> id;
    std::shared_ptr<std::string> label;
    std::unique_ptr<Shape> child;
    const Shape *parent = nullptr;
};

static double twice(double x) { return 2 * x; }

__attribute__((noinline)) double measure(const Shape &s, int round)
{
    double a = s.area * round; // PROBE: cpp-measure
    return s.scale(a) + s.sides.size();
}

int main()
{
    std::printf("shapes ready pid=%d\n", getpid());
    std::fflush(stdout);
    for (int round = 1;; round++) {
        Shape s{"shape-" + std::to_string(round), std::vector<int>(round % 5 + 1, round), round * 1.5, twice,
                std::make_unique<int>(round), std::make_shared<std::string>("label-" + std::to_string(round))};
        measure(s, round);
        usleep(2000);
    }
}
