// The header must compile as C++ (extern "C", no C-only constructs) and link.
#include "astrid.h"

#include <cstdio>

int main() {
    astrid_runtime_config_t cfg;
    astrid_runtime_config_init(&cfg, nullptr);
    astrid_runtime_t *rt = nullptr;
    astrid_error_t *err = nullptr;
    if (astrid_runtime_new(&cfg, &rt, &err) != ASTRID_OK) {
        std::printf("0 passed, 1 failed\n");
        return 1;
    }
    astrid_runtime_free(rt);
    std::printf("1 passed, 0 failed\n");
    return 0;
}
