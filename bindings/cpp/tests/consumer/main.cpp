// Built against an installed astrid package by test.sh.
#include <astrid.hpp>

#include <iostream>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    try {
        astrid::Runtime rt;
        astrid::Capsule hello = rt.load(argv[1]);
        astrid::Result r = hello.call("greet", R"({"name":"consumer"})");
        std::cout << "consumer: " << r.action() << " " << r.data() << "\n";
    } catch (const astrid::Error &e) {
        std::cerr << "consumer failed: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
