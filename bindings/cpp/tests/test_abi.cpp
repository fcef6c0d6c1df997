// The ABI check refusing a mismatched library. This executable is linked
// against fake_abi (a library whose astrid_abi_version() says 999) ahead of
// the real libastrid, so astrid::Runtime meets a library of another ABI.
#include "astrid.hpp"

#include <gtest/gtest.h>

extern "C" int fake_abi_runtime_new_calls(void);

TEST(Abi, TheLibraryInUseReportsAnotherAbi) {
    // Sanity: the interposition is in effect, otherwise this test proves nothing.
    EXPECT_EQ(astrid_abi_version(), 999u);
    EXPECT_EQ(astrid::library_abi_version(), 999u);
}

TEST(Abi, RuntimeRefusesAMismatchedLibrary) {
    try {
        astrid::Runtime rt;
        FAIL() << "a runtime started on a library of ABI 999";
    } catch (const astrid::AbiError &e) {
        EXPECT_EQ(e.library_version(), 999u);
        EXPECT_EQ(e.header_version(), static_cast<uint32_t>(ASTRID_ABI_VERSION));
        EXPECT_EQ(e.code(), astrid::Code::Internal);
        EXPECT_NE(std::string(e.what()).find("ABI 999"), std::string::npos) << e.what();
    }
    // Refused before anything else of the library was called.
    EXPECT_EQ(fake_abi_runtime_new_calls(), 0);
}

TEST(Abi, AbiErrorIsAnAstridError) {
    EXPECT_THROW(astrid::Runtime(astrid::RuntimeConfig().timeout(std::chrono::milliseconds(100))), astrid::Error);
    EXPECT_THROW(astrid::check_abi(999), std::runtime_error);
    EXPECT_EQ(fake_abi_runtime_new_calls(), 0);
}
