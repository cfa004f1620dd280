// Sample C++ target: one local of each standard library type periscope shows as gdb's
// libstdc++ printers do. The values depend on the round so a test can check them against
// gdb's own printing at the same line: see crates/periscope/tests/cpp_std.rs.
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <forward_list>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

struct Point {
    int x;
    int y;
};

// A list and a forward_list whose links loop, as corrupt memory could: shown truncated, never
// walked forever. Their headers are laid out as libstdc++'s (`_M_next`, `_M_prev`, `_M_size`).
struct LoopNode {
    LoopNode *next;
    LoopNode *prev;
    long value;
};
static LoopNode loop_node = {&loop_node, &loop_node, 7};
static void *list_words[3] = {&loop_node, &loop_node, (void *)(1ul << 40)};
static void *flist_words[1] = {&loop_node};
std::list<int> int_list{1, 2, 3}; // so that the program's DWARF describes std::list<int>
std::list<int> *bad_list = reinterpret_cast<std::list<int> *>(list_words);
std::forward_list<int> *bad_flist = reinterpret_cast<std::forward_list<int> *>(flist_words);

// Keeps a local alive and in memory at -O2: the compiler must assume the asm reads it.
template <typename T> static inline void keep(T &x) { asm volatile("" ::"r"(&x) : "memory"); }

__attribute__((noinline)) void probe_here(int round)
{
    std::string key = "b";
    std::map<std::string, int> m{{"a", round}, {"b", round * 2}, {"c", round * 3}};
    std::multimap<int, std::string> mm{{1, "one"}, {1, "uno"}, {2, "two"}};
    std::set<int> s{round, round + 5, round + 2};
    std::multiset<int> ms{3, 1, 3};
    std::unordered_map<std::string, int> um{{"x", round}, {"y", round + 1}};
    std::unordered_map<int, std::string> ui{{7, "seven"}, {round + 100, "round"}};
    std::unordered_set<int> us{round, 40};
    std::unordered_multimap<int, int> umm{{1, 10}, {1, 11}};
    std::deque<int> dq;
    for (int i = 0; i < 300; i++)
        dq.push_back(round + i);
    dq.push_front(-round);
    std::list<std::string> l{"first", "second", "third"};
    std::forward_list<int> fl{round, round + 1, round + 2, round + 3};
    auto sp = std::make_shared<Point>(Point{round, -round});
    std::shared_ptr<Point> sp2 = sp;
    std::weak_ptr<Point> wp = sp;
    std::shared_ptr<int> empty_sp;
    auto up = std::make_unique<std::string>("owned-" + std::to_string(round));
    std::optional<int> opt = round;
    std::optional<std::string> none;
    std::variant<int, std::string, double> var = std::string("alt-") + std::to_string(round);
    std::variant<int, std::string, double> var_d = round * 0.5;
    std::string_view sv = std::string_view("view-of-this", 7);
    std::array<int, 4> arr{round, round + 1, round + 2, round + 3};
    std::vector<bool> vb{true, false, true, true, false, false, true, true, false, true};
    std::pair<int, std::string> pr{round, "pair"};
    std::tuple<int, double, std::string> tup{round, 2.5, "tuple"};
    std::chrono::milliseconds ms_d(250 + round);
    std::chrono::seconds secs(round);
    std::vector<int> v{round, round * 10, round * 100};
    keep(key), keep(m), keep(mm), keep(s), keep(ms), keep(um), keep(ui), keep(us), keep(umm);
    keep(dq), keep(l), keep(fl), keep(sp), keep(sp2), keep(wp), keep(empty_sp), keep(up);
    keep(opt), keep(none), keep(var), keep(var_d), keep(sv), keep(arr), keep(vb), keep(pr);
    keep(tup), keep(ms_d), keep(secs), keep(v);
    std::printf("round %d\n", round); // PROBE: stdlib-all
    std::fflush(stdout);
    keep(key), keep(m), keep(mm), keep(s), keep(ms), keep(um), keep(ui), keep(us), keep(umm);
    keep(dq), keep(l), keep(fl), keep(sp), keep(sp2), keep(wp), keep(empty_sp), keep(up);
    keep(opt), keep(none), keep(var), keep(var_d), keep(sv), keep(arr), keep(vb), keep(pr);
    keep(tup), keep(ms_d), keep(secs), keep(v);
}

int main(int argc, char **argv)
{
    // With an argument: that many rounds, then exit (for gdb); else forever.
    int rounds = argc > 1 ? std::atoi(argv[1]) : -1;
    std::printf("stdlib ready pid=%d\n", getpid());
    std::fflush(stdout);
    for (int round = 1; rounds < 0 || round <= rounds; round++) {
        probe_here(round);
        usleep(2000);
    }
}
