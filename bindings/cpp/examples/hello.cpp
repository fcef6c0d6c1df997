// The astrid demo in C++: start a runtime, load the `hello` capsule
// directory, call its `greet` action, print the result and the capsule's
// log lines. Mirrors examples/c/hello.c.
//
//   usage: hello [CAPSULE_DIR] [NAME]   (default: build/capsules/hello, "C++")
#include "astrid.hpp"

#include <iostream>
#include <string>

int main(int argc, char **argv) {
    const std::string dir = argc > 1 ? argv[1] : "build/capsules/hello";
    const std::string name = argc > 2 ? argv[2] : "C++";
    try {
        // The Runtime constructor checks the library's ABI against this header's.
        astrid::Runtime rt;
        std::cout << "astrid " << astrid::library_version() << " (ABI " << astrid::library_abi_version() << ")\n";

        // Runs on the thread executing the guest; the views live during the call only.
        rt.set_log_callback([](const astrid::LogRecord &rec) {
            std::cout << "  [" << astrid::to_string(rec.level) << "] " << rec.capsule << ": " << rec.message
                      << "\n";
        });

        astrid::Capsule capsule = rt.load(dir, astrid::LoadOptions().principal("alice"));
        std::cout << "loaded capsule " << capsule.name() << " (id " << capsule.id() << ")\n";

        const std::string payload = R"({"name":")" + name + R"("})";
        std::cout << "calling greet with " << payload << "\n";

        astrid::Result result = capsule.call("greet", payload);
        std::cout << "result: action=" << result.action();
        if (result.has_data()) std::cout << " data=" << result.data();
        std::cout << "\n";
    } catch (const astrid::Error &e) { // every library failure, with its code
        std::cerr << "failed (" << e.status() << "): " << e.what() << "\n";
        return 1;
    }
    return 0; // capsule, then runtime, released by their destructors
}
